"""Thumbnail .jpg files (DCT-level JPEG with a HyperThumbnail marker) and image I/O."""
from .images import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    check_size,
    crop_to,
    load_image,
    load_image_with_metadata,
    pad_to_multiple,
    save_image,
)
from .metadata import Metadata, MetadataError
from .thumbnail import (
    DEFAULT_MAX_HR_PIXELS,
    SUPPORTED_SCALES,
    Thumbnail,
    ThumbnailError,
    read_metadata,
    read_thumbnail,
    restore_marker,
    thumbnail_size,
    with_metadata,
    write_thumbnail,
)

__all__ = [
    "DEFAULT_MAX_HR_PIXELS",
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_SCALES",
    "ImageError",
    "Metadata",
    "MetadataError",
    "Thumbnail",
    "ThumbnailError",
    "check_size",
    "crop_to",
    "load_image",
    "load_image_with_metadata",
    "pad_to_multiple",
    "read_metadata",
    "read_thumbnail",
    "restore_marker",
    "save_image",
    "thumbnail_size",
    "with_metadata",
    "write_thumbnail",
]
