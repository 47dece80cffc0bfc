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
`CachedThumbnailBank` samples training crops from one or several such caches.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
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
    if not manifest_path.exists():  # written once, atomically: runs started together share a cache
        tmp = manifest_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, manifest_path)
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
        tmp = out / f"{path.stem}.{os.getpid()}.partial"  # not *.npz: the bank never loads a half-written file
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, target)  # a killed build leaves no half-written photo behind
    return out


class CachedThumbnailBank:
    """Training photos with their cached thumbnails, sampled as block-aligned crops.

    Photos are drawn in proportion to their area, so the many small (481x321) photos of the
    training folder do not outweigh the large ones; each crop also draws one of the cached
    orientations and, with several caches (one per frozen encoder, same photos), one encoder.
    """

    def __init__(self, caches: str | Path | Sequence[str | Path], block: int, min_side: int, device: torch.device):
        caches = [Path(caches)] if isinstance(caches, (str, Path)) else [Path(c) for c in caches]
        self.block, self.device = block, device
        self.items: list[dict] = []  # {"hr": (H, W, 3) uint8, "thumbs": [encoder][orientation] -> (q, tables)}
        for path in tqdm(sorted(caches[0].glob("*.npz")), desc=f"loading {caches[0]}", leave=False):
            thumbs, hr = [], None
            for cache in caches:
                with np.load(cache / path.name) as z:
                    hr = z["hr"] if hr is None else hr
                    thumbs.append([(z[f"q{k}"], z[f"tables{k}"]) for k in range(sum(f.startswith("q") for f in z.files))])
            if min(hr.shape[:2]) >= min_side:
                self.items.append({"hr": hr, "thumbs": thumbs})
        if not self.items:
            raise ValueError(f"no cached thumbnail in {caches[0]} has both sides >= {min_side} px")
        self.encoders = len(caches)
        self.orientations = min(len(t) for t in self.items[0]["thumbs"])
        area = torch.tensor([float(i["hr"].shape[0] * i["hr"].shape[1]) for i in self.items])
        self.weights = area / area.sum()

    def __len__(self) -> int:
        return len(self.items)

    def sample(self, batch: int, crop: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """(HR (B,3,c,c) float in [0,1], q (B,3,64,c/block,c/block) float, tables (B,2,64) float)."""
        cb = crop // self.block
        hrs, qs, tables = [], [], []
        for i in torch.multinomial(self.weights, batch, replacement=True, generator=generator).tolist():
            item = self.items[i]
            # one encoder draws nothing, so a single-cache run keeps its random stream
            e = int(torch.randint(self.encoders, (1,), generator=generator)) if self.encoders > 1 else 0
            k = int(torch.randint(self.orientations, (1,), generator=generator))
            q, table = item["thumbs"][e][k]
            h, w = q.shape[-2:]
            size = min(cb, h, w)
            y = int(torch.randint(h - size + 1, (1,), generator=generator))
            x = int(torch.randint(w - size + 1, (1,), generator=generator))
            b = self.block
            hrs.append(torch.from_numpy(np.ascontiguousarray(orient(item["hr"], k)[y * b:(y + size) * b, x * b:(x + size) * b])))
            qs.append(torch.from_numpy(np.ascontiguousarray(q[:, :, y:y + size, x:x + size])))
            tables.append(torch.from_numpy(table))
        hr = torch.stack(hrs).permute(0, 3, 1, 2).float().div_(255.0)
        return hr.to(self.device), torch.stack(qs).float().to(self.device), torch.stack(tables).float().to(self.device)
