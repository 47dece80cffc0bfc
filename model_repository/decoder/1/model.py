"""Triton Python model `decoder`: decoder.onnx (quantized coefficients + tables -> HR image) on onnxruntime (CPU).

Kept thin on purpose: the logic is `hyperthumbnail.serving.backends.OnnxModel`, shared with the
in-process pipeline.
"""
from hyperthumbnail.serving.backends import OnnxModel as TritonPythonModel  # noqa: F401
