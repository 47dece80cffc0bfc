# GPU image: NVIDIA's Triton container (onnxruntime + TensorRT backends; 24.10 = tritonserver 2.51,
# the embedded server's version) + what our Python-backend steps (JPEG coding, pixel pre/post) need.
# No torch and no onnxruntime in Python: the neural models run in Triton's own backends
# (tritonserver --model-config-name=gpu). Build from the repository root: make image
FROM nvcr.io/nvidia/tritonserver:24.10-py3
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
WORKDIR /src
COPY pyproject.toml README.md ./
COPY hyperthumbnail ./hyperthumbnail
# The container's python3 is the one its Python backend stub embeds.
RUN pip install numpy==1.26.4 pillow==11.0.0 jpeglib==1.0.2 \
 && pip install --no-deps . \
 && python3 -c "import hyperthumbnail.codec, jpeglib, PIL" \
 && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin hyperthumbnail
WORKDIR /
USER 10001:10001
EXPOSE 8000 8001 8002
CMD ["/opt/tritonserver/bin/tritonserver", "--model-repository=/models", "--model-config-name=gpu"]
