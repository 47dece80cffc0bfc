"""The codecs `bench rd` compares. Each turns an HR image into the .jpg it would store and the HR
image it rebuilds from that file; metrics are computed by the caller on both.

* `hyperthumbnail`: our pipeline, the same object and calls as `hyperthumbnail encode`/`decode`.
* `bicubic_jpeg` / `bicubic_jpeg_420`: Pillow bicubic down by `scale` (on the thumbnail grid, see
  `jpeg.bicubic_downscale`), Pillow JPEG (4:4:4 / 4:2:0) at the quality whose file size is closest
  to OUR file on the same image, Pillow bicubic up by `scale`, cropped.
* `sr_baseline`: bicubic thumbnail, JPEG at one fixed quality, our decoder trained for it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..codec.images import bicubic_downscale, bicubic_resize, crop_to
from ..metrics import bpp as bits_per_pixel
from .jpeg import closest_quality, decode_jpeg, encode_jpeg

__all__ = ["NEEDS_OUR_FILE", "Coded", "bicubic_jpeg_codec", "hyperthumbnail_codec", "sr_baseline_codec"]

NEEDS_OUR_FILE = ("hyperthumbnail", "bicubic_jpeg", "bicubic_jpeg_420")  # to decode it / to match its size


@dataclass
class Coded:
    jpeg: bytes              # the stored file (bpp counts all of it)
    recon: np.ndarray        # HxWx3 uint8 rebuilt from it
    quality: int | None = None


# (image, our .jpg for that image) -> Coded
Codec = Callable[[np.ndarray, "bytes | None"], Coded]


def hyperthumbnail_codec(pipeline) -> Codec:
    """Decodes our file, which the caller made with `pipeline.encode` (the bitrate target of the others)."""
    def run(image: np.ndarray, ours: bytes | None) -> Coded:
        return Coded(ours, pipeline.decode(ours))
    return run


def bicubic_jpeg_codec(scale: int, subsampling: str) -> Codec:
    def run(image: np.ndarray, ours: bytes | None) -> Coded:
        if ours is None:
            raise ValueError("bicubic JPEG baselines match the bitrate of our file, which is missing")
        h, w = image.shape[:2]
        lr = bicubic_downscale(image, scale)
        files: dict[int, bytes] = {}

        def bpp_at(quality: int) -> float:
            if quality not in files:
                files[quality] = encode_jpeg(lr, quality, subsampling)
            return bits_per_pixel(len(files[quality]), w, h)

        quality = closest_quality(bpp_at, bits_per_pixel(len(ours), w, h))
        jpeg = files[quality]
        up = bicubic_resize(decode_jpeg(jpeg), (lr.shape[1] * scale, lr.shape[0] * scale))
        return Coded(jpeg, crop_to(up, w, h), quality)
    return run


def sr_baseline_codec(baseline) -> Codec:
    def run(image: np.ndarray, ours: bytes | None) -> Coded:
        h, w = image.shape[:2]
        jpeg = baseline.thumbnail(image)
        return Coded(jpeg, baseline.reconstruct(jpeg, (w, h)), baseline.config.quality)
    return run
