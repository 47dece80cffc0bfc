"""Image input/output with Pillow, and the padding/cropping around the model's block grid.

Every loaded image becomes an HxWx3 uint8 RGB numpy array, whatever the file held; its ICC
profile, EXIF and XMP come along as `Metadata` (see metadata.py), rewritten for upright RGB.

Colour: an RGB image keeps its pixels and its profile (a Display P3 photo stays P3, tagged P3).
An image whose embedded profile is not RGB (CMYK, Lab, grey) is converted to sRGB with
LittleCMS through that profile and tagged sRGB; a Lab image without one goes through LittleCMS's
built-in D50 Lab profile. With `strip_metadata` every profiled image is converted to sRGB, so it
still looks right without a profile. Without a profile, Pillow's plain conversion is used (for
CMYK that is the naive 255-C formula; there is no CMYK default profile to do better).
"""
from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, PngImagePlugin

from ..interface import DEFAULT_MAX_PIXELS
from .metadata import Metadata, MetadataError, sanitize_exif, sanitize_xmp
from .png import png_rgb8

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "ImageError",
    "OUTPUT_LEVELS",
    "check_size",
    "bicubic_downscale",
    "bicubic_resize",
    "crop_to",
    "list_images",
    "load_image",
    "load_image_with_metadata",
    "output_format",
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


_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
# LittleCMS's sRGB, the tag of converted images. LittleCMS stamps its creation time into the
# header (bytes 24-35); a fixed date keeps encodes of the same photo byte-identical across runs.
_FIXED_DATE = bytes.fromhex("07d0 0001 0001 0000 0000 0000")  # 2000-01-01 00:00:00
SRGB_PROFILE = _SRGB.tobytes()[:24] + _FIXED_DATE + _SRGB.tobytes()[36:]
# ICC colour space signature -> the Pillow mode whose pixels that profile describes
_PROFILE_MODES = {"RGB ": ("RGB",), "CMYK": ("CMYK",), "GRAY": ("L",), "Lab ": ("LAB",)}


def _embedded_profile(im: Image.Image, name: str, strip: bool) -> ImageCms.ImageCmsProfile | None:
    """The image's own ICC profile, parsed by LittleCMS; None if it has none.

    A profile LittleCMS cannot read is an error (the colours would be wrong either way), unless
    metadata is being stripped anyway, in which case it is ignored.
    """
    data = im.info.get("icc_profile")
    if not data:
        return None
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(data))
    except (OSError, ImageCms.PyCMSError, ValueError, TypeError) as exc:
        if strip:
            return None
        raise ImageError(f"{name}: its embedded ICC profile is invalid ({exc}); "
                         "--strip-metadata ignores it") from exc


def _to_srgb(im: Image.Image, profile: ImageCms.ImageCmsProfile) -> Image.Image:
    intent = ImageCms.getDefaultIntent(profile)
    return ImageCms.profileToProfile(im, profile, _SRGB, renderingIntent=intent, outputMode="RGB")


def _colour_managed(im: Image.Image, name: str, strip: bool) -> tuple[np.ndarray, bytes | None]:
    """(HxWx3 uint8 RGB pixels, the ICC profile they are in or None)."""
    profile = _embedded_profile(im, name, strip)
    space = profile.profile.xcolor_space if profile is not None else None
    try:
        if profile is not None and im.mode in _PROFILE_MODES.get(space, ()):
            if space == "RGB " and not strip:
                return _to_rgb(im), im.info["icc_profile"]  # pixels stay in their own gamut
            return np.asarray(_to_srgb(im, profile)), None if strip else SRGB_PROFILE
        if im.mode == "LAB":  # Pillow's convert() has no Lab -> RGB
            lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB"))
            return np.asarray(_to_srgb(im, lab)), None if strip else SRGB_PROFILE
    except ImageCms.PyCMSError as exc:
        raise ImageError(f"{name}: LittleCMS cannot convert its colours to sRGB: {exc}") from exc
    if profile is not None and space == "RGB " and not strip and im.mode not in ("CMYK", "YCbCr"):
        # palette, alpha, greyscale-with-RGB-profile: Pillow's RGB conversion keeps the gamut
        return _to_rgb(im), im.info["icc_profile"]
    return _to_rgb(im), None  # no usable profile: Pillow's plain conversion, untagged


