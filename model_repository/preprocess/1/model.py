"""Triton Python model `preprocess` (NGC targets): HR photo (uint8 HWC RGB) -> edge-padded to the block grid, HR size.

Kept thin on purpose: the logic is `hyperthumbnail.serving.backends.PreprocessModel`, shared with the
in-process pipeline through `hyperthumbnail.codec.steps.pad_photo`.
"""
from hyperthumbnail.serving.backends import PreprocessModel as TritonPythonModel  # noqa: F401
