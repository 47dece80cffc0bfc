# CPU image: slim Python + the hyperthumbnail package + the tritonserver (2.51) from the nvidia-pytriton
# wheel, laid out like the NGC container (/opt/tritonserver/{bin,backends,caches}) so the Helm chart
# runs both images with the same command. No torch: the model repository (ONNX graphs) is built
# elsewhere (`hyperthumbnail serve --build-only`) and read from object storage or a volume.
# Build from the repository root: make image  (docker build -f docker/cpu.Dockerfile .)

# The official image is built with --enable-shared: the Python-backend stub links libpython3.11.so.
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The Python-backend models' dependencies (OpenVINO runs the neural steps by default, onnxruntime on
# request), at the versions the test suite runs.
RUN pip install numpy==1.26.4 pillow==13.0.0 jpeglib==1.0.2 onnxruntime==1.32.0 openvino==2026.4.1 \
    nvidia-pytriton==0.7.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY hyperthumbnail ./hyperthumbnail
RUN pip install --no-deps . \
 && python -c "from hyperthumbnail.serving.server_runtime import prepare_runtime; prepare_runtime('/opt/tritonserver')"

FROM python:3.11-slim-bookworm
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/tritonserver /opt/tritonserver
# What hyperthumbnail.serving.server_runtime.server_environment() sets (checked below): the
# interpreter's libpython and the wheel's vendored libraries; the venv first on PATH so the stub
# runs inside it.
ENV PATH=/opt/venv/bin:$PATH \
    LD_LIBRARY_PATH=/usr/local/lib:/opt/venv/lib/python3.11/site-packages/nvidia_pytriton.libs \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
RUN python -c "import os, sys; from hyperthumbnail.serving.server_runtime import server_environment as e; \
want = e(base={})['LD_LIBRARY_PATH']; have = os.environ['LD_LIBRARY_PATH']; \
sys.exit(0 if want == have else f'LD_LIBRARY_PATH drifted: image {have}, server_environment() {want}')" \
 && /opt/tritonserver/bin/tritonserver --help > /dev/null \
 && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin triton
USER 10001:10001
EXPOSE 8000 8001 8002
CMD ["/opt/tritonserver/bin/tritonserver", "--model-repository=/models"]