def _source_metadata(im: Image.Image, name: str, size: tuple[int, int]) -> tuple[bytes | None, bytes | None]:
    """(EXIF, XMP) of the file, rewritten for the upright pixels of `size`."""
    exif = im.info.get("exif")
    xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
    try:
        return (sanitize_exif(exif, size) if exif else None,
                sanitize_xmp(xmp) if xmp else None)
    except MetadataError as exc:
        raise ImageError(f"{name}: {exc}") from exc


def load_image_with_metadata(source: str | Path | bytes,
                             max_pixels: int | None = DEFAULT_MAX_PIXELS,
                             strip_metadata: bool = False,
                             strip_gps: bool = False) -> tuple[np.ndarray, Metadata]:
    """Read an image file (path or encoded bytes) as HxWx3 uint8 RGB, with its metadata.

    EXIF orientation is applied to the pixels (and the EXIF/XMP say Orientation 1). Transparent
    images (RGBA, LA, PA, palette or L/RGB with a transparency key) are composited over white,
    since the codec has no alpha channel. 16-bit greyscale is scaled to 8 bits. Colour spaces:
    see the module docstring. The size is checked against `max_pixels` before any pixel data
    is decoded. `strip_metadata`: no metadata, pixels in sRGB; `strip_gps`: no GPS in EXIF/XMP.
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
                upright = ImageOps.exif_transpose(im)
                upright.info = dict(im.info)  # the original's metadata; rewritten below
                rgb, icc = _colour_managed(upright, name, strip_metadata)
                exif, xmp = (None, None) if strip_metadata else \
                    _source_metadata(im, name, (rgb.shape[1], rgb.shape[0]))
        except ImageError as exc:  # the size check: say which file
            raise ImageError(exc if str(exc).startswith(name) else f"{name}: {exc}") from exc
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise ImageError(f"cannot read image {name}: {exc}") from exc
    metadata = Metadata(icc_profile=icc, exif=exif, xmp=xmp)
    if strip_gps:
        metadata = metadata.without_gps()
    return np.ascontiguousarray(rgb, dtype=np.uint8), metadata


def load_image(source: str | Path | bytes,
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB (`load_image_with_metadata` without the metadata)."""
    return load_image_with_metadata(source, max_pixels)[0]


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _save_options(fmt: str, metadata: Metadata) -> dict:
    """Pillow save() arguments that embed `metadata` in a file of format `fmt`."""
    options: dict = {}
    if metadata.icc_profile and fmt in ("PNG", "JPEG", "WEBP", "TIFF"):
        options["icc_profile"] = metadata.icc_profile
    if metadata.exif and fmt in ("PNG", "JPEG", "WEBP", "TIFF"):
        options["exif"] = metadata.exif  # PNG: written as eXIf (Pillow drops the Exif\0\0 header)
    if metadata.xmp:
        if fmt in ("JPEG", "WEBP"):
            options["xmp"] = metadata.xmp
        elif fmt == "PNG":
            info = PngImagePlugin.PngInfo()
            info.add_itxt("XML:com.adobe.xmp", metadata.xmp.decode("utf-8", "replace"))
            options["pnginfo"] = info
    return options


# Per output format: Pillow's save option that `level` sets, its range, and our default.
# PNG at zlib level 1: a 20 MP photo writes ~6x faster than Pillow's default level 6 and the
# file is ~11% larger (docs/benchmarks.md); a decoder whose output is the bottleneck is no use.
# WebP method 0 is its fastest encoder (4x faster than the default 4 at the same quality, 4% larger).
OUTPUT_LEVELS: dict[str, tuple[str, int, int, int]] = {
    "PNG": ("compress_level", 0, 9, 1),
    "JPEG": ("quality", 1, 100, 95),
    "WEBP": ("quality", 1, 100, 90),
}
_FORMAT_EXTRA = {"WEBP": {"method": 0}}


