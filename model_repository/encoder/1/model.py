"""Triton Python model `encoder` (CPU target): the uint8 photo -> DCT coefficients, HR size, table scale.

Kept thin on purpose: the logic is `hyperthumbnail.serving.backends.EncoderModel`, shared with the
in-process pipeline through `hyperthumbnail.runtime.tiling`.
"""
from hyperthumbnail.serving.backends import EncoderModel as TritonPythonModel  # noqa: F401
