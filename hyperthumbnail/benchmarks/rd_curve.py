"""Rate-distortion curve of ONE model by rate control, against bicubic + JPEG (4:4:4).

For every image and target bpp: `--target-bpp` rate control (the encoder runs once per image,
each target is a table-scale search on real file sizes), decode, and the bicubic+JPEG baseline
at the libjpeg quality whose file is closest to ours. Reports per target: how often the file
landed within the tolerance, mean bpp / HR PSNR / SSIM / thumbnail PSNR of both, and whether
ours is above the baseline. Writes rd_curve.json and rd_curve.png.

    hyperthumbnail bench rd-curve                      # Kodak, targets 0.15,0.2,0.3,0.45
    hyperthumbnail bench rd-curve --targets 0.15,0.3 --limit 4 --weights runs/x4/last.pt
    hyperthumbnail bench rd-curve --scale 2 --targets 0.5,0.8,1.2,1.6   # the 2x model
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..codec.images import list_images, load_image
from ..metrics import bpp as bits_per_pixel
from ..pipeline import Pipeline
from ..ratecontrol import RateControlWarning, search_analyzed
from ..weights import card_path, file_sha256
from .machine import machine_info, utc_now
from .methods import Coded, bicubic_jpeg_codec
from .rd import METRICS, image_metrics

METHODS = ("hyperthumbnail", "bicubic_jpeg")


class _ProbeCounter:
    """The pipeline as a `TwoStageEncoder` that counts the search's probes (by scale, by tables)."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self.probes = self.table_probes = 0

    def analyze(self, image: np.ndarray, max_pixels: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
        return self.pipeline.analyze(image, max_pixels)

    def quantize_and_write(self, coefficients: np.ndarray, hr_size: tuple[int, int], table_scale: float = 1.0) -> bytes:
        self.probes += 1
        return self.pipeline.quantize_and_write(coefficients, hr_size, table_scale)

    def write_with_tables(self, coefficients: np.ndarray, hr_size: tuple[int, int], tables: np.ndarray) -> bytes:
        self.probes += 1
        self.table_probes += 1
        return self.pipeline.write_with_tables(coefficients, hr_size, tables)


def run_image(pipeline: Pipeline, baseline, path: Path, targets: list[float], tolerance: float) -> list[dict]:
    image = load_image(path)
    height, width = image.shape[:2]
    start = time.perf_counter()
    coefficients, hr_size = pipeline.analyze(image)
    analyze_s = time.perf_counter() - start
    rows = []
    for target in targets:
        counter = _ProbeCounter(pipeline)
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RateControlWarning)
            ours, table_scale = search_analyzed(counter, coefficients, hr_size, target, tolerance)
        search_s = time.perf_counter() - start
        achieved = bits_per_pixel(len(ours), width, height)
        common = {"image": path.name, "width": width, "height": height, "target_bpp": target}
        ours_coded = Coded(ours, pipeline.decode(ours))
        rows.append({**common, "method": "hyperthumbnail", **image_metrics(image, ours_coded, pipeline.scale),
                     "table_scale": table_scale, "within_tolerance": abs(achieved / target - 1) <= tolerance,
                     "probes": counter.probes, "table_probes": counter.table_probes, "search_s": search_s, "analyze_s": analyze_s,
                     "note": str(caught[0].message) if caught else None})
        base = baseline(image, ours)
        rows.append({**common, "method": "bicubic_jpeg", **image_metrics(image, base, pipeline.scale),
                     "quality": base.quality})
    return rows


def summarize(rows: list[dict], targets: list[float]) -> list[dict]:
    points = []
    for target in targets:
        point: dict = {"target_bpp": target}
        for method in METHODS:
            sel = [r for r in rows if r["target_bpp"] == target and r["method"] == method]
            point[method] = {k: float(np.mean([r[k] for r in sel])) for k in METRICS}
        ours = [r for r in rows if r["target_bpp"] == target and r["method"] == "hyperthumbnail"]
        base = [r for r in rows if r["target_bpp"] == target and r["method"] == "bicubic_jpeg"]
        errors = [r["bpp"] / target - 1 for r in ours]
        point["within_tolerance"] = f"{sum(r['within_tolerance'] for r in ours)}/{len(ours)}"
        point["max_abs_bpp_error"] = float(np.max(np.abs(errors)))
        point["mean_probes"] = float(np.mean([r["probes"] for r in ours]))
        point["mean_search_s"] = float(np.mean([r["search_s"] for r in ours]))
        point["psnr_gain_db"] = point["hyperthumbnail"]["psnr"] - point["bicubic_jpeg"]["psnr"]
        point["images_above_baseline"] = f"{sum(o['psnr'] > b['psnr'] for o, b in zip(ours, base))}/{len(ours)}"
        point["above_baseline"] = point["psnr_gain_db"] > 0
        points.append(point)
    return points


def plot(points: list[dict], rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in ((axes[0], "psnr", "HR PSNR (dB)"), (axes[1], "lr_psnr", "thumbnail PSNR vs bicubic (dB)")):
        for method, color in zip(METHODS, ("tab:red", "tab:blue")):
            sel = [r for r in rows if r["method"] == method]
            ax.scatter([r["bpp"] for r in sel], [r[metric] for r in sel], s=6, alpha=0.2, color=color)
            ax.plot([p[method]["bpp"] for p in points], [p[method][metric] for p in points], "o-", color=color,
                    label=method + (" (4:4:4, same bpp)" if method == "bicubic_jpeg" else " (rate control)"))
        ax.set_xlabel("bpp (whole .jpg over HR pixels)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    targets = sorted(float(t) for t in args.targets.split(","))
    pipeline = Pipeline(args.weights, scale=args.scale, runtime=args.runtime, threads=args.threads)
    baseline = bicubic_jpeg_codec(pipeline.scale, "444")
    paths = list_images(args.data)[:args.limit]
    started = time.monotonic()
    rows = [row for path in tqdm(paths, desc="rd curve", unit="img") for row in
            run_image(pipeline, baseline, path, targets, args.tolerance)]
    points = summarize(rows, targets)
    card = card_path(pipeline.weights)
    results = {
        "meta": {"date": utc_now(), "command": shlex.join([sys.executable, *sys.argv]), "machine": machine_info(),
                 "data": str(args.data), "images": len(paths), "scale": pipeline.scale, "tolerance": args.tolerance,
                 "weights": {"path": str(pipeline.weights), "sha256": file_sha256(pipeline.weights),
                             "status": json.loads(card.read_text()).get("status") if card.is_file() else None,
                             "runtime": args.runtime},
                 "elapsed_s": round(time.monotonic() - started, 1)},
        "points": points,
        "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "rd_curve" if pipeline.scale == 4 else f"rd_curve_x{pipeline.scale}"
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(points, rows, out / f"{stem}.png",
         f"one {pipeline.scale}x model, rate control: {Path(args.data).name} ({len(paths)} images)")
    for p in points:
        print(f"target {p['target_bpp']:.3f}: within ±{args.tolerance:.0%} {p['within_tolerance']}, "
              f"ours {p['hyperthumbnail']['bpp']:.4f} bpp {p['hyperthumbnail']['psnr']:.2f} dB "
              f"(thumb {p['hyperthumbnail']['lr_psnr']:.2f}) vs bicubic+JPEG {p['bicubic_jpeg']['bpp']:.4f} bpp "
              f"{p['bicubic_jpeg']['psnr']:.2f} dB: {p['psnr_gain_db']:+.2f} dB, above on {p['images_above_baseline']}")
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.png')}")
    return 0
