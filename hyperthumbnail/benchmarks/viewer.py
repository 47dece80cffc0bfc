"""Restore times of the static viewer in a real headless Chromium (issue #27): per photo size
(Kodak 768x512, 1920x1080, a 12 MP photo) and backend (ONNX Runtime Web WASM with all cores'
threads and with one thread; WebGPU where the browser gives an adapter), each restore in a fresh
browser through `viewer.check_thumbnail`, its PNG compared with the in-process decode (PSNR).

    hyperthumbnail viewer bench --out benchmarks/results

`ms` is the page's restore (the file read: `read_ms`; both graphs in tiles; pixels assembled); the
decoder's load (fetch + session creation) and the PNG download are recorded apart; the in-process
decode (OpenVINO, bf16 body: `hyperthumbnail decode` without the file I/O, its second call) is
timed beside it for scale. WebGPU: a
headless Chromium without a GPU gives no adapter unless asked with --enable-unsafe-webgpu, and then
a software one (SwiftShader, Vulkan emulated on the CPU); the record says which, and the software
adapter runs only the smallest photo (here about a minute for Kodak, where WASM takes 1-2 s).
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ..viewer import DEFAULT_BUILD_DIR, check_thumbnail
from ..viewer.check import DEFAULT_CHROMIUM
from .machine import machine_info, utc_now

__all__ = ["PHOTOS", "run_viewer_bench"]

ROOT = Path(__file__).resolve().parents[2]
# name -> (source photo, centre crop (width, height) or None for the whole photo)
PHOTOS = {
    "768x512": (ROOT.parent / "shared" / "datasets" / "kodak" / "kodim23.png", None),
    "1920x1080": (ROOT / "samples" / "photos" / "lake.jpg", (1920, 1080)),
    "12mp": (ROOT / "samples" / "photos" / "lake.jpg", None),
}
# (label, backend, threads (None: all cores), cross-origin isolated, largest photo it runs on (pixels)).
# "auto" is the page as a visitor gets it (no browser flags): which backend it picks and why.
CONFIGS = [("auto", "auto", None, True, 1_000_000), ("wasm-threads", "wasm", None, True, None),
           ("wasm-1-thread", "wasm", 1, True, None), ("webgpu", "webgpu", None, True, None)]
SOFTWARE_WEBGPU_MAX_PIXELS = 1_000_000  # a software adapter runs only the smallest photo (see the docstring)


def _photo(source: Path, crop: tuple[int, int] | None) -> np.ndarray:
    image = Image.open(source).convert("RGB")
    if crop is not None:
        left, top = (image.width - crop[0]) // 2, (image.height - crop[1]) // 2
        image = image.crop((left, top, left + crop[0], top + crop[1]))
    return np.asarray(image)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else round(10 * np.log10(255**2 / mse), 2)


def run_viewer_bench(out_dir: Path, viewer_dir: Path = DEFAULT_BUILD_DIR, chromium: str = DEFAULT_CHROMIUM,
                     photos: list[str] | None = None, repeat: int = 1, timeout_s: float = 600,
                     command: str = "hyperthumbnail viewer bench") -> Path:
    """Measure every photo x backend; writes out_dir/viewer.json (and viewer.png); returns the JSON path."""
    from ..pipeline import Pipeline

    started, machine_at_start = utc_now(), machine_info()
    pipeline = Pipeline()
    rows: list[dict] = []
    webgpu_adapter: str | None = None
    with tempfile.TemporaryDirectory(prefix="viewer-bench-") as tmp:
        work = Path(tmp)
        for name in photos or list(PHOTOS):
            photo = _photo(*PHOTOS[name])
            thumbnail = work / f"{name}.jpg"
            thumbnail.write_bytes(pipeline.encode(photo))
            pipeline.decode(thumbnail.read_bytes())  # warm: graphs loaded and compiled for this shape
            start = time.perf_counter()
            reference = pipeline.decode(thumbnail.read_bytes())
            rows.append({"photo": name, "config": "in-process (CLI's decode)", "status": "ok", "run": 0,
                         "size": [photo.shape[1], photo.shape[0]], "ms": (time.perf_counter() - start) * 1000,
                         "backend": pipeline.describe(), "threads": None, "adapter": None,
                         "tab_peak_rss_mib": None, "psnr_vs_in_process_db": None})
            pixels = photo.shape[0] * photo.shape[1]
            for label, backend, threads, isolate, max_pixels in CONFIGS:
                if max_pixels is not None and pixels > max_pixels:
                    continue
                software = webgpu_adapter is not None and "swiftshader" in webgpu_adapter.lower()
                if backend == "webgpu" and software and pixels > SOFTWARE_WEBGPU_MAX_PIXELS:
                    rows.append({"photo": name, "config": label, "status": "not run",
                                 "reason": f"the only WebGPU adapter is software ({webgpu_adapter})"})
                    continue
                for run in range(repeat):
                    out = work / f"{name}-{label}-{run}"
                    result = check_thumbnail(thumbnail, out, chromium, viewer_dir, timeout_s, backend, threads, isolate)
                    page = json.loads((out / "result.json").read_text())
                    row = {"photo": name, "config": label, "run": run, "size": [photo.shape[1], photo.shape[0]],
                           "megapixels": round(photo.shape[0] * photo.shape[1] / 1e6, 2)}
                    if result.ok:
                        restored = np.asarray(Image.open(result.png).convert("RGB"))
                        row.update(status="ok", psnr_vs_in_process_db=_psnr(restored, reference),
                                   **{k: page[k] for k in ("ms", "read_ms", "load_ms", "png_ms", "backend", "threads", "adapter",
                                                           "cross_origin_isolated", "tab_peak_rss_mib",
                                                           "browser_peak_pss_mib", "bytes", "bpp", "note")})
                        if backend == "webgpu":
                            webgpu_adapter = page.get("adapter")
                    else:
                        row.update(status="unavailable" if backend == "webgpu" else "failed",
                                   reason=page.get("message") or page.get("error"))
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
                    if row["status"] != "ok":
                        break
            browser = page.get("browser_version")
    record = {
        "meta": {
            "date": started, "machine_at_start": machine_at_start, "machine": machine_info(), "browser": browser,
            "onnxruntime_web": json.loads((viewer_dir / "manifest.json").read_text())["onnxruntime_web"],
            "viewer_manifest": {k: v for k, v in json.loads((viewer_dir / "manifest.json").read_text()).items()
                                if k in ("weights", "weights_sha256", "model_ids", "tiling")},
            "reference": f"in-process decode ({pipeline.describe()})",
            "command": command,
            "note": "ms = the page's restore: reading the file (read_ms: parsing, CRC, the coefficients' entropy "
                    "decoding) + both graphs in tiles + assembling the pixels; "
                    "load_ms = fetching the graphs and creating the ONNX Runtime Web sessions; each run a fresh "
                    "headless Chromium; webgpu asked with --enable-unsafe-webgpu --enable-features=Vulkan",
        },
        "summary": _summary(rows),
        "rows": rows,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "viewer.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    _plot(rows, out_dir / "viewer.png", record["meta"])
    return path


def _summary(rows: list[dict]) -> list[dict]:
    """Per photo and config: the fastest and the median restore (s), the tab's largest peak."""
    out = []
    for photo, config in dict.fromkeys((r["photo"], r["config"]) for r in rows):
        done = [r for r in rows if r["photo"] == photo and r["config"] == config and r["status"] == "ok"]
        if not done:
            first = next(r for r in rows if r["photo"] == photo and r["config"] == config)
            out.append({"photo": photo, "config": config, "status": first["status"], "reason": first.get("reason")})
            continue
        seconds = [r["ms"] / 1000 for r in done]
        out.append({"photo": photo, "config": config, "backend": done[0]["backend"], "threads": done[0]["threads"],
                    "adapter": done[0]["adapter"], "runs": len(done), "fastest_s": round(min(seconds), 2),
                    "median_s": round(float(np.median(seconds)), 2),
                    "tab_peak_rss_mib": max((r["tab_peak_rss_mib"] or 0 for r in done), default=None) or None,
                    "psnr_vs_in_process_db": done[0]["psnr_vs_in_process_db"]})
    return out


