"""`bench speed`: encode and decode at one resolution (6144x4096 by default), in-process with
ONNX Runtime and through Triton (HTTP, gRPC, system shared memory), against an EDSR-baseline
decoder on the same ONNX Runtime, in one run on one machine.

Every measurement runs in its own process (`speed_worker`) for a clean peak RSS; the Triton
server's peak RSS (server + Python-backend stubs) is sampled with psutil while a stage runs.
Server compute per ensemble step comes from Triton's statistics extension; what the client
waits beyond the server's request time is network + (de)serialization. Results: speed.json,
speed.csv and speed.png in the output folder.
"""
from __future__ import annotations

import csv
import json
import math
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..export.edsr import EDSR_SHAPE, export_edsr
from ..weights import default_weights_path, file_sha256
from .machine import machine_info, utc_now
from .memory import TreeRSS

SIX_K = (6144, 4096)
# Step name -> the category bars are stacked by.
CATEGORIES = {
    "preprocess": "pixels", "postprocess": "pixels",
    "encoder": "neural", "qpm": "neural", "decoder": "neural", "edsr": "neural",
    "entropy_coding": "jpeg coding", "jpeg_encode": "jpeg coding", "jpeg_decode": "jpeg coding",
    "server_overhead": "server queue/scheduling", "network_serialization": "network/serialization",
}


def parse_resolution(text: str) -> tuple[int, int]:
    """'6k' -> (6144, 4096); 'WxH' -> (W, H)."""
    if text.lower() == "6k":
        return SIX_K
    match = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise ValueError(f"resolution must be '6k' or WxH (e.g. 1024x768), got {text!r}")
    return int(match[1]), int(match[2])


@dataclass
class SpeedConfig:
    width: int = SIX_K[0]
    height: int = SIX_K[1]
    url: str | None = None          # a running server's HTTP host:port; None: start one
    grpc_url: str | None = None
    protocols: list[str] = field(default_factory=lambda: ["http", "grpc", "shm"])
    weights: Path | None = None
    image: Path | None = None
    data_root: Path = Path("../shared/datasets")
    repeats: int = 3
    warmup: int = 1
    threads: int = 0
    model_repository: Path = Path("build/bench/model_repository")
    out: Path = Path("benchmarks/results")
    command: str = ""


