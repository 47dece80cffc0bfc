"""Running exported graphs: one runner per graph (`onnx.OnnxRunner`) and the on-disk cache of a
weights file's exported graphs (`graphs`). Used alike by the in-process pipeline and by the
Triton Python-backend models, so both produce the same bytes.

Submodules are imported on demand (onnxruntime and the exporter are heavy).
"""
