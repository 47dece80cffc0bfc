"""`hyperthumbnail bench decode-stages THUMBNAIL`: where a CLI decode's time goes, stage by stage.

The steps `hyperthumbnail decode` takes, timed in one process through the product's own code path
(`Pipeline`'s graphs, whose two decoder runners are wrapped in timers), `--repeats` times after one
untimed run that prepares the kernels for this shape: reading the thumbnail and its JPEG entropy
decoding (`decode_thumbnail`), the coefficient branch (`decoder_features`), the body
(`decoder_body`, whole or in tiles as the CLI runs it, with its tile copies), cropping to the photo's
size, and writing the PNG (`save_image`). The body's time is then split by OpenVINO's own
per-operation counters (PERF_COUNT) into convolutions and the layout/conversion work around them.
Last, the CLI itself in a fresh process: its wall time against the call and graph loading it
reports, the rest being the interpreter's start, imports, reading, writing and exit. Writes
decode_stages.json.
"""
from __future__ import annotations

import argparse
import collections
import json
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

from ..codec.images import save_image
from ..codec.steps import crop_image, decode_thumbnail
from ..pipeline import Pipeline
from ..weights import default_weights_path, file_sha256
from .cli_runtimes import run_cli
from .machine import machine_info, utc_now
from .speed_worker import StepTimer


class _Timed:
    """A graph runner whose calls add their wall time to `timer`'s step `name` (tiles add up)."""

    def __init__(self, runner, timer: StepTimer, name: str):
        self.runner, self.timer, self.name = runner, timer, name

    def run(self, feeds: dict) -> dict:
        with self.timer(self.name):
            return self.runner.run(feeds)

    def release_memory(self) -> None:
        self.runner.release_memory()


def body_operations(graph: Path, features, precision: str, threads: int) -> dict[str, float]:
    """ms per OpenVINO node type of one decoder_body call (after a first call), by PERF_COUNT."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(graph)), "CPU", {
        "INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
        "PERF_COUNT": True})
    request = compiled.create_infer_request()
    for _ in range(2):  # the second call's counters: kernels prepared
        request.infer({0: features}, share_inputs=True)
    ms: dict[str, float] = collections.defaultdict(float)
    for op in request.get_profiling_info():
        ms[op.node_type] += op.real_time.total_seconds() * 1e3
    return {k: round(v, 1) for k, v in sorted(ms.items(), key=lambda kv: -kv[1]) if v >= 0.05}


def run(args: argparse.Namespace) -> int:
    if args.repeats < 1:
        raise ValueError("--repeats must be at least 1")
    weights = Path(args.weights) if args.weights else default_weights_path(4)
    pipeline = Pipeline(weights, threads=args.threads)
    if pipeline.runtime != "openvino":
        raise ValueError("decode-stages times the default runtime (OpenVINO)")
    pipeline.load("decode")
    graphs = pipeline.graph_set
    timer = StepTimer()
    for name in ("decoder_features", "decoder_body"):
        graphs.runners[name] = _Timed(graphs.runners[name], timer, name)
    runs = []
    with tempfile.TemporaryDirectory(prefix="hyperthumbnail-stages-") as tmp:
        for repeat in range(args.repeats + 1):  # run 0: untimed, prepares the kernels for this shape
            timer.ms.clear()
            with timer("read_and_jpeg_entropy_decoding"):
                quantized, tables, hr_size = decode_thumbnail(Path(args.thumbnail).read_bytes(), pipeline.scale,
                                                              served_models=pipeline.served_models)
            with timer("decoder_graphs"):
                padded = graphs.reconstruct(quantized, tables)
            with timer("crop"):
                image = crop_image(padded, hr_size)
            with timer("png_write"):
                save_image(image, Path(tmp) / "decoded.png")
            if repeat:
                ms = timer.ms
                ms["body_tiles_and_copies"] = ms["decoder_graphs"] - ms["decoder_features"] - ms["decoder_body"]
                runs.append({k: round(v, 1) for k, v in ms.items()})
        features = graphs.runners["decoder_features"].run({"quantized": quantized[None], "tables": tables[None]})["features"]
        whole = padded.shape[0] * padded.shape[1] <= graphs.body_whole_pixels
        operations = body_operations(graphs.dir / "decoder_body.onnx", features, graphs.precisions["decoder_body"],
                                     args.threads) if whole else None
        threads = [] if not args.threads else ["--threads", str(args.threads)]
        cli = run_cli(["decode", str(Path(args.thumbnail).resolve()), "-o", str(Path(tmp) / "cli.png"),
                       "--weights", str(weights.resolve()), *threads])
    record = {
        "meta": {"created": utc_now(), "command": shlex.join(["hyperthumbnail", *sys.argv[1:]]),
                 "machine": machine_info(), "weights": weights.name, "weights_sha256": file_sha256(weights),
                 "thumbnail": Path(args.thumbnail).name, "photo_size": list(hr_size), "threads": args.threads,
                 "graphs": pipeline.describe(), "body_whole": whole, "repeats": args.repeats},
        "stages_median_ms": {k: round(statistics.median(r[k] for r in runs), 1) for k in runs[0]},
        "runs": runs,
        "body_operations_ms": operations,
        "cli": cli,
    }
    record["stages_median_ms"].pop("decoder_graphs")  # = features + body + body_tiles_and_copies
    print(json.dumps({k: record[k] for k in ("stages_median_ms", "body_operations_ms")}), flush=True)
    print(json.dumps(cli), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "decode_stages.json").write_text(json.dumps(record, indent=1) + "\n")
    return 0
