"""Triton Python model `jpeg_encode`: quantized DCT coefficients + tables -> .jpg bytes (Huffman entropy coding).

Kept thin on purpose: the logic is `hyperthumbnail.serving.backends.JpegEncodeModel`, shared with the
in-process pipeline.
"""
from hyperthumbnail.serving.backends import JpegEncodeModel as TritonPythonModel  # noqa: F401