def _plot(rows: list[dict], path: Path, meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "ok"]
    photos = list(dict.fromkeys(r["photo"] for r in done))
    configs = list(dict.fromkeys(r["config"] for r in done))
    fig, ax = plt.subplots(figsize=(10, 4.2))
    width = 0.8 / max(1, len(configs))
    for i, config in enumerate(configs):
        seconds = [min((r["ms"] / 1000 for r in done if r["photo"] == p and r["config"] == config), default=np.nan)
                   for p in photos]
        adapter = next((r["adapter"] for r in done if r["config"] == config and r.get("adapter")), None)
        label = f"{config} ({adapter}: software)" if adapter and "swiftshader" in adapter.lower() else config
        bars = ax.bar(np.arange(len(photos)) + i * width, seconds, width, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(np.arange(len(photos)) + width * (len(configs) - 1) / 2, photos)
    ax.set_ylabel("restore time (s), fastest run")
    ax.set_yscale("log")
    ax.set_title(f"HyperThumbnail viewer, {meta['browser']}, ONNX Runtime Web {meta['onnxruntime_web']}\n"
                 f"{meta['machine']['cpu_model']}, {meta['machine']['logical_cores']} cores, load at start "
                 f"{meta['machine_at_start']['load_average_1_5_15'][0]}", fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
