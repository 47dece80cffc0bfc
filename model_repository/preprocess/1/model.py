"""Triton Python model `preprocess`: HR image (uint8 HWC RGB) -> float CHW padded to the block grid, HR size.

Kept thin on purpose: the logic is `hyperthumbnail.serving.backends.PreprocessModel`, shared with the
in-process pipeline.
"""
from hyperthumbnail.serving.backends import PreprocessModel as TritonPythonModel  # noqa: F401
