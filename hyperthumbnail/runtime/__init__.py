"""Running exported graphs: one runner per graph (`onnx.OnnxRunner`, `openvino.OpenVinoRunner`),
tiling with receptive-field margins (`tiling`), and a weights file's exported graphs: their
on-disk cache and the set of runners the pipeline and the server share (`graphs`). Used alike
by the in-process pipeline and by the Triton Python-backend models, so both produce the same bytes.

Submodules are imported on demand (onnxruntime and the exporter are heavy).
"""
