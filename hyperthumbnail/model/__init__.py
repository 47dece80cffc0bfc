from .hyperthumbnail import DECODER_BODY_SHAPE, HyperThumbnail, ModelConfig

__all__ = ["DECODER_BODY_SHAPE", "HyperThumbnail", "ModelConfig"]
