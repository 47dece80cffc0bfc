"""Triton Python model `postprocess`: decoder output (float CHW) -> uint8 HWC RGB cropped to the HR size.

Kept thin on purpose: the logic is `hyperthumbnail.serving.backends.PostprocessModel`, shared with the
in-process pipeline.
"""
from hyperthumbnail.serving.backends import PostprocessModel as TritonPythonModel  # noqa: F401
