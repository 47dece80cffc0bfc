"""Test inputs for load tests: a real photo at 1080p / 4K / 6K, and perf_analyzer `--input-data` JSON.

Named resolutions are cut from the largest photo in `../shared/datasets/highres/` (next to the
project checkout) when it is there: resized to cover the target, then centre-cropped, so the
encoder sees real photographic content. Without it, a procedurally generated photo-like image
(multi-scale smooth noise) is used and the description says so.
"""
from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tritonclient.utils import serialize_byte_tensor

from ..interface import DECODE_MODEL, ENCODE_MODEL

__all__ = ["RESOLUTIONS", "HIGHRES_DIR", "PerfInput", "make_input", "parse_resolution", "procedural_photo",
           "input_data_json", "write_input_data"]

RESOLUTIONS = {"1080p": (1920, 1080), "4k": (3840, 2160), "6k": (6144, 4096)}
HIGHRES_DIR = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "highres"
_SIZE = re.compile(r"^(\d+)x(\d+)$")


@dataclass
class PerfInput:
    image: np.ndarray  # HxWx3 uint8 RGB
    source: str  # where the pixels came from, for the report


def parse_resolution(spec: str) -> tuple[int, int] | Path:
    """'1080p' | '4k' | '6k' | 'WxH' -> (width, height); anything else is an image file path."""
    if spec.lower() in RESOLUTIONS:
        return RESOLUTIONS[spec.lower()]
    match = _SIZE.match(spec)
    if match:
        width, height = int(match.group(1)), int(match.group(2))
        if width < 1 or height < 1:
            raise ValueError(f"resolution {spec!r} has no pixels")
        return width, height
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"--resolution must be 1080p, 4k, 6k, WxH or an image file; {spec!r} is none of these")
    return path


def procedural_photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Photo-like content without a photo: smooth noise at several scales (roughly 1/f, like natural images)."""
    rng = np.random.default_rng(seed)
    total = np.zeros((height, width, 3), np.float32)
    for cells, weight in ((4, 1.0), (16, 0.5), (64, 0.25), (256, 0.12)):
        small = rng.uniform(0, 255, (max(2, cells * height // max(width, height)), cells, 3)).astype(np.uint8)
        layer = Image.fromarray(small).resize((width, height), Image.BICUBIC)
        total += weight * (np.asarray(layer, np.float32) - 127.5)
    total = 127.5 + total / 1.87 + rng.normal(0, 2.0, total.shape)
    return np.clip(total, 0, 255).astype(np.uint8)


def _largest_photo(folder: Path) -> Path | None:
    photos = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
    if not photos:
        return None

    def pixels(path: Path) -> int:
        with Image.open(path) as im:
            return im.width * im.height

    return max(photos, key=pixels)


def make_input(spec: str, photos: Path = HIGHRES_DIR) -> PerfInput:
    """The image for `--resolution spec` (see module docstring)."""
    from ..codec.images import load_image

    target = parse_resolution(spec)
    if isinstance(target, Path):
        image = load_image(target)
        return PerfInput(image, f"{target} ({image.shape[1]}x{image.shape[0]})")
    width, height = target
    photo = _largest_photo(photos)
    if photo is None:
        return PerfInput(procedural_photo(width, height),
                         f"procedural photo-like image {width}x{height} (no photos in {photos})")
    with Image.open(photo) as im:
        original = f"{im.width}x{im.height}"
        fitted = ImageOps.fit(ImageOps.exif_transpose(im).convert("RGB"), (width, height), Image.LANCZOS)
    return PerfInput(np.asarray(fitted), f"{photo.name} ({original}) resized and centre-cropped to {width}x{height}")


def input_data_json(model: str, image: np.ndarray | None = None, thumbnail: bytes | None = None) -> dict:
    """perf_analyzer `--input-data` JSON for one batch-1 request (base64 content with an explicit shape).

    BYTES tensors are base64 of the serialized tensor (4-byte little-endian length, then the
    bytes), as perf_analyzer expects; UINT8 images are base64 of the raw HWC bytes (a JSON list of
    75 M numbers for a 6K image would be ~300 MB).
    """
    if model == ENCODE_MODEL:
        assert image is not None
        tensor = {"IMAGE": {"content": {"b64": base64.b64encode(np.ascontiguousarray(image).tobytes()).decode()},
                            "shape": list(image.shape)}}
    elif model == DECODE_MODEL:
        assert thumbnail is not None
        serialized = serialize_byte_tensor(np.array([thumbnail], dtype=np.object_)).item()
        tensor = {"THUMBNAIL": {"content": {"b64": base64.b64encode(serialized).decode()}, "shape": [1]}}
    else:
        raise ValueError(f"unknown model {model!r}")
    return {"data": [tensor]}


def write_input_data(path: str | Path, model: str, image: np.ndarray | None = None,
                     thumbnail: bytes | None = None) -> Path:
    path = Path(path)
    path.write_text(json.dumps(input_data_json(model, image, thumbnail)))
    return path
