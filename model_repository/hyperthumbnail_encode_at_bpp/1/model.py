"""Triton Python model `hyperthumbnail_encode_at_bpp`: HR photo + target bpp -> .jpg bytes (server-side rate control).

Kept thin on purpose: the logic is `hyperthumbnail.serving.backends.EncodeAtBppModel`.
"""
from hyperthumbnail.serving.backends import EncodeAtBppModel as TritonPythonModel  # noqa: F401