def output_format(path: str | Path) -> str:
    """Pillow's format name for an output path's extension ('PNG', 'JPEG', ...)."""
    from PIL import Image as _Image

    _Image.init()
    suffix = Path(path).suffix.lower()
    try:
        return _Image.EXTENSION[suffix]
    except KeyError:
        raise ImageError(f"cannot write image {path}: unknown file extension {suffix or '(none)'}; "
                         "use .png, .jpg or .webp") from None


def save_image(arr: np.ndarray, path: str | Path, metadata: Metadata | None = None, level: int | None = None) -> None:
    """Write an HxWx3 uint8 RGB array; the format follows the file extension (.png, .jpg, .webp, ...).

    `metadata` is embedded where the format has a place for it: PNG (iCCP, eXIf, iTXt XMP),
    JPEG and WebP (ICC, EXIF, XMP), TIFF (ICC, EXIF); other formats get the pixels only.
    `level`: PNG compress level 0-9 (default 1: fast), JPEG/WebP quality 1-100 (default 95/90).
    """
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ImageError(f"expected an HxWx3 uint8 array, got {arr.dtype} {arr.shape}")
    check_size(arr.shape[1], arr.shape[0], max_pixels=None)
    fmt = output_format(path)
    options = dict(_FORMAT_EXTRA.get(fmt, {}))
    if fmt in OUTPUT_LEVELS:
        key, low, high, default = OUTPUT_LEVELS[fmt]
        value = default if level is None else int(level)
        if not low <= value <= high:
            raise ImageError(f"{fmt} {key.replace('_', ' ')} must be in {low}..{high}, got {level}")
        options[key] = value
    elif level is not None:
        raise ImageError(f"{fmt} output has no level/quality setting (PNG, JPEG and WebP do)")
    if metadata:
        options.update(_save_options(fmt, metadata))
    try:
        if fmt == "PNG":
            Path(path).write_bytes(_png_bytes(arr, options))
        else:
            Image.fromarray(arr).save(path, format=fmt, **options)
    except (OSError, ValueError) as exc:
        raise ImageError(f"cannot write image {path}: {exc}") from exc


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """A PNG file's chunks as (type, whole chunk bytes: length, type, data, CRC)."""
    chunks, offset = [], len(_PNG_SIGNATURE)
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        chunks.append((data[offset + 4:offset + 8], data[offset:offset + 12 + length]))
        offset += 12 + length
    return chunks


def _png_bytes(arr: np.ndarray, options: dict) -> bytes:
    """The PNG file: pixels by `png.png_rgb8` at the fast levels (0-1: the Up row filter, deflated
    in bands on every core) or by libpng (imagecodecs, its adaptive filters) above; metadata chunks
    by Pillow.

    Pillow's PNG writer tries every row filter on every row; the Up filter alone writes a 20 MP photo
    2.3x faster at level 1 with a file within 0.5% of Pillow's (docs/benchmarks.md), and deflating
    in bands on 2 cores 1.7x faster again. Pillow still encodes the metadata (iCCP, eXIf, iTXt) on a
    1x1 image, whose ancillary chunks go in after our IHDR: PNG is a list of chunks."""
    level = options.pop("compress_level")
    if level <= 1:
        pixels = png_rgb8(arr, level)
    else:
        import imagecodecs

        pixels = imagecodecs.png_encode(arr, level=level)  # libpng's adaptive row filters
    if not options:
        return pixels
    carrier = io.BytesIO()
    Image.new("RGB", (1, 1)).save(carrier, format="PNG", **options)
    metadata = [chunk for kind, chunk in _png_chunks(carrier.getvalue()) if kind not in (b"IHDR", b"IDAT", b"IEND")]
    (head_kind, head), *rest = _png_chunks(pixels)
    assert head_kind == b"IHDR"
    return b"".join([_PNG_SIGNATURE, head, *metadata, *(chunk for _, chunk in rest)])


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
