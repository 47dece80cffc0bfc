"""Rate proxy vs reality on Kodak: the factorized density's bits against the real .jpg bytes.

For each image the trained checkpoint encodes the photo; we compare
- `proxy_bpp`: the rate model's bits of the rounded coefficients / HR pixels,
- `noisy_proxy_bpp`: the same on coefficients + uniform noise, the training-time rate term of a
  plain CompressAI-style objective,
- `calibrated_bpp`: noisy proxy * the measured real/proxy ratio kept in the checkpoint + the header
  share: what our training objective optimises (training/objective.py, calibration.py),
- `real_bpp`: 8 * file bytes / HR pixels.

    hyperthumbnail bench rate-proxy --checkpoint runs/x4/best.pt
writes benchmarks/results/rate_proxy.json (the rate model is not shipped: it needs a checkpoint).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from ..codec.images import list_images, load_image, pad_to_multiple
from ..codec.steps import encode_thumbnail
from ..evaluation import to_tensor
from ..model.dct import image_to_coefficients
from ..model.qpm import expand_tables
from ..training.objective import ObjectiveConfig
from ..weights import load_checkpoint, load_checkpoint_model
from .machine import utc_now


def run(args: argparse.Namespace) -> int:

    state = load_checkpoint(Path(args.checkpoint))
    calibration = float(state["objective"]["rate_calibration"])
    header_bpp = ObjectiveConfig().header_bpp
    model = load_checkpoint_model(Path(args.checkpoint))
    rows = []
    torch.manual_seed(0)
    with torch.no_grad():
        for path in list_images(args.data):
            image = load_image(path)
            h, w = image.shape[:2]
            hr = to_tensor(pad_to_multiple(image, model.block))
            coef = image_to_coefficients(model.encoder(hr))
            q, tables = model.quantize(coef)
            scaled = coef / expand_tables(tables)
            proxy_bits = float(model.rate_model.bits(q)[0])
            noisy_bits = float(model.rate_model.bits(scaled + torch.empty_like(scaled).uniform_(-0.5, 0.5))[0])
            q, tables = q.to(torch.int16), tables.to(torch.uint8)
            jpeg = encode_thumbnail(q[0].numpy(), tables[0].numpy(), (w, h), model.scale)
            rows.append({"image": path.name, "real_bpp": 8 * len(jpeg) / (w * h), "proxy_bpp": proxy_bits / (w * h),
                         "noisy_proxy_bpp": noisy_bits / (w * h),
                         "calibrated_bpp": calibration * noisy_bits / (w * h) + header_bpp})
    keys = ("real_bpp", "proxy_bpp", "noisy_proxy_bpp", "calibrated_bpp")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    result = {
        "meta": {"checkpoint": args.checkpoint, "step": int(state["step"]), "rate_calibration": calibration,
                 "header_bpp": header_bpp, "date": utc_now(), "command": shlex.join([sys.executable, *sys.argv])},
        "kodak_mean": mean,
        "relative_error": {k: mean[k] / mean["real_bpp"] - 1 for k in keys[1:]},
        "images": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    errors = ", ".join(f"{k} {mean[k]:.4f} ({100 * v:+.1f}%)" for k, v in result["relative_error"].items())
    print(f"Kodak mean: real {mean['real_bpp']:.4f} bpp; {errors} -> {args.out}")
    return 0
