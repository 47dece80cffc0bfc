"""The non-neural steps around the ONNX graphs, shared by the Triton Python backends and the
in-process pipeline so that a served `.jpg` is byte-identical to one made in-process.

Single-image functions (`preprocess`, `postprocess`, `encode_thumbnail`, `decode_thumbnail`) hold
the logic; the `*_batch` variants apply them along the leading batch axis that Triton requests
carry (a request's images all share one shape, so batches stack).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..interface import COEF_LIMIT
from .images import DEFAULT_MAX_PIXELS, ImageError, check_size, crop_to, pad_to_multiple
from .metadata import Metadata, MetadataError, check_rgb_profile, sanitize_exif
from .thumbnail import (
    MAX_JPEG_SIDE,
    Thumbnail,
    ThumbnailError,
    read_metadata,
    read_thumbnail,
    thumbnail_size,
    with_metadata,
    write_thumbnail,
)

__all__ = [
    "DEFAULT_CALL_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "StepError",
    "attach_metadata",
    "attach_metadata_batch",
    "batch_slices",
    "check_positive",
    "check_table_scale",
    "crop_batch",
    "crop_image",
    "decode_thumbnail",
    "decode_thumbnail_batch",
    "encode_thumbnail",
    "encode_thumbnail_batch",
    "metadata_batch",
    "pad_batch",
    "pad_photo",
    "postprocess",
    "preprocess",
    "quantize_with_tables",
    "stack_batch",
]


class StepError(ValueError):
    """A request the step cannot serve (bad shape, size, bytes); the message is for the client."""


# ----------------------------------------------------------------------------- pixels


def pad_photo(image: np.ndarray, scale: int, max_pixels: int | None = DEFAULT_MAX_PIXELS
              ) -> tuple[np.ndarray, tuple[int, int]]:
    """HxWx3 uint8 RGB, checked -> (HxWx3 uint8 edge-padded to multiples of 8*scale, (W, H)).

    The tiled encoder (`runtime.tiling`) converts each tile to float itself: a whole 48 MP photo
    in float32 CHW would be 580 MB.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise StepError(f"expected an HxWx3 RGB image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise StepError(f"expected uint8 pixels, got {image.dtype}")
    height, width = image.shape[:2]
    try:
        check_size(width, height, max_pixels)
    except ImageError as exc:
        raise StepError(str(exc)) from exc
    if max(thumbnail_size((width, height), scale)) > MAX_JPEG_SIDE:  # refuse before the encoder runs
        raise StepError(f"image is {width}x{height}: its thumbnail at scale {scale} would exceed JPEG's "
                        f"{MAX_JPEG_SIDE}-pixel side limit")
    return pad_to_multiple(image, 8 * scale), (width, height)


def preprocess(image: np.ndarray, scale: int, max_pixels: int | None = DEFAULT_MAX_PIXELS
               ) -> tuple[np.ndarray, tuple[int, int]]:
    """HxWx3 uint8 RGB -> ((3, H', W') float32 in [0, 1] edge-padded to multiples of 8*scale, (W, H))."""
    padded, size = pad_photo(image, scale, max_pixels)
    chw = np.ascontiguousarray(padded.transpose(2, 0, 1), dtype=np.float32)
    chw /= np.float32(255.0)  # runtime.tiling.encode_tiled converts its tiles the same way
    return chw, size


def postprocess(image: np.ndarray, hr_size: tuple[int, int]) -> np.ndarray:
    """(3, H', W') float in [0, 1] -> HxWx3 uint8 cropped to exactly hr_size = (W, H)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] != 3:
        raise StepError(f"expected a (3, H, W) image, got shape {image.shape}")
    width, height = int(hr_size[0]), int(hr_size[1])
    try:
        cropped = crop_to(image.transpose(1, 2, 0), width, height)
    except ValueError as exc:
        raise StepError(str(exc)) from exc
    pixels = np.multiply(cropped.transpose(2, 0, 1), np.float32(255.0), dtype=np.float32)  # (3, H, W) copy
    np.rint(pixels, out=pixels)
    np.fmax(pixels, 0, out=pixels)  # fmax also maps NaN to 0
    np.minimum(pixels, 255, out=pixels)
    return np.ascontiguousarray(pixels.astype(np.uint8).transpose(1, 2, 0))


def crop_image(image: np.ndarray, hr_size: tuple[int, int]) -> np.ndarray:
    """Padded HxWx3 uint8 (a decoder that ends in uint8) -> exactly hr_size = (W, H), contiguous."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise StepError(f"expected a padded HxWx3 uint8 image, got {image.dtype} {image.shape}")
    try:
        return np.ascontiguousarray(crop_to(image, int(hr_size[0]), int(hr_size[1])))
    except ValueError as exc:
        raise StepError(str(exc)) from exc


def check_positive(values: np.ndarray, batch: int, name: str) -> np.ndarray:
    """A request's per-image FP32 input -> (batch, 1) float32, each value positive and finite."""
    values = np.asarray(values, dtype=np.float32)
    if values.shape != (batch, 1):
        raise StepError(f"{name} must have shape ({batch}, 1), one value per image; got {values.shape}")
    if not (np.all(np.isfinite(values)) and np.all(values > 0)):
        raise StepError(f"{name} must be positive and finite, got {values.ravel().tolist()}")
    return values


def check_table_scale(table_scale: np.ndarray, batch: int) -> np.ndarray:
    """A request's TABLE_SCALE -> (batch, 1) float32, one positive finite factor per image."""
    return check_positive(table_scale, batch, "TABLE_SCALE")


# ----------------------------------------------------------------------------- JPEG entropy coding


def quantize_with_tables(coefficients: np.ndarray, tables: np.ndarray) -> np.ndarray:
    """Unquantized coefficients (3, 64, h, w) float32 / given tables (2, 64) -> int16 coefficients.

    The QPM graph's rounding (float32 division, round half to even, clamp), for tables no table
    scale can express: rate control's entry-by-entry step sets single entries.
    """
    per_component = np.asarray(tables).astype(np.float32)[[0, 1, 1]][:, :, None, None]
    return np.clip(np.rint(coefficients / per_component), -COEF_LIMIT, COEF_LIMIT).astype(np.int16)


def encode_thumbnail(quantized: np.ndarray, tables: np.ndarray, hr_size: tuple[int, int], scale: int,
                     model_id: str | None = None) -> bytes:
    """Quantized coefficients (3, 64, h, w) + tables (2, 64) (any integer dtype) -> .jpg bytes.
    `model_id`: the encoder that made them (`weights.model_id`), recorded in the marker."""
    thumb = Thumbnail(coefficients=np.asarray(quantized), tables=np.asarray(tables), scale=int(scale),
                      hr_size=(int(hr_size[0]), int(hr_size[1])), model_id=model_id)
    try:
        return write_thumbnail(thumb)
    except ValueError as exc:  # ThumbnailError is a ValueError too
        raise StepError(f"cannot write the thumbnail: {exc}") from exc


def decode_thumbnail(data: bytes, scale: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                     served_models: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """.jpg bytes -> (quantized int32 (3, 64, h, w), tables int32 (2, 64), (W, H)).

    `scale`: the scale the decoder was built for; a thumbnail made at another scale is refused.
    `served_models`: the model ids whose thumbnails the decoder rebuilds (`weights.served_model_ids`);
    a thumbnail that names another model is refused (one without an id is taken).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise StepError(f"expected thumbnail bytes, got {type(data).__name__}")
    try:
        thumb = read_thumbnail(bytes(data), **({} if max_pixels is None else {"max_hr_pixels": max_pixels}))
    except ThumbnailError as exc:
        raise StepError(str(exc)) from exc
    if scale is not None and thumb.scale != scale:
        raise StepError(f"the thumbnail was made at scale {thumb.scale}, this decoder rebuilds scale {scale}")
    if served_models is not None and thumb.model_id is not None and thumb.model_id not in served_models:
        from ..weights import shipped_weights_serving  # here, not at the top: weights imports codec

        shipped = shipped_weights_serving(thumb.model_id, thumb.scale)
        raise StepError(f"the thumbnail was made by model {thumb.model_id}, which this decoder was not "
                        f"trained for (it serves {', '.join(served_models)}): decode it with the weights "
                        f"of model {thumb.model_id} (their card's model_id"
                        + (f"; shipped as {shipped})" if shipped else ")"))
    return thumb.coefficients.astype(np.int32), thumb.tables.astype(np.int32), tuple(thumb.hr_size)


def attach_metadata(data: bytes, icc_profile: bytes | None, exif: bytes | None, hr_size: tuple[int, int]) -> bytes:
    """The thumbnail with the ICC profile and EXIF a client sent along with the pixels (the
    served ICC_PROFILE / EXIF inputs), checked and rewritten as `encode` does for a file: the
    profile must be an RGB one, the EXIF gets Orientation 1 and the upright size."""
    try:
        icc_profile = check_rgb_profile(icc_profile) if icc_profile else None
    except MetadataError as exc:
        raise StepError(f"ICC_PROFILE: {exc}") from exc
    try:
        exif = sanitize_exif(exif, hr_size) if exif else None
    except MetadataError as exc:
        raise StepError(f"EXIF: {exc}") from exc
    if icc_profile is None and exif is None:
        return data
    try:
        return with_metadata(data, Metadata(icc_profile=icc_profile, exif=exif))
    except ValueError as exc:
        raise StepError(str(exc)) from exc


# ----------------------------------------------------------------------------- batched (Triton tensors)

DEFAULT_CALL_MAX_BYTES = 4 << 20  # input bytes per onnxruntime call: ~350k pixels for the encoder


def batch_slices(batch: int, item_bytes: int, max_bytes: int = DEFAULT_CALL_MAX_BYTES) -> list[slice]:
    """Slices of a batch so that each model call gets at most `max_bytes` of input (and >= 1 item).

    Batching saves per-call overhead for small inputs; for large ones it only multiplies the peak
    memory of a call (one 6K encode already needs ~6 GB on the CPU), so they run one at a time.
    """
    step = max(1, max_bytes // max(1, item_bytes))
    return [slice(start, min(start + step, batch)) for start in range(0, batch, step)]


def stack_batch(items: list[np.ndarray], what: str) -> np.ndarray:
    """Per-item arrays of one request -> one (B, ...) array; a StepError if their sizes differ.
    One item is returned as a view (no copy of a 48 MP image)."""
    shapes = {item.shape for item in items}
    if len(shapes) > 1:
        raise StepError(f"the {what} in one request differ in size ({sorted(shapes)}); send them as separate requests")
    return items[0][None] if len(items) == 1 else np.stack(items)


def pad_batch(images: np.ndarray, scale: int, max_pixels: int | None = DEFAULT_MAX_PIXELS
              ) -> tuple[np.ndarray, np.ndarray]:
    """(B, H, W, 3) uint8 -> ((B, H', W', 3) uint8 edge-padded, HR sizes (B, 2) int32 as (W, H))."""
    if images.ndim != 4:
        raise StepError(f"expected a (batch, H, W, 3) image tensor, got shape {images.shape}")
    out = [pad_photo(image, scale, max_pixels) for image in images]
    return np.stack([o[0] for o in out]), np.array([o[1] for o in out], dtype=np.int32).reshape(-1, 2)


def crop_batch(images: np.ndarray, hr_sizes: np.ndarray) -> np.ndarray:
    """(B, H', W', 3) uint8 + (B, 2) sizes -> (B, H, W, 3) uint8 (all sizes in a request must agree)."""
    if len(images) != len(hr_sizes):
        raise StepError(f"{len(images)} images but {len(hr_sizes)} HR sizes")
    return stack_batch([crop_image(image, size) for image, size in zip(images, hr_sizes)], "decoded images")


def encode_thumbnail_batch(quantized: np.ndarray, tables: np.ndarray, hr_sizes: np.ndarray, scale: int,
                           model_id: str | None = None) -> np.ndarray:
    """(B, 3, 64, h, w), (B, 2, 64), (B, 2) -> (B, 1) object array of .jpg bytes."""
    if not len(quantized) == len(tables) == len(hr_sizes):
        raise StepError("quantized, tables and HR sizes disagree on the batch size")
    data = [encode_thumbnail(q, t, s, scale, model_id) for q, t, s in zip(quantized, tables, hr_sizes)]
    return np.array(data, dtype=np.object_).reshape(-1, 1)


def decode_thumbnail_batch(thumbnails: np.ndarray, scale: int | None = None,
                           max_pixels: int | None = DEFAULT_MAX_PIXELS, served_models: Sequence[str] | None = None
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B, 1) object array of .jpg bytes -> (B, 3, 64, h, w) int32, (B, 2, 64) int32, (B, 2) int32."""
    items = np.asarray(thumbnails, dtype=np.object_).reshape(len(thumbnails), -1)
    if items.shape[1] != 1:
        raise StepError(f"expected one thumbnail per batch item, got shape {thumbnails.shape}")
    decoded = [decode_thumbnail(item, scale, max_pixels, served_models) for item in items[:, 0]]
    quantized = stack_batch([d[0] for d in decoded], "thumbnails")
    return quantized, np.stack([d[1] for d in decoded]), np.array([d[2] for d in decoded], dtype=np.int32)


def _optional_bytes(values: np.ndarray | None, batch: int, name: str) -> list[bytes | None]:
    """A (B, 1) BYTES input as one bytes (or None: absent or empty) per batch item."""
    if values is None:
        return [None] * batch
    items = np.asarray(values, dtype=np.object_).reshape(len(values), -1)
    if items.shape != (batch, 1):
        raise StepError(f"expected one {name} per batch item ({batch}), got shape {np.shape(values)}")
    return [bytes(v) or None if isinstance(v, (bytes, bytearray, memoryview)) else None for v in items[:, 0]]


def attach_metadata_batch(thumbnails: np.ndarray, icc_profiles: np.ndarray | None, exifs: np.ndarray | None,
                          hr_sizes: np.ndarray) -> np.ndarray:
    """(B, 1) .jpg bytes + optional (B, 1) ICC_PROFILE / EXIF bytes -> (B, 1) .jpg bytes with them."""
    batch = len(thumbnails)
    icc, exif = _optional_bytes(icc_profiles, batch, "ICC_PROFILE"), _optional_bytes(exifs, batch, "EXIF")
    data = [attach_metadata(bytes(t), i, e, (int(s[0]), int(s[1])))
            for t, i, e, s in zip(thumbnails[:, 0], icc, exif, hr_sizes)]
    return np.array(data, dtype=np.object_).reshape(-1, 1)


def metadata_batch(thumbnails: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, 1) .jpg bytes (already read by decode_thumbnail_batch) -> (B, 1) ICC profiles and
    (B, 1) EXIF blocks, b"" where a thumbnail has none."""
    items = np.asarray(thumbnails, dtype=np.object_).reshape(len(thumbnails), -1)[:, 0]
    try:
        found = [read_metadata(bytes(item)) for item in items]
    except ThumbnailError as exc:
        raise StepError(str(exc)) from exc
    icc = np.array([m.icc_profile or b"" for m in found], dtype=np.object_).reshape(-1, 1)
    exif = np.array([m.exif or b"" for m in found], dtype=np.object_).reshape(-1, 1)
    return icc, exif
