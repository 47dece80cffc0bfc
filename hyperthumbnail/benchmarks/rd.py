"""`bench rd`: rate-distortion of every method on every dataset, from real .jpg files.

Per image and method: bpp = 8 * file bytes / HR pixels; of the rebuilt HR photo: PSNR on RGB over
the whole image (the paper's metric, the headline), PSNR on RGB without a 2-pixel border, SSIM,
PSNR on JFIF luma, and BasicSR's Y PSNR (studio-range Y, `scale` border pixels cropped); of the
thumbnail as Pillow decodes it (what a viewer shows) against Pillow's bicubic downscale of the
original by exactly `scale` (`jpeg.bicubic_downscale`; for sides that are multiples of `scale`
that is the plain resize to W/scale x H/scale): PSNR on RGB, on JFIF luma and on the JFIF Cb+Cr
planes (the colour error). Dataset rows are means over images, plus the worst image's thumbnail
PSNR and its name. Writes rd.json, rd.csv (dataset x method), rd_images.csv (per image) and the
plots. docs/benchmarks.md defines every column.
"""
from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..codec.images import bicubic_downscale, list_images, load_image
from ..metrics import bpp as bits_per_pixel
from ..metrics import psnr, psnr_cbcr, psnr_y, psnr_y_basicsr, ssim
from ..weights import default_weights_path, file_sha256
from . import DATASETS, METHODS
from .jpeg import decode_jpeg
from .machine import machine_info, utc_now
from .methods import NEEDS_OUR_FILE, Coded, bicubic_jpeg_codec, hyperthumbnail_codec, sr_baseline_codec

# Per image; dataset rows hold their means. The first five are the original columns (same order).
METRICS = ("bpp", "psnr", "ssim", "psnr_y", "lr_psnr",
           "psnr_border2", "psnr_y_basicsr", "lr_psnr_y", "lr_psnr_cbcr")
WORST = ("lr_psnr_worst", "lr_psnr_worst_image")  # dataset rows only: min over images of lr_psnr, and which
BORDER = 2  # pixels left out on each side for `psnr_border2`
IMAGE_FIELDS = ("dataset", "image", "width", "height", "method", "bytes", *METRICS, "quality", "target_bpp", "seconds")


@dataclass
class RDConfig:
    datasets: list[str] = field(default_factory=lambda: list(DATASETS))
    data_root: Path = Path("../shared/datasets")
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    scale: int = 4                       # which shipped weights (when `weights` is None)
    weights: Path | None = None          # ours; None = shipped for `scale`
    thumbnail_weights: Path | None = None  # another (older) model makes our thumbnails; `weights` rebuilds them
    runtime: str = "openvino"
    sr_weights: Path | None = None       # None = shipped SR baseline
    out: Path = Path("benchmarks/results")
    limit: int | None = None
    threads: int = 0
    command: str = ""


def image_metrics(image: np.ndarray, coded: Coded, scale: int) -> dict[str, float]:
    """bpp of the whole file, HR fidelity, and the thumbnail a viewer shows vs bicubic (METRICS)."""
    h, w = image.shape[:2]
    reference = bicubic_downscale(image, scale)
    lh, lw = reference.shape[:2]
    thumb = decode_jpeg(coded.jpeg)[:lh, :lw]  # the SR baseline's file covers the padded image
    return {
        "bpp": bits_per_pixel(len(coded.jpeg), w, h),
        "psnr": psnr(coded.recon, image),
        "ssim": ssim(coded.recon, image),
        "psnr_y": psnr_y(coded.recon, image),
        "lr_psnr": psnr(thumb, reference),
        "psnr_border2": psnr(coded.recon, image, border=BORDER),
        "psnr_y_basicsr": psnr_y_basicsr(coded.recon, image, crop=scale),
        "lr_psnr_y": psnr_y(thumb, reference),
        "lr_psnr_cbcr": psnr_cbcr(thumb, reference),
    }


