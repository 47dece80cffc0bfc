"""Triton Python model `jpeg_decode`: thumbnail .jpg bytes -> quantized DCT coefficients + tables + HR size.

Kept thin on purpose: the logic is `hyperthumbnail.serving.backends.JpegDecodeModel`, shared with the
in-process pipeline.
"""
from hyperthumbnail.serving.backends import JpegDecodeModel as TritonPythonModel  # noqa: F401
