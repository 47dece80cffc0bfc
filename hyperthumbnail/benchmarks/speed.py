"""`bench speed`: encode and decode side by side in one run, per resolution (1080p, 4K, 6K by
default) and runtime variant (ONNX Runtime f32, OpenVINO f32, OpenVINO at its default precision),
in-process and through Triton (HTTP, gRPC, system shared memory), with peak RSS, the compute
floor of this CPU, and an EDSR-baseline decoder on ONNX Runtime at the largest resolution.

Order, chosen for fair ratios on a machine whose load drifts: the in-process measurements of
all variants interleaved per resolution; then, per variant, its own model repository on its own
embedded tritonserver (one server at a time, stopped before the next, so memory and CPU are
clean), every resolution and protocol on it.

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
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..weights import default_weights_path, file_sha256
from .machine import machine_info, utc_now
from .memory import TreeRSS

SIX_K = (6144, 4096)
NAMED_RESOLUTIONS = {"1080p": (1920, 1080), "4k": (3840, 2160), "6k": SIX_K}
DEFAULT_RESOLUTIONS = ("1080p", "4k", "6k")
# Variant name -> (runtime, precision) as `Pipeline` and `build_repository` take them.
VARIANTS = {"onnx": ("onnx", "f32"), "openvino-f32": ("openvino", "f32"), "openvino": ("openvino", "auto")}
DEFAULT_VARIANT = "openvino"  # the pipeline's and the repository's default
PROTOCOLS = ("http", "grpc", "shm")
DIRECTIONS = ("encode", "decode")
# Default timed runs: 3, but 2 from this many pixels on (6K: each run is tens of seconds).
LARGE_PIXELS = 16_000_000
# Step name -> the category bars are stacked by.
CATEGORIES = {
    "preprocess": "pixels", "postprocess": "pixels",
    "encoder": "neural", "qpm": "neural", "decoder": "neural", "edsr": "neural",
    "entropy_coding": "jpeg coding", "jpeg_encode": "jpeg coding", "jpeg_decode": "jpeg coding",
    "server_overhead": "server queue/scheduling", "network_serialization": "network/serialization",
}


def parse_resolution(text: str) -> tuple[int, int]:
    """'1080p' / '4k' / '6k' -> (W, H); 'WxH' -> (W, H)."""
    named = NAMED_RESOLUTIONS.get(text.strip().lower())
    if named:
        return named
    match = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise ValueError(f"resolution must be one of {', '.join(NAMED_RESOLUTIONS)} or WxH (e.g. 1024x768), "
                         f"got {text!r}")
    return int(match[1]), int(match[2])


def parse_resolutions(text: str) -> list[tuple[int, int]]:
    """'1080p,4k,6k' -> [(1920, 1080), (3840, 2160), (6144, 4096)], duplicates refused."""
    sizes = [parse_resolution(t) for t in text.split(",") if t.strip()]
    if not sizes:
        raise ValueError("no resolution given")
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"resolution listed twice in {text!r}")
    return sizes


def parse_variants(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise ValueError(f"unknown variants {unknown or [text]}; choose from {', '.join(VARIANTS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"variant listed twice in {text!r}")
    return names


def parse_repeats(text: str, n_resolutions: int) -> list[int]:
    """'3' -> the same for every resolution; '3,3,2' -> one per resolution."""
    try:
        values = [int(t) for t in text.split(",")]
    except ValueError:
        raise ValueError(f"--repeats must be a number or one number per resolution, got {text!r}") from None
    if len(values) == 1:
        values *= n_resolutions
    if len(values) != n_resolutions:
        raise ValueError(f"--repeats has {len(values)} values for {n_resolutions} resolutions")
    if min(values) < 1:
        raise ValueError("--repeats must be at least 1")
    return values


def default_repeats(sizes: list[tuple[int, int]]) -> list[int]:
    return [2 if w * h >= LARGE_PIXELS else 3 for w, h in sizes]


def res_key(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


@dataclass
class SpeedConfig:
    resolutions: list[tuple[int, int]] = field(default_factory=lambda: [NAMED_RESOLUTIONS[r] for r in DEFAULT_RESOLUTIONS])
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    url: str | None = None          # a running server's HTTP host:port; None: start one per variant
    grpc_url: str | None = None
    protocols: list[str] = field(default_factory=lambda: list(PROTOCOLS))
    weights: Path | None = None
    image: Path | None = None
    data_root: Path = Path("../shared/datasets")
    repeats: list[int] | None = None  # per resolution; None: default_repeats
    warmup: int = 1
    threads: int = 0
    edsr: bool = True
    probe_repeats: int = 7
    model_repository: Path = Path("build/bench/model_repository")  # one folder per variant inside
    out: Path = Path("benchmarks/results")
    command: str = ""


def input_image(cfg: SpeedConfig, width: int, height: int) -> tuple[np.ndarray, str]:
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
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        base = np.stack([x / width, y / height, 0.5 + 0.3 * np.sin(x / 7) * np.cos(y / 5)], axis=-1)
        image = np.clip(base * 200 + 25 + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        return image, "synthetic photo-like image"
    photo = Image.fromarray(load_image(path, max_pixels=None))
    k = max(width / photo.width, height / photo.height)
    size = (max(width, math.ceil(photo.width * k)), max(height, math.ceil(photo.height * k)))
    photo = photo.resize(size, Image.LANCZOS)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    image = np.asarray(photo.crop((left, top, left + width, top + height)))
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

    return {f"{width}x{height}": at(width, height), res_key(SIX_K): at(*SIX_K)}


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def neural_ms(stages: dict[str, float]) -> float:
    return sum(ms for stage, ms in stages.items() if CATEGORIES.get(stage) == "neural")


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


def with_floor(entry: dict, floor: float) -> dict:
    """Add the compute floor (ms) and how many times it the measurement took, total and neural."""
    neural = neural_ms(entry["stages_ms"])
    return {**entry, "neural_ms": neural, "floor_ms": floor, "over_floor": entry["total_ms"] / floor,
            "neural_over_floor": neural / floor}


class SpeedBenchmark:
    def __init__(self, cfg: SpeedConfig):
        self.cfg = cfg
        self.weights = Path(cfg.weights) if cfg.weights else default_weights_path()
        if not self.weights.is_file():
            raise FileNotFoundError(f"weights not found: {self.weights}")
        if not cfg.resolutions:
            raise ValueError("no resolution to measure")
        for variant in cfg.variants:
            if variant not in VARIANTS:
                raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
        unknown = sorted(set(cfg.protocols) - set(PROTOCOLS))
        if unknown:
            raise ValueError(f"unknown protocols {unknown}; choose from {', '.join(PROTOCOLS)}")
        self.repeats = cfg.repeats or default_repeats(cfg.resolutions)
        if len(self.repeats) != len(cfg.resolutions) or min(self.repeats) < 1:
            raise ValueError("repeats: one number >= 1 per resolution")
        if cfg.warmup < 1:
            raise ValueError("--warmup must be at least 1 (the first run is the reference output)")
        if cfg.grpc_url and not cfg.url:
            raise ValueError("--grpc-url needs --url (the HTTP endpoint of the same server, for its statistics)")
        if cfg.url and "grpc" in cfg.protocols and not cfg.grpc_url:
            raise ValueError("timing gRPC against a running server needs --grpc-url (or leave grpc out of --protocols)")
        if cfg.url and len(cfg.variants) != 1:
            raise ValueError("a running server (--url) serves one variant: name it with --variants "
                             f"(one of {', '.join(VARIANTS)})")
        self._n = 0

    # ------------------------------------------------------------------ one measurement
    def _worker(self, stage: str, work: Path, variant_dir: Path | None = None, variant: str | None = None,
                **extra) -> dict:
        """Run one stage in its own process; -> its RESULT."""
        cfg = self.cfg
        runtime, precision = VARIANTS[variant] if variant else (None, None)
        spec = {"stage": stage, "workdir": str(work), "variant_dir": str(variant_dir or work),
                "weights": str(self.weights), "runtime": runtime, "precision": precision, "threads": cfg.threads,
                "warmup": cfg.warmup, **extra}
        self._n += 1
        spec_path, result_path = work / f"{self._n:03d}-{stage}.spec.json", work / f"{self._n:03d}-{stage}.result.json"
        spec_path.write_text(json.dumps(spec))
        proc = subprocess.run([sys.executable, "-m", "hyperthumbnail.benchmarks.speed_worker", str(spec_path),
                               str(result_path)], capture_output=True, text=True)
        if proc.returncode < 0:  # the kernel's OOM killer is the usual SIGKILL at 6K
            raise RuntimeError(f"speed stage {stage} ({variant}) was killed by {signal.Signals(-proc.returncode).name}"
                               + (" (out of memory?)" if proc.returncode == -signal.SIGKILL else ""))
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise RuntimeError(f"speed stage {stage} ({variant}) failed (exit {proc.returncode}):\n{tail}")
        return json.loads(result_path.read_text())

    def _edsr_input(self, work: Path, image: np.ndarray, size: tuple[int, int]) -> dict:
        """The EDSR baseline's thumbnail: Pillow bicubic /4, JPEG 4:4:4 at the quality closest to our file."""
        from ..codec.images import bicubic_downscale
        from ..metrics import bpp as bits_per_pixel
        from .jpeg import closest_quality, encode_jpeg

        w, h = size
        lr = bicubic_downscale(image, 4)
        files: dict[int, bytes] = {}

        def bpp_at(q: int) -> float:
            files.setdefault(q, encode_jpeg(lr, q))
            return bits_per_pixel(len(files[q]), w, h)

        target = bits_per_pixel((work / "decode_input.jpg").stat().st_size, w, h)
        quality = closest_quality(bpp_at, target)
        (work / "edsr_lr.jpg").write_bytes(files[quality])
        return {"jpeg_quality": quality, "thumbnail_bytes": len(files[quality])}

    # ------------------------------------------------------------------ the run
    def plan(self, scale: int = 4) -> list[str]:
        """The measurements in order (the progress bar's steps)."""
        cfg = self.cfg
        keys = [res_key(s) for s in cfg.resolutions]
        plan = ["peak rate"]
        for key in keys:
            plan += [f"inprocess {d} {key} {v}" for d in DIRECTIONS for v in cfg.variants]
        if cfg.edsr and scale == 4:
            plan.append(f"edsr decode {res_key(max(cfg.resolutions, key=lambda s: s[0] * s[1]))}")
        if cfg.protocols:
            for v in cfg.variants if cfg.url is None else cfg.variants[:1]:
                plan += [f"triton {p} {d} {key} {v}" for key in keys for p in cfg.protocols for d in DIRECTIONS]
        return plan

    def run(self) -> dict:
        cfg = self.cfg
        started = time.monotonic()
        from ..runtime.graphs import load_graphs

        graphs = load_graphs(self.weights, runtime="onnx", precision="f32")  # exports once; no session yet
        scale = graphs.scale
        results: dict = {"meta": self.meta(scale)}
        sizes = {res_key(s): s for s in cfg.resolutions}
        with tempfile.TemporaryDirectory(prefix="hyperthumbnail-speed-") as tmp, \
                tqdm(total=len(self.plan(scale)), desc="speed", unit="step", dynamic_ncols=True) as bar:
            root = Path(tmp)

            def step(label: str) -> None:
                bar.set_postfix_str(label)

            step("peak rate")
            engines = sorted({(VARIANTS[v][0], p) for v in cfg.variants
                              for p in graph_precision_values(v)})
            results["peak_rate"] = self._worker("peak_rate", root, engines=[list(e) for e in engines],
                                                repeats=cfg.probe_repeats)
            bar.update()

            dirs: dict[str, Path] = {}
            results["inputs"], results["gmacs"], results["speed"] = {}, {}, {}
            for (key, (w, h)), repeats in zip(sizes.items(), self.repeats):
                step(f"input {key}")
                dirs[key] = root / key
                for v in cfg.variants:
                    (dirs[key] / v).mkdir(parents=True)
                image, source = input_image(cfg, w, h)
                np.save(dirs[key] / "input.npy", image)
                del image
                results["inputs"][key] = {"input": source, "repeats": repeats}
                results["gmacs"][key] = self._gmacs(graphs.dir, w, h, scale)
                results["speed"][key] = {v: {} for v in cfg.variants}
            results["floor_ms"] = {key: {v: floors(results["gmacs"][key], v, results["peak_rate"]["peak_gmac_per_s"])
                                         for v in cfg.variants} for key in sizes}

            for (key, size), repeats in zip(sizes.items(), self.repeats):
                self._inprocess(results, key, size, repeats, dirs[key], bar, step)

            if cfg.edsr and scale == 4:
                results["edsr_baseline"] = self._edsr(results, sizes, dirs, graphs.dir, root, bar, step)
            elif cfg.edsr:
                results["meta"]["edsr_baseline"] = f"not measured: the EDSR baseline is 4x, these weights are {scale}x"

            if cfg.protocols:
                results["meta"]["triton"] = self._triton(results, sizes, dirs, scale, bar, step)
        results["ratios"] = ratios(results)
        results["meta"]["elapsed_s"] = round(time.monotonic() - started, 1)
        write_outputs(results, Path(cfg.out))
        return results

    def _gmacs(self, graph_dir: Path, width: int, height: int, scale: int) -> dict:
        from .compute_floor import DIRECTION_GRAPHS, graph_gmacs

        per_graph = graph_gmacs(graph_dir, width, height, scale)
        return {**per_graph, **{d: round(sum(per_graph[g] for g in graphs), 3) for d, graphs in DIRECTION_GRAPHS.items()}}

    def _inprocess(self, results: dict, key: str, size: tuple[int, int], repeats: int, work: Path,
                   bar: tqdm, step: Callable[[str], None]) -> None:
        """Encode with every variant, then decode the first variant's thumbnail with every variant."""
        cfg = self.cfg
        facts: dict = {"thumbnail_bytes": {}, "bpp": {}}
        for direction in DIRECTIONS:
            for v in cfg.variants:
                step(f"inprocess {direction} {key} {v}")
                raw = self._worker(f"inprocess_{direction}", work, work / v, v, repeats=repeats, hr_size=list(size))
                entry = with_floor(summarize_inprocess(raw), results["floor_ms"][key][v][direction])
                results["speed"][key][v]["inprocess"] = {**results["speed"][key][v].get("inprocess", {}), direction: entry}
                if direction == "encode":
                    facts["thumbnail_bytes"][v] = entry["thumbnail_bytes"]
                    facts["bpp"][v] = 8 * entry["thumbnail_bytes"] / (size[0] * size[1])
                    if v == cfg.variants[0]:
                        shutil.copyfile(work / v / "thumbnail.jpg", work / "decode_input.jpg")
                bar.update()
        facts["decode_input"] = f"the thumbnail made by variant {cfg.variants[0]} (every variant decodes it)"
        results["inputs"][key].update(facts)

    def _edsr(self, results: dict, sizes: dict, dirs: dict, graph_dir: Path, root: Path, bar: tqdm,
              step: Callable[[str], None]) -> dict:
        """EDSR on ONNX Runtime at the largest resolution, against our decoder there."""
        from ..export.edsr import EDSR_SHAPE, export_edsr

        key = max(sizes, key=lambda k: sizes[k][0] * sizes[k][1])
        size, work = sizes[key], dirs[key]
        step(f"edsr decode {key}")
        edsr_path = export_edsr(work / "edsr.onnx")
        facts = self._edsr_input(work, np.load(work / "input.npy"), size)
        repeats = self.repeats[list(sizes).index(key)]
        decode = {**summarize_inprocess(self._worker("edsr_decode", work, repeats=repeats, hr_size=list(size))), **facts}
        bar.update()
        from ..runtime.graphs import export_graphs

        export_graphs(self.weights, graph_dir, 4, names=("decoder",))  # the unsplit decoder, for its MACs
        compared = "onnx" if "onnx" in self.cfg.variants else self.cfg.variants[0]
        return {"resolution": key, "decode": decode, "compared_with": compared,
                "model": {**EDSR_SHAPE, "scale": 4, "weights": "random (seed 0)", "runtime": "onnx f32"},
                "gmacs": decoder_gmacs(graph_dir / "decoder.onnx", edsr_path, *size, 4)}

    def _triton(self, results: dict, sizes: dict, dirs: dict, scale: int, bar: tqdm,
                step: Callable[[str], None]) -> dict:
        """Per variant: its repository on its own server (one at a time); every resolution and protocol."""
        cfg = self.cfg
        facts: dict = {"server": f"external server at {cfg.url}" if cfg.url else
                       "embedded tritonserver (nvidia-pytriton wheel), CPU model repository per variant, "
                       "one server at a time", "repositories": {}}
        for v in cfg.variants if cfg.url is None else cfg.variants[:1]:
            server = None
            if cfg.url is None:
                from ..serving.repository import build_repository
                from ..serving.server_process import TritonServer, free_port

                runtime, precision = VARIANTS[v]
                step(f"repository {v}")
                repo = build_repository(Path(cfg.model_repository) / v, weights=self.weights, scale=scale,
                                        runtime=runtime, precision=precision)
                facts["repositories"][v] = str(repo)
                server = TritonServer(repo, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())
                step(f"starting tritonserver ({v})")
                server.start(timeout=300)
                urls = {"http_url": server.http_url, "grpc_url": server.grpc_url}
            else:
                urls = {"http_url": cfg.url, "grpc_url": cfg.grpc_url}
            try:
                for (key, size), repeats in zip(sizes.items(), self.repeats):
                    for protocol in cfg.protocols:
                        for direction in DIRECTIONS:
                            step(f"triton {protocol} {direction} {key} {v}")
                            with TreeRSS() as rss:
                                raw = self._worker(f"triton_{direction}", dirs[key], dirs[key] / v, v, protocol=protocol,
                                                   repeats=repeats, hr_size=list(size), **urls)
                            entry = with_floor(summarize_triton(raw, rss.peak / 2**20 if server else None),
                                               results["floor_ms"][key][v][direction])
                            results["speed"][key][v].setdefault(f"triton_{protocol}", {})[direction] = entry
                            bar.update()
            finally:
                if server is not None:
                    server.stop()
        return facts

    def meta(self, scale: int) -> dict:
        cfg = self.cfg
        from ..runtime.select import graph_precisions

        return {
            "date": utc_now(),
            "command": cfg.command,
            "machine": machine_info(),
            "resolutions": [res_key(s) for s in cfg.resolutions],
            "variants": {v: {"runtime": VARIANTS[v][0], "precision": VARIANTS[v][1],
                             "graph_precisions": graph_precisions(*VARIANTS[v])} for v in cfg.variants},
            "protocols": list(cfg.protocols),
            "repeats": {res_key(s): r for s, r in zip(cfg.resolutions, self.repeats)},
            "warmup": cfg.warmup,
            "scale": scale,
            "statistic": "median of the repeats (breakdowns: median per step in-process; means from Triton's "
                         "statistics for the server side)",
            "threads": cfg.threads or "all cores",
            "weights": {"path": str(self.weights), "sha256": file_sha256(self.weights)},
        }


