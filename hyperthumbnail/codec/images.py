"""Image input/output with Pillow, and the padding/cropping around the model's block grid.

Every loaded image becomes an HxWx3 uint8 RGB numpy array, whatever the file held.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..interface import DEFAULT_MAX_PIXELS

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "ImageError",
    "check_size",
    "bicubic_downscale",
    "bicubic_resize",
    "crop_to",
    "list_images",
    "load_image",
    "pad_to_multiple",
    "save_image",
]


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif"}
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


class ImageError(ValueError):
    """An image cannot be read, written or is of an unusable size."""


def check_size(width: int, height: int, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    """Reject empty images and images larger than `max_pixels` (None: no limit)."""
    if width < 1 or height < 1:
        raise ImageError(f"image has no pixels ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(f"image is {width}x{height} = {width * height} pixels, more than the "
                         f"limit of {max_pixels} pixels")


def _sixteen_bit_to_rgb(im: Image.Image) -> np.ndarray:
    """16-bit greyscale (PNG 'I;16*', or 'I' holding 16-bit data) scaled, not clipped, to 8 bits."""
    values = np.clip(np.asarray(im).astype(np.int64), 0, 65535)
    grey = ((values * 255 + 32767) // 65535).astype(np.uint8)  # round(v * 255 / 65535)
    return np.repeat(grey[:, :, None], 3, axis=2)


def _has_transparency(im: Image.Image) -> bool:
    return im.mode in _ALPHA_MODES or (im.mode in ("P", "L", "RGB") and "transparency" in im.info)


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb(im)
    if _has_transparency(im):
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, im.convert("RGBA")).convert("RGB"))
    return np.asarray(im.convert("RGB"))


def load_image(source: str | Path | bytes,
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file (path or encoded bytes) as HxWx3 uint8 RGB.

    EXIF orientation is applied. Transparent images (RGBA, LA, PA, palette or L/RGB with a
    transparency key) are composited over white, since the codec has no alpha channel.
    16-bit greyscale is scaled to 8 bits. CMYK and YCbCr go through Pillow's RGB conversion.
    The size is checked against `max_pixels` before any pixel data is decoded.
    """
    name = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    except OSError as exc:
        raise ImageError(f"cannot open image {name}: {exc.strerror or exc}") from exc
    with fp:
        try:
            with Image.open(fp) as im:
                check_size(im.width, im.height, max_pixels)
                im = ImageOps.exif_transpose(im)
                rgb = _to_rgb(im)
        except ImageError as exc:  # the size check: say which file
            raise ImageError(f"{name}: {exc}") from exc
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise ImageError(f"cannot read image {name}: {exc}") from exc
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def save_image(arr: np.ndarray, path: str | Path) -> None:
    """Write an HxWx3 uint8 RGB array; the format follows the file extension (e.g. .png)."""
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ImageError(f"expected an HxWx3 uint8 array, got {arr.dtype} {arr.shape}")
    check_size(arr.shape[1], arr.shape[0], max_pixels=None)
    try:
        Image.fromarray(arr).save(path)
    except (OSError, ValueError) as exc:
        raise ImageError(f"cannot write image {path}: {exc}") from exc


def pad_to_multiple(arr: np.ndarray, multiple: int) -> np.ndarray:
    """Edge-replicate rows at the bottom and columns at the right up to multiples of `multiple`."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    height, width = arr.shape[:2]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h == 0 and pad_w == 0:
        return arr
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (arr.ndim - 2)
    return np.pad(arr, widths, mode="edge")


def crop_to(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    """Keep the top-left `width` x `height` pixels (undoes `pad_to_multiple`)."""
    if not (1 <= height <= arr.shape[0] and 1 <= width <= arr.shape[1]):
        raise ValueError(f"cannot crop a {arr.shape[1]}x{arr.shape[0]} image to {width}x{height}")
    return arr[:height, :width]


def list_images(folder: str | Path) -> list[Path]:
    """The image files of a folder (by suffix), sorted; FileNotFoundError if there are none."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return files


def bicubic_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HxWx3 uint8 -> Pillow bicubic resize to size = (width, height) (anti-aliased when shrinking)."""
    return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))


def bicubic_downscale(image: np.ndarray, scale: int) -> np.ndarray:
    """Pillow bicubic by exactly 1/scale of the image edge-padded to a multiple of `scale`:
    ceil(W/scale) x ceil(H/scale) pixels, thumbnail pixel i covering HR pixels scale*i.. as in
    our thumbnails (a plain resize to that size would stretch the grid when W % scale != 0).
    The reference every thumbnail PSNR is measured against."""
    padded = pad_to_multiple(image, scale)
    return bicubic_resize(padded, (padded.shape[1] // scale, padded.shape[0] // scale))
