"""Thumbnails of the training photos made once by a frozen encoder, for decoder-only training.

In a joint training step the encoder is ~78% of the compute (`speed.json`: 1103 of 1411 GMACs at
6K), yet only the decoder rebuilds the photo. With the encoder and QPM frozen, every thumbnail
the decoder will ever see can be made up front, by the product's own encode path (`Pipeline`,
default runtime): the cache holds exactly the quantized coefficients and tables of the .jpg files
users store. Each photo is encoded whole in each of the 8 orientations of the square (4 rotations
x mirror), since the encoder is not exactly equivariant and a flipped thumbnail is not what the
encoder makes of a flipped photo.

Layout: `DIR/manifest.json` (the encoder's fingerprint, scale, orientations) and one `STEM.npz` per photo:
`hr` (H, W, 3) uint8 cropped to whole blocks, `q{k}` (3, 64, h, w) int16 and `tables{k}` (2, 64)
uint8 for orientation k (see `orient`). Building is resumable: finished photos are skipped.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..codec.images import list_images, load_image
from ..codec.steps import decode_thumbnail
from ..weights import encoder_fingerprint

ORIENTATIONS = 8
MANIFEST = "manifest.json"


def orient(image: np.ndarray, k: int) -> np.ndarray:
    """Orientation k of an HxWxC array: k % 4 quarter turns, mirrored left-right when k >= 4."""
    out = np.rot90(image, k % 4, axes=(0, 1))
    return out[:, ::-1] if k >= 4 else out


def crop_to_blocks(image: np.ndarray, block: int) -> np.ndarray:
    """The top-left part whose sides are whole blocks (no padding: the HR target stays real pixels)."""
    h, w = image.shape[:2]
    return image[: h - h % block, : w - w % block]


def build_cache(weights: str | Path, data: str | Path, out: str | Path, scale: int = 4,
                orientations: int = ORIENTATIONS, threads: int = 0) -> Path:
    """Encode every photo of `data` (each orientation) into `out`; returns `out`."""
    from ..pipeline import Pipeline

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"encoder_sha256": encoder_fingerprint(weights), "scale": scale, "orientations": orientations}
    manifest_path = out / MANIFEST
    if manifest_path.exists() and json.loads(manifest_path.read_text()) != manifest:
        raise ValueError(f"{out} holds thumbnails of other weights or settings ({manifest_path}); "
                         "use another --cache-dir or delete it")
    manifest_path.write_text(json.dumps(manifest, indent=1))
    todo = [p for p in list_images(data) if not (out / f"{p.stem}.npz").exists()]
    if not todo:
        return out
    pipeline = Pipeline(weights, scale=scale, threads=threads)
    block = 8 * scale
    for path in tqdm(todo, desc=f"encoding {data} x{orientations} orientations", dynamic_ncols=True):
        target = out / f"{path.stem}.npz"
        hr = crop_to_blocks(load_image(path), block)
        if min(hr.shape[:2]) < block:  # smaller than one block: nothing to learn from
            continue
        arrays: dict[str, np.ndarray] = {"hr": hr}
        for k in range(orientations):
            q, tables, _ = decode_thumbnail(pipeline.encode(np.ascontiguousarray(orient(hr, k))), scale)
            arrays[f"q{k}"], arrays[f"tables{k}"] = q.astype(np.int16), tables.astype(np.uint8)
        tmp = target.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, target)  # a killed build leaves no half-written photo behind
    return out