def input_image(cfg: SpeedConfig) -> tuple[np.ndarray, str]:
    """A photo covering WxH (Lanczos resize + centre crop), or a synthetic one if there is none."""
    from PIL import Image

    from ..codec.images import IMAGE_SUFFIXES, load_image

    path = cfg.image
    if path is None:
        folder = Path(cfg.data_root) / "highres"
        found = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        path = found[0] if found else None
    if path is None:  # no photo on this machine: smooth gradients + texture + noise
        rng = np.random.default_rng(0)
        y, x = np.mgrid[0:cfg.height, 0:cfg.width].astype(np.float32)
        base = np.stack([x / cfg.width, y / cfg.height, 0.5 + 0.3 * np.sin(x / 7) * np.cos(y / 5)], axis=-1)
        image = np.clip(base * 200 + 25 + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        return image, "synthetic photo-like image"
    photo = Image.fromarray(load_image(path, max_pixels=None))
    k = max(cfg.width / photo.width, cfg.height / photo.height)
    size = (max(cfg.width, math.ceil(photo.width * k)), max(cfg.height, math.ceil(photo.height * k)))
    photo = photo.resize(size, Image.LANCZOS)
    left, top = (size[0] - cfg.width) // 2, (size[1] - cfg.height) // 2
    image = np.asarray(photo.crop((left, top, left + cfg.width, top + cfg.height)))
    return np.ascontiguousarray(image), f"{path} (Lanczos-resized to cover, centre-cropped)"


def decoder_gmacs(our_decoder: Path, edsr: Path, width: int, height: int, scale: int) -> dict:
    """Decoder GMACs of ours and EDSR at this resolution and at 6K (ours on the padded block grid)."""
    from ..export.macs import count_macs

    def at(w: int, h: int) -> dict[str, float]:
        grid = (math.ceil(h / (8 * scale)), math.ceil(w / (8 * scale)))
        ours = count_macs(our_decoder, {"quantized": (1, 3, 64, *grid), "tables": (1, 2, 64)})["total"] / 1e9
        lr = (math.ceil(h / scale), math.ceil(w / scale))
        theirs = count_macs(edsr, {"lr": (1, 3, *lr)})["total"] / 1e9
        return {"hyperthumbnail_decoder": round(ours, 2), "edsr_baseline": round(theirs, 2)}

    return {f"{width}x{height}": at(width, height), f"{SIX_K[0]}x{SIX_K[1]}": at(*SIX_K)}


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def summarize_inprocess(raw: dict) -> dict:
    runs = raw.pop("runs_ms")
    steps = list(runs[0])
    return {
        "total_ms": _median([sum(r.values()) for r in runs]),
        "runs_ms": [round(sum(r.values()), 1) for r in runs],
        "stages_ms": {s: _median([r[s] for r in runs]) for s in steps},
        **raw,
    }


def summarize_triton(raw: dict, server_peak_mb: float | None) -> dict:
    """Client latency split into server compute per step, server queue/scheduling and the rest."""
    runs = [r["request"] for r in raw.pop("runs_ms")]
    client_mean = float(np.mean(runs))
    compute = raw.pop("server_compute_ms")
    request_ms = raw.pop("server_request_ms")
    return {
        "total_ms": _median(runs),
        "runs_ms": [round(r, 1) for r in runs],
        "client_mean_ms": client_mean,
        "server_request_ms": request_ms,
        "stages_ms": {**compute, "server_overhead": request_ms - sum(compute.values()),
                      "network_serialization": client_mean - request_ms},
        "total_minus_server_compute_ms": client_mean - sum(compute.values()),
        "client_peak_rss_mb": raw.pop("peak_rss_mb"),
        "client_rss_before_mb": raw.pop("rss_before_mb"),
        "server_peak_rss_mb": server_peak_mb,
        **raw,
    }


class SpeedBenchmark:
    def __init__(self, cfg: SpeedConfig):
        self.cfg = cfg
        self.weights = Path(cfg.weights) if cfg.weights else default_weights_path()
        if not self.weights.is_file():
            raise FileNotFoundError(f"weights not found: {self.weights}")
        if cfg.grpc_url and not cfg.url:
            raise ValueError("--grpc-url needs --url (the HTTP endpoint of the same server, for its statistics)")
        if cfg.url and "grpc" in cfg.protocols and not cfg.grpc_url:
            raise ValueError("timing gRPC against a running server needs --grpc-url (or leave grpc out of --protocols)")

    def _worker(self, work: Path, stage: str, **extra) -> dict:
        cfg = self.cfg
        spec = {"stage": stage, "workdir": str(work), "weights": str(self.weights), "threads": cfg.threads,
                "repeats": cfg.repeats, "warmup": cfg.warmup, "hr_size": [cfg.width, cfg.height], **extra}
        spec_path, result_path = work / f"{stage}.spec.json", work / f"{stage}.result.json"
        spec_path.write_text(json.dumps(spec))
        proc = subprocess.run([sys.executable, "-m", "hyperthumbnail.benchmarks.speed_worker", str(spec_path),
                               str(result_path)], capture_output=True, text=True)
        if proc.returncode < 0:  # the kernel's OOM killer is the usual SIGKILL at 6K
            raise RuntimeError(f"speed stage {stage} was killed by {signal.Signals(-proc.returncode).name}"
                               + (" (out of memory?)" if proc.returncode == -signal.SIGKILL else ""))
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise RuntimeError(f"speed stage {stage} failed (exit {proc.returncode}):\n{tail}")
        return json.loads(result_path.read_text())

    def _edsr_input(self, work: Path, image: np.ndarray) -> dict:
        """The EDSR baseline's thumbnail: Pillow bicubic /4, JPEG 4:4:4 at the quality closest to our file."""
        from ..codec.images import bicubic_downscale
        from ..metrics import bpp as bits_per_pixel
        from .jpeg import closest_quality, encode_jpeg

        w, h = self.cfg.width, self.cfg.height
        lr = bicubic_downscale(image, 4)
        files: dict[int, bytes] = {}

        def bpp_at(q: int) -> float:
            files.setdefault(q, encode_jpeg(lr, q))
            return bits_per_pixel(len(files[q]), w, h)

        target = bits_per_pixel((work / "thumbnail.jpg").stat().st_size, w, h)
        quality = closest_quality(bpp_at, target)
        (work / "edsr_lr.jpg").write_bytes(files[quality])
        return {"jpeg_quality": quality, "thumbnail_bytes": len(files[quality])}

    def run(self) -> dict:
        cfg = self.cfg
        started = time.monotonic()
        results: dict = {"meta": self.meta()}
        protocols = list(cfg.protocols)
        plan = ["inprocess encode", "inprocess decode", "edsr decode"]
        plan += [f"triton {p} {d}" for p in protocols for d in ("encode", "decode")]
        with tempfile.TemporaryDirectory(prefix="hyperthumbnail-speed-") as tmp, \
                tqdm(total=len(plan), desc="speed", unit="stage", dynamic_ncols=True) as bar:
            work = Path(tmp)
            image, source = input_image(cfg)
            np.save(work / "input.npy", image)
            results["meta"]["input"] = source

            def step(label: str) -> None:
                bar.set_postfix_str(label)

            step("inprocess encode")
            inproc = {"encode": summarize_inprocess(self._worker(work, "inprocess_encode"))}
            bar.update()
            step("inprocess decode")
            inproc["decode"] = summarize_inprocess(self._worker(work, "inprocess_decode"))
            bar.update()
            results["inprocess"] = inproc
            thumb_bytes = inproc["encode"]["thumbnail_bytes"]
            results["meta"]["thumbnail_bytes"] = thumb_bytes
            results["meta"]["bpp"] = 8 * thumb_bytes / (cfg.width * cfg.height)

            step("edsr decode")
            edsr_path = export_edsr(work / "edsr.onnx")
            edsr = self._edsr_input(work, image)
            results["edsr_baseline"] = {"decode": {**summarize_inprocess(self._worker(work, "edsr_decode")), **edsr},
                                        "model": {**EDSR_SHAPE, "scale": 4, "weights": "random (seed 0)"}}
            bar.update()

            from ..runtime.graphs import export_graphs, graph_cache_dir
            cache = export_graphs(self.weights, graph_cache_dir(self.weights), 4, names=("decoder",))  # MACs only
            results["gmacs"] = decoder_gmacs(cache / "decoder.onnx", edsr_path,
                                             cfg.width, cfg.height, 4)
            if protocols:
                results["triton"] = self._triton(work, protocols, bar, step)
                results["meta"]["triton_server"] = (f"external server at {cfg.url}" if cfg.url else
                                                    "embedded tritonserver (nvidia-pytriton wheel), CPU model repository")
        results["ratios"] = ratios(results)
        results["meta"]["elapsed_s"] = round(time.monotonic() - started, 1)
        write_outputs(results, Path(cfg.out))
        return results

    def _triton(self, work: Path, protocols: list[str], bar: tqdm, step) -> dict:
        cfg = self.cfg
        out: dict = {}
        server = None
        if cfg.url is None:
            from ..serving.repository import build_repository
            from ..serving.server_process import TritonServer, free_port

            step("building model repository")
            repo = build_repository(cfg.model_repository, weights=self.weights)
            server = TritonServer(repo, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())
            step("starting tritonserver")
            server.start(timeout=300)
            urls = {"http_url": server.http_url, "grpc_url": server.grpc_url}
        else:
            urls = {"http_url": cfg.url, "grpc_url": cfg.grpc_url}
        try:
            for protocol in protocols:
                out[protocol] = {}
                for direction in ("encode", "decode"):
                    step(f"triton {protocol} {direction}")
                    with TreeRSS() as rss:
                        raw = self._worker(work, f"triton_{direction}", protocol=protocol, **urls)
                    out[protocol][direction] = summarize_triton(raw, rss.peak / 2**20 if server else None)
                    bar.update()
        finally:
            if server is not None:
                server.stop()
        return out

    def meta(self) -> dict:
        cfg = self.cfg
        return {
            "date": utc_now(),
            "command": cfg.command,
            "machine": machine_info(),
            "resolution": f"{cfg.width}x{cfg.height}",
            "repeats": cfg.repeats,
            "warmup": cfg.warmup,
            "statistic": "median of the repeats (breakdowns: median per step in-process; means from Triton's "
                         "statistics for the server side)",
            "onnxruntime_threads": cfg.threads or "all cores",
            "weights": {"path": str(self.weights), "sha256": file_sha256(self.weights)},
        }


def ratios(results: dict) -> dict:
    """How many times longer (or more MACs) the first thing takes than the second."""
    ours, edsr = results["inprocess"]["decode"], results["edsr_baseline"]["decode"]
    six_k = results["gmacs"][f"{SIX_K[0]}x{SIX_K[1]}"]
    out = {
        "edsr_over_ours_decode_total": edsr["total_ms"] / ours["total_ms"],
        "edsr_over_ours_decode_network": edsr["stages_ms"]["edsr"] / ours["stages_ms"]["decoder"],
        "edsr_over_ours_gmacs_6k": six_k["edsr_baseline"] / six_k["hyperthumbnail_decoder"],
    }
    for protocol, per_dir in results.get("triton", {}).items():
        for direction, r in per_dir.items():
            out[f"triton_{protocol}_over_inprocess_{direction}"] = r["total_ms"] / results["inprocess"][direction]["total_ms"]
    return {k: round(v, 3) for k, v in out.items()}


def flat_rows(results: dict) -> list[dict]:
    """One row per (path, direction, stage) with ms; stage 'total' is the median total."""
    paths = [("inprocess", results["inprocess"]), ("edsr_baseline", {"decode": results["edsr_baseline"]["decode"]})]
    paths += [(f"triton_{p}", v) for p, v in results.get("triton", {}).items()]
    rows = []
    for path, per_dir in paths:
        for direction, r in per_dir.items():
            peak = r.get("peak_rss_mb", r.get("client_peak_rss_mb"))
            rows.append({"path": path, "direction": direction, "stage": "total", "category": "total",
                         "ms": r["total_ms"], "peak_rss_mb": peak, "server_peak_rss_mb": r.get("server_peak_rss_mb")})
            for stage, ms in r["stages_ms"].items():
                rows.append({"path": path, "direction": direction, "stage": stage,
                             "category": CATEGORIES.get(stage, stage), "ms": ms, "peak_rss_mb": None,
                             "server_peak_rss_mb": None})
    return rows


def write_outputs(results: dict, out: Path) -> None:
    from .plots import plot_speed

    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.json").write_text(json.dumps(results, indent=2) + "\n")
    rows = flat_rows(results)
    with open(out / "speed.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: f"{v:.2f}" if isinstance(v, float) else ("" if v is None else v) for k, v in r.items()})
    plot_speed(results, rows, out / "speed.png")
