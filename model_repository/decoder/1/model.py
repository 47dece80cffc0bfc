"""Triton Python model `decoder`: decoder_features.onnx + decoder_body.onnx (tiled) -> HR image uint8 (CPU).

Kept thin on purpose: the logic is `hyperthumbnail.serving.backends.DecoderModel`, shared with the
in-process pipeline (`hyperthumbnail.runtime.graphs`).
"""
from hyperthumbnail.serving.backends import DecoderModel as TritonPythonModel  # noqa: F401
