"""Triton Python model `encoder`: encoder.onnx (HR image -> LR DCT coefficients) on onnxruntime (CPU).

Kept thin on purpose: the logic is `hyperthumbnail.serving.backends.OnnxModel`, shared with the
in-process pipeline.
"""
from hyperthumbnail.serving.backends import OnnxModel as TritonPythonModel  # noqa: F401
