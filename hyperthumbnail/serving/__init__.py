"""Serving on Triton: the embedded tritonserver launcher (`tritonserver`), the model repository
builder (`repository`), the steps shared by the Python backends and the in-process pipeline
(`steps`, `onnx_runner`) and the Python-backend models themselves (`backends`, importable only
inside a Triton Python-backend stub).

Submodules are imported on demand; `import hyperthumbnail.serving` itself stays cheap.
"""