class RDBenchmark:
    def __init__(self, cfg: RDConfig):
        unknown = sorted(set(cfg.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
        self.cfg = cfg
        self.folders = {name: Path(cfg.data_root) / name for name in cfg.datasets}
        missing = [str(p) for p in self.folders.values() if not p.is_dir()]
        if missing:
            raise FileNotFoundError(f"dataset folders not found: {', '.join(missing)}")
        self.weights = Path(cfg.weights) if cfg.weights else default_weights_path(cfg.scale)
        self.pipeline = None
        self.sr = None
        self.scale = cfg.scale
        if set(cfg.methods) & set(NEEDS_OUR_FILE):
            from ..pipeline import Pipeline
            self.pipeline = Pipeline(self.weights, scale=cfg.scale, runtime=cfg.runtime, threads=cfg.threads)
            self.scale = self.pipeline.scale
        self.encoder = self.pipeline  # what makes our file
        if cfg.thumbnail_weights is not None and self.pipeline is not None:
            from ..pipeline import Pipeline
            self.encoder = Pipeline(cfg.thumbnail_weights, scale=cfg.scale, runtime=cfg.runtime, threads=cfg.threads)
            if self.encoder.model_id not in self.pipeline.served_models:
                raise ValueError(f"{self.weights} does not serve model {self.encoder.model_id} of {cfg.thumbnail_weights} "
                                 f"(it serves {', '.join(self.pipeline.served_models)})")
        if "sr_baseline" in cfg.methods:
            from .sr_baseline import DEFAULT_SR_WEIGHTS, SRBaseline
            if cfg.threads:
                import torch
                torch.set_num_threads(cfg.threads)
            self.sr = SRBaseline(cfg.sr_weights or DEFAULT_SR_WEIGHTS)
            if self.sr.scale != self.scale:
                raise ValueError(f"the SR baseline is for scale {self.sr.scale}, this run is scale {self.scale} "
                                 "(leave sr_baseline out of --methods)")
        factories = {
            "hyperthumbnail": lambda: hyperthumbnail_codec(self.pipeline),
            "bicubic_jpeg": lambda: bicubic_jpeg_codec(self.scale, "444"),
            "bicubic_jpeg_420": lambda: bicubic_jpeg_codec(self.scale, "420"),
            "sr_baseline": lambda: sr_baseline_codec(self.sr),
        }
        self.codecs = {m: factories[m]() for m in cfg.methods}

    def run_image(self, dataset: str, path: Path) -> list[dict]:
        image = load_image(path)
        h, w = image.shape[:2]
        rows = []
        ours, encode_s = None, 0.0
        if self.encoder is not None:
            start = time.perf_counter()
            ours = self.encoder.encode(image)
            encode_s = time.perf_counter() - start
        for method, codec in self.codecs.items():
            start = time.perf_counter()
            coded = codec(image, ours)
            seconds = time.perf_counter() - start + (encode_s if method == "hyperthumbnail" else 0.0)
            rows.append({
                "dataset": dataset, "image": path.name, "width": w, "height": h, "method": method,
                "bytes": len(coded.jpeg), **image_metrics(image, coded, self.scale), "quality": coded.quality,
                "target_bpp": bits_per_pixel(len(ours), w, h) if method.startswith("bicubic_jpeg") else None,
                "seconds": round(seconds, 3),
            })
        return rows

    def run(self) -> dict:
        cfg = self.cfg
        started, rows, elapsed = time.monotonic(), [], {}
        for dataset, folder in self.folders.items():
            paths = list_images(folder)[:cfg.limit]
            t0 = time.monotonic()
            for path in tqdm(paths, desc=f"rd {dataset}", unit="img", dynamic_ncols=True):
                rows.extend(self.run_image(dataset, path))
            elapsed[dataset] = round(time.monotonic() - t0, 1)
        results = summarize(rows, cfg.datasets, cfg.methods)
        results["meta"] = self.meta(rows, elapsed, time.monotonic() - started)
        write_outputs(results, rows, Path(cfg.out), output_stem(self.scale))
        return results

    def meta(self, rows: list[dict], elapsed: dict[str, float], total: float) -> dict:
        cfg = self.cfg
        meta = {
            "date": utc_now(),
            "command": cfg.command,
            "machine": machine_info(),
            "methods": cfg.methods,
            "scale": self.scale,
            "limit": cfg.limit,
            "datasets": {d: {"path": str(self.folders[d]), "images": sum(1 for r in rows if r["dataset"] == d
                                                                          and r["method"] == cfg.methods[0])}
                         for d in cfg.datasets},
            "elapsed_s": {"total": round(total, 1), **elapsed},
            "threads": cfg.threads,
        }
        if self.pipeline is not None:
            meta["weights"] = {"path": str(self.weights), "sha256": file_sha256(self.weights), "runtime": cfg.runtime}
        if self.encoder is not self.pipeline:
            meta["thumbnail_weights"] = {"path": str(cfg.thumbnail_weights), "sha256": file_sha256(cfg.thumbnail_weights),
                                         "model_id": self.encoder.model_id}
        if self.sr is not None:
            card = self.sr.weights.with_suffix(".json")
            meta["sr_baseline"] = {"path": str(self.sr.weights), "sha256": file_sha256(self.sr.weights),
                                   "quality": self.sr.config.quality,
                                   "card": json.loads(card.read_text()) if card.is_file() else None}
        return meta


def summarize(rows: list[dict], datasets: list[str], methods: list[str]) -> dict:
    """{dataset: {method: {metric: mean over images, lr_psnr_worst: min, lr_psnr_worst_image: its name}}}."""
    out: dict = {}
    for d in datasets:
        out[d] = {}
        for m in methods:
            sel = [r for r in rows if r["dataset"] == d and r["method"] == m]
            if sel:
                worst = min(sel, key=lambda r: r["lr_psnr"])
                out[d][m] = {**{k: float(np.mean([r[k] for r in sel])) for k in METRICS},
                             "lr_psnr_worst": float(worst["lr_psnr"]), "lr_psnr_worst_image": worst["image"]}
    return out


def output_stem(scale: int) -> str:
    """rd.* for the 4x model (the product's default), rd_x2.* for the 2x one."""
    return "rd" if scale == 4 else f"rd_x{scale}"


def write_outputs(results: dict, rows: list[dict], out: Path, stem: str = "rd") -> None:
    from .plots import plot_rd

    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    with open(out / f"{stem}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "method", "images", *METRICS, *WORST, "mean_quality", "seconds_per_image"])
        for d, per_method in ((d, v) for d, v in results.items() if d != "meta"):
            for m, vals in per_method.items():
                sel = [r for r in rows if r["dataset"] == d and r["method"] == m]
                qualities = [r["quality"] for r in sel if r["quality"] is not None]
                w.writerow([d, m, len(sel), *(f"{vals[k]:.4f}" for k in METRICS),
                            f"{vals['lr_psnr_worst']:.4f}", vals["lr_psnr_worst_image"],
                            f"{np.mean(qualities):.1f}" if qualities else "",
                            f"{np.mean([r['seconds'] for r in sel]):.3f}"])
    with open(out / f"{stem}_images.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=IMAGE_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else ("" if v is None else v)) for k, v in r.items()})
    plot_rd(results, rows, out, stem)
