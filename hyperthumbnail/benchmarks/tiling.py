"""`hyperthumbnail bench tiling`: what tiling does to real photos at the default precision.

Under bf16 OpenVINO/oneDNN pick kernels per CPU and per tensor shape, so a tiled encode (each tile
another shape than the whole photo) may differ from the whole-photo encode in the last bit of a
few unquantized coefficients; where such a coefficient sits on a rounding tie, its quantized
value (what the file stores) moves by one step. Per photo this records how many raw and quantized
coefficients differ, whether the tables agree, and the effect in dB: the two thumbnails against
each other and both rebuilt photos against the original (decoded by the same untiled graphs, so
only the encode's difference counts). Tiles hold about a quarter of the photo (at least the
smallest tile that holds the encoder's margin), so every photo is cut into several. Writes
`tiling.json`; the machine record names the CPU's vector extensions, since the answer is the CPU's.
"""
from __future__ import annotations

import argparse
import io
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..codec.images import crop_to, list_images, load_image
from ..codec.steps import encode_thumbnail, pad_photo
from ..metrics import psnr
from ..runtime.graphs import load_graphs
from ..runtime.tiling import ENCODER_MARGIN_BLOCKS
from ..weights import default_weights_path
from .machine import machine_info, utc_now


def tile_pixels_for(width: int, height: int, scale: int) -> int:
    """Tiles of about a quarter of the photo (4-9 tiles), but at least the smallest square tile whose
    core survives the encoder's margin on all sides (a Kodak photo: 640x640 tiles with 64x64 cores)."""
    side = (2 * ENCODER_MARGIN_BLOCKS + 2) * 8 * scale
    return max(side * side, width * height // 4)


def _finite(value: float) -> float | None:
    return None if math.isinf(value) else round(value, 3)  # identical images: JSON null, not Infinity


def measure_photo(whole, tiled, image: np.ndarray) -> dict:
    """One photo through `whole` (untiled) and `tiled` graph sets of the same runtime and precision."""
    padded, (width, height) = pad_photo(image, whole.scale)
    tiled.tile_pixels = tile_pixels_for(width, height, whole.scale)
    tiled.body_whole_pixels = 0  # the body in those tiles too
    raw_whole, raw_tiled = whole.coefficients(padded), tiled.coefficients(padded)
    (q_whole, t_whole), (q_tiled, t_tiled) = whole.quantize(raw_whole), whole.quantize(raw_tiled)
    moved = np.abs(q_tiled.astype(np.int64) - q_whole)
    files = [encode_thumbnail(q, t, (width, height), whole.scale) for q, t in ((q_whole, t_whole), (q_tiled, t_tiled))]
    thumbs = [np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in files]
    photos = [crop_to(whole.reconstruct(q, t), width, height) for q, t in ((q_whole, t_whole), (q_tiled, t_tiled))]
    return {
        "size": [width, height], "tile_pixels": tiled.tile_pixels, "coefficients": int(q_whole.size),
        "raw_differing": int(np.count_nonzero(raw_whole != raw_tiled)),
        "quantized_differing": int(np.count_nonzero(moved)), "quantized_max_step": int(moved.max()),
        "tables_equal": bool(np.array_equal(t_whole, t_tiled)), "files_equal": files[0] == files[1],
        "thumbnail_psnr_tiled_vs_whole": _finite(psnr(thumbs[1], thumbs[0])),
        "hr_psnr_whole": round(psnr(photos[0], image), 4), "hr_psnr_tiled": round(psnr(photos[1], image), 4),
    }


def run(args: argparse.Namespace) -> int:
    weights = Path(args.weights) if args.weights else default_weights_path(args.scale)
    whole = load_graphs(weights, "openvino", args.precision, args.threads, tile_pixels=None)
    tiled = load_graphs(weights, "openvino", args.precision, args.threads)  # tile size set per photo
    photos = [p for folder in args.folders for p in list_images(folder)]
    if not photos:
        raise FileNotFoundError(f"no photos in {', '.join(map(str, args.folders))}")
    rows = []
    for path in tqdm(photos, desc="whole vs tiled", dynamic_ncols=True):
        rows.append({"photo": f"{Path(path).parent.name}/{Path(path).name}", **measure_photo(whole, tiled, load_image(path))})
    coefficients = sum(r["coefficients"] for r in rows)
    summary = {
        "photos": len(rows), "coefficients": coefficients,
        "quantized_differing": sum(r["quantized_differing"] for r in rows),
        "quantized_differing_share": sum(r["quantized_differing"] for r in rows) / coefficients,
        "photos_with_a_difference": sum(r["quantized_differing"] > 0 for r in rows),
        "tables_always_equal": all(r["tables_equal"] for r in rows),
        "max_hr_psnr_change_db": max(abs(r["hr_psnr_tiled"] - r["hr_psnr_whole"]) for r in rows),
        "min_thumbnail_psnr_tiled_vs_whole": min((r["thumbnail_psnr_tiled_vs_whole"] for r in rows
                                                  if r["thumbnail_psnr_tiled_vs_whole"] is not None), default=None),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"meta": {"date": utc_now(), "machine": machine_info(), "weights": weights.name,
                       "graphs": whole.describe(),
                       "command": "hyperthumbnail bench tiling " + " ".join(str(f) for f in args.folders)},
              "summary": summary, "photos": rows}
    (out / "tiling.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"{summary['quantized_differing']} of {coefficients:,} quantized coefficients differ "
          f"({summary['photos_with_a_difference']} of {len(rows)} photos); tables always equal: "
          f"{summary['tables_always_equal']}; largest HR PSNR change {summary['max_hr_psnr_change_db']:.4f} dB "
          f"-> {out / 'tiling.json'}")
    return 0
