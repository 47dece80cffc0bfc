"""Triton Python model `qpm`: qpm.onnx (coefficients -> tables + quantized coefficients) on onnxruntime (CPU).

Kept thin on purpose: the logic is `hyperthumbnail.serving.backends.OnnxModel`, shared with the
in-process pipeline.
"""
from hyperthumbnail.serving.backends import OnnxModel as TritonPythonModel  # noqa: F401
