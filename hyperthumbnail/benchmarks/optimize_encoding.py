"""What optimization-based encoding (`encode --optimize N`) buys, and what it costs.

For each image: the plain encode, then `optimize_encoding` (PyTorch: it needs gradients) with
each N in --steps. The plain encode and every decode run on --runtime (default: the CLI's
default, so the numbers are what `encode [--optimize N]` + `decode` give a user); every file is
measured like `bench rd` (real bpp, HR PSNR/SSIM, thumbnail PSNR of the file vs Pillow bicubic). Reports per N the mean
change against the plain encode and the time per image and per step, wall clock and CPU seconds
of this process (on a shared machine the CPU time is the steadier of the two; the optimization
includes its own encoder pass, the plain time is one encode). Writes optimize.json and
optimize.png.

    hyperthumbnail bench optimize                        # 4 Kodak images, N = 10, 30
    hyperthumbnail bench optimize --limit 24 --steps 5,20,50 --weights runs/x4/last.pt
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..codec.images import list_images, load_image
from ..optimize import OptimizeConfig, optimize_encoding
from ..pipeline import Pipeline
from ..weights import card_path, file_sha256
from .machine import machine_info, utc_now
from .methods import Coded
from .rd import METRICS, image_metrics


def measure(pipeline: Pipeline, image: np.ndarray, data: bytes) -> dict[str, float]:
    return image_metrics(image, Coded(data, pipeline.decode(data)), pipeline.scale)


def run_image(pipeline: Pipeline, model: torch.nn.Module, path: Path, steps: list[int], table_scale: float,
              config: OptimizeConfig) -> list[dict]:
    image = load_image(path)
    common = {"image": path.name, "width": image.shape[1], "height": image.shape[0]}
    wall, cpu = time.perf_counter(), time.process_time()
    plain = pipeline.encode(image, table_scale)
    timing = {"seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu}
    rows = [{**common, "steps": 0, **measure(pipeline, image, plain), **timing}]
    for n in steps:
        cpu = time.process_time()
        result = optimize_encoding(model, image, n, table_scale, config)
        timing = {"seconds": result.seconds, "cpu_seconds": time.process_time() - cpu}
        rows.append({**common, "steps": n, **measure(pipeline, image, result.data), **timing,
                     "best_step": result.best_step, "history": result.history})
    return rows


def summarize(rows: list[dict], steps: list[int]) -> list[dict]:
    plain = {r["image"]: r for r in rows if r["steps"] == 0}
    out = []
    for n in [0, *steps]:
        sel = [r for r in rows if r["steps"] == n]
        point = {"steps": n, **{k: float(np.mean([r[k] for r in sel])) for k in METRICS},
                 "lr_psnr_worst": float(min(r["lr_psnr"] for r in sel)),
                 "seconds_per_image": float(np.mean([r["seconds"] for r in sel])),
                 "cpu_seconds_per_image": float(np.mean([r["cpu_seconds"] for r in sel]))}
        if n:
            for k in METRICS:
                point[f"delta_{k}"] = float(np.mean([r[k] - plain[r["image"]][k] for r in sel]))
            point["seconds_per_step"] = point["seconds_per_image"] / n
            point["cpu_seconds_per_step"] = point["cpu_seconds_per_image"] / n
            point["images_improved"] = f"{sum(r['psnr'] > plain[r['image']]['psnr'] for r in sel)}/{len(sel)}"
            point["mean_kept_step"] = float(np.mean([r["best_step"] for r in sel]))
        out.append(point)
    return out


def plot(points: list[dict], rows: list[dict], path: Path, title: str) -> None:
    """Left: each image's HR PSNR gain over its plain encode, per N. Right: the mean HR PSNR against
    the encode time per image (what a service trades), the plain encode at N = 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plain = {r["image"]: r for r in rows if r["steps"] == 0}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = sorted(plain)
    steps = [p["steps"] for p in points if p["steps"]]
    width = 0.8 / max(len(steps), 1)
    for i, n in enumerate(steps):
        by_image = {r["image"]: r for r in rows if r["steps"] == n}
        gains = [by_image[name]["psnr"] - plain[name]["psnr"] for name in names]
        axes[0].bar(np.arange(len(names)) + (i - (len(steps) - 1) / 2) * width, gains, width, label=f"N = {n}")
    axes[0].set_xticks(np.arange(len(names)), [Path(name).stem for name in names], rotation=90, fontsize=6)
    axes[0].set_ylabel("HR PSNR gain over the plain encode (dB)")
    axes[0].legend(fontsize=8)
    axes[0].grid(axis="y", alpha=0.3)
    axes[1].plot([p["seconds_per_image"] for p in points], [p["psnr"] for p in points], "o-", color="tab:red")
    for p in points:
        axes[1].annotate(f"N = {p['steps']}\n{p['bpp']:.4f} bpp\nthumb. {p['lr_psnr']:.2f} (worst {p['lr_psnr_worst']:.2f}) dB",
                         (p["seconds_per_image"], p["psnr"]), textcoords="offset points", xytext=(6, -22), fontsize=7)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("encode time per image (s, wall clock)")
    axes[1].set_ylabel("mean HR PSNR (dB, RGB)")
    axes[1].grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    steps = sorted(int(s) for s in args.steps.split(","))
    pipeline = Pipeline(args.weights, runtime=args.runtime, threads=args.threads)
    model = (pipeline if args.runtime == "torch" else Pipeline(args.weights, runtime="torch", threads=args.threads)).model
    config = OptimizeConfig() if args.lr is None else OptimizeConfig(lr=args.lr)
    paths = list_images(args.data)[:args.limit]
    started = time.monotonic()
    rows = [row for path in tqdm(paths, desc="optimize", unit="img")
            for row in run_image(pipeline, model, path, steps, args.table_scale, config)]
    points = summarize(rows, steps)
    card = card_path(pipeline.weights)
    results = {
        "meta": {"date": utc_now(), "command": shlex.join([sys.executable, *sys.argv]), "machine": machine_info(),
                 "data": str(args.data), "images": [p.name for p in paths], "table_scale": args.table_scale,
                 "config": asdict(config),
                 "threads": args.threads, "runtime": args.runtime,
                 "weights": {"path": str(pipeline.weights), "sha256": file_sha256(pipeline.weights),
                             "status": json.loads(card.read_text()).get("status") if card.is_file() else None},
                 "elapsed_s": round(time.monotonic() - started, 1)},
        "points": points,
        "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "optimize.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(points, rows, out / "optimize.png", f"encode --optimize N: {Path(args.data).name}, {len(paths)} images, "
         f"decoded by {args.runtime}")
    for p in points:
        line = (f"N={p['steps']:3d}: {p['bpp']:.4f} bpp, HR {p['psnr']:.3f} dB, thumbnail {p['lr_psnr']:.2f} dB "
                f"(worst {p['lr_psnr_worst']:.2f}), "
                f"{p['seconds_per_image']:.1f} s/image")
        if p["steps"]:
            line += (f" | vs plain: {p['delta_bpp']:+.4f} bpp, HR {p['delta_psnr']:+.3f} dB, thumbnail "
                     f"{p['delta_lr_psnr']:+.3f} dB, {p['seconds_per_step']:.2f} s/step "
                     f"({p['cpu_seconds_per_step']:.2f} CPU-s), improved {p['images_improved']}")
        print(line)
    print(f"wrote {out / 'optimize.json'} and {out / 'optimize.png'}")
    return 0