def graph_precision_values(variant: str) -> set[str]:
    """The precisions a variant's graphs run at on this CPU ({'f32'} or {'f32', 'bf16'})."""
    from ..runtime.select import graph_precisions

    return set(graph_precisions(*VARIANTS[variant]).values())


def floors(gmacs: dict, variant: str, peak: dict[str, float]) -> dict[str, float]:
    from ..runtime.select import graph_precisions
    from .compute_floor import floor_ms

    return floor_ms(gmacs, graph_precisions(*VARIANTS[variant]), peak)


# ---------------------------------------------------------------------- ratios and outputs
def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def ratios(results: dict) -> dict:
    """How many times longer the first thing takes than the second (None: one was not measured)."""
    speed = results["speed"]
    out: dict = {"onnx_over": {}, "triton_over_inprocess": {}}
    for variant in (v for v in VARIANTS if v != "onnx"):
        per_res = {}
        for key, per_variant in speed.items():
            if "onnx" not in per_variant or variant not in per_variant:
                continue
            a, b = per_variant["onnx"], per_variant[variant]
            per_res[key] = {d: {
                "inprocess": _ratio(a["inprocess"][d]["total_ms"], b["inprocess"][d]["total_ms"]),
                "inprocess_neural": _ratio(a["inprocess"][d]["neural_ms"], b["inprocess"][d]["neural_ms"]),
                "triton_http": _ratio(a.get("triton_http", {}).get(d, {}).get("total_ms"),
                                      b.get("triton_http", {}).get(d, {}).get("total_ms")),
            } for d in DIRECTIONS}
        if per_res:
            out["onnx_over"][variant] = per_res
    six_k = out["onnx_over"].get(DEFAULT_VARIANT, {}).get(res_key(SIX_K))
    if six_k:  # the headline: 6K decode end to end, ONNX Runtime over the default
        out["decode_6k_onnx_over_openvino"] = {"inprocess": six_k["decode"]["inprocess"],
                                               "triton_http": six_k["decode"]["triton_http"]}
    for key, per_variant in speed.items():
        for variant, paths in per_variant.items():
            inproc = paths["inprocess"]
            out["triton_over_inprocess"].setdefault(key, {})[variant] = {
                f"{path.removeprefix('triton_')}_{d}": _ratio(r["total_ms"], inproc[d]["total_ms"])
                for path, per_dir in paths.items() if path != "inprocess" for d, r in per_dir.items()}
    edsr = results.get("edsr_baseline")
    if edsr:
        ours = speed[edsr["resolution"]][edsr["compared_with"]]["inprocess"]["decode"]
        theirs = edsr["decode"]
        six = edsr["gmacs"][res_key(SIX_K)]
        out["edsr_over_ours_decode_total"] = _ratio(theirs["total_ms"], ours["total_ms"])
        out["edsr_over_ours_decode_network"] = _ratio(theirs["stages_ms"]["edsr"], ours["neural_ms"])
        out["edsr_over_ours_gmacs_6k"] = _ratio(six["edsr_baseline"], six["hyperthumbnail_decoder"])
    return out


