"""Triton Python model `postprocess`: decoder output (uint8 HWC, padded) -> cropped to the HR size.

Kept thin on purpose: the logic is `hyperthumbnail.serving.backends.PostprocessModel`, shared with the
in-process pipeline.
"""
from hyperthumbnail.serving.backends import PostprocessModel as TritonPythonModel  # noqa: F401
