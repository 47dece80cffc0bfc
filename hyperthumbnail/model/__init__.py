from .hyperthumbnail import HyperThumbnail, ModelConfig

__all__ = ["HyperThumbnail", "ModelConfig"]