CSV_FIELDS = ("resolution", "variant", "path", "direction", "stage", "category", "ms", "floor_ms", "over_floor",
              "peak_rss_mb", "server_peak_rss_mb", "equal_to_inprocess")


def flat_rows(results: dict) -> list[dict]:
    """One row per (resolution, variant, path, direction, stage) with ms; stage 'total' is the
    median total and carries the floor and the peak memory."""
    entries = [(key, variant, path, direction, r)
               for key, per_variant in results["speed"].items() for variant, paths in per_variant.items()
               for path, per_dir in paths.items() for direction, r in per_dir.items()]
    if "edsr_baseline" in results:
        e = results["edsr_baseline"]
        entries.append((e["resolution"], "edsr_baseline", "inprocess", "decode", e["decode"]))
    rows = []
    for key, variant, path, direction, r in entries:
        base = {"resolution": key, "variant": variant, "path": path, "direction": direction}
        rows.append({**base, "stage": "total", "category": "total", "ms": r["total_ms"],
                     "floor_ms": r.get("floor_ms"), "over_floor": r.get("over_floor"),
                     "peak_rss_mb": r.get("peak_rss_mb", r.get("client_peak_rss_mb")),
                     "server_peak_rss_mb": r.get("server_peak_rss_mb"), "equal_to_inprocess": r.get("equal_to_inprocess")})
        for stage, ms in r["stages_ms"].items():
            rows.append({**base, "stage": stage, "category": CATEGORIES.get(stage, stage), "ms": ms,
                         "floor_ms": None, "over_floor": None, "peak_rss_mb": None, "server_peak_rss_mb": None,
                         "equal_to_inprocess": None})
    return rows


def write_outputs(results: dict, out: Path) -> None:
    from .plots import plot_speed

    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.json").write_text(json.dumps(results, indent=2) + "\n")
    rows = flat_rows(results)
    with open(out / "speed.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(CSV_FIELDS))
        w.writeheader()
        for r in rows:
            w.writerow({k: f"{v:.2f}" if isinstance(v, float) else ("" if v is None else v) for k, v in r.items()})
    plot_speed(results, out / "speed.png")
