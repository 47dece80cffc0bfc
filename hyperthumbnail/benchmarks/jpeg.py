"""Plain JPEG tools for the baselines: Pillow (libjpeg) encoding at a
quality, the IJG tables a quality gives, a quality search that matches a target bitrate, and
reading a JPEG's quantized coefficients (jpeglib) in the project's tensor layout."""
from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable

import jpeglib
import numpy as np
from PIL import Image, ImageFile

from ..model.qpm import JPEG_CHROMA_Q50, JPEG_LUMA_Q50

# Pillow's `subsampling` values: 0 = 4:4:4, 2 = 4:2:0.
SUBSAMPLING = {"444": 0, "420": 2}


def encode_jpeg(image: np.ndarray, quality: int, subsampling: str = "444") -> bytes:
    """Baseline JPEG with the IJG tables at `quality` and optimized Huffman tables (as our thumbnails)."""
    buf = io.BytesIO()
    # With optimize=True libjpeg must write the whole file in one pass, and Pillow sizes that buffer
    # at 2 bytes/pixel, too small at quality ~100 4:4:4 ("Suspension not allowed here"): raise
    # Pillow's floor (MAXBLOCK) to the raw image size for this call.
    previous = ImageFile.MAXBLOCK
    ImageFile.MAXBLOCK = max(previous, 2 * image.size)
    try:
        Image.fromarray(image).save(buf, "JPEG", quality=int(quality), subsampling=SUBSAMPLING[subsampling],
                                    optimize=True)
    finally:
        ImageFile.MAXBLOCK = previous
    return buf.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    """What any viewer shows: Pillow's decode of the file, as HxWx3 uint8 RGB."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def ijg_tables(quality: int) -> np.ndarray:
    """(2, 64) uint8 natural-order tables libjpeg uses at `quality` (jpeg_set_quality, baseline)."""
    q = min(max(int(quality), 1), 100)
    factor = 5000 // q if q < 50 else 200 - 2 * q
    base = np.stack([JPEG_LUMA_Q50, JPEG_CHROMA_Q50]).astype(np.int64)
    return np.clip((base * factor + 50) // 100, 1, 255).astype(np.uint8)


def read_coefficients(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """A 4:4:4 baseline JPEG -> (quantized int16 (3, 64, h, w) natural order, tables uint8 (2, 64))."""
    with tempfile.TemporaryDirectory(prefix="hyperthumb-bench-") as tmp:
        path = os.path.join(tmp, "image.jpg")
        with open(path, "wb") as f:
            f.write(data)
        jpeg = jpeglib.read_dct(path)
        jpeg.load()
    planes = [jpeg.Y, jpeg.Cb, jpeg.Cr]
    if any(p is None or p.shape != planes[0].shape for p in planes):
        raise ValueError("expected a 3-component 4:4:4 JPEG")
    rows, cols = planes[0].shape[:2]
    coefficients = np.stack([p.reshape(rows, cols, 64).transpose(2, 0, 1) for p in planes])
    tables = np.stack([jpeg.qt[jpeg.quant_tbl_no[0]], jpeg.qt[jpeg.quant_tbl_no[1]]]).reshape(2, 64)
    return np.ascontiguousarray(coefficients, dtype=np.int16), tables.astype(np.uint8)


def closest_quality(bpp_at: Callable[[int], float], target: float, lo: int = 1, hi: int = 100) -> int:
    """The quality in [lo, hi] whose bitrate is closest to `target`, by binary search.

    Assumes the bitrate grows with quality (true of libjpeg up to rare one-step wobbles); `bpp_at`
    is called about log2(100) ~ 7 times, so callers should cache it.
    """
    if bpp_at(lo) >= target:
        return lo
    if bpp_at(hi) <= target:
        return hi
    while hi - lo > 1:  # invariant: bpp(lo) < target < bpp(hi)
        mid = (lo + hi) // 2
        if bpp_at(mid) <= target:
            lo = mid
        else:
            hi = mid
    return lo if target - bpp_at(lo) <= bpp_at(hi) - target else hi
