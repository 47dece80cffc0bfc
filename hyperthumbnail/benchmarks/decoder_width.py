"""`hyperthumbnail bench decoder-width`: what a wider decoder body would cost at 6K on this CPU.

Issue #24 widens the decoder only where that is no slower: oneDNN's bf16 kernels pad channels to
their vector blocks, so 24 and 32 channels can cost about the same on one CPU and not on another.
For each `--widths` value (`W`, or `WxB` for W features and B residual blocks; B defaults to the
shipped 16) a model of the shipped architecture with that shape (random weights: the time does
not depend on them) has its `decoder_body` exported as the product exports
it (the skip folded into the LR tail, uint8 output) and run by the default runtime and precision on
the features of a `--resolution` photo; the bodies alternate, `--repeats` times after a first call
each. Writes decoder_width.json with the times and each width's ratio to the first.
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..runtime.select import graph_precisions, make_runner
from .machine import machine_info, utc_now
from .speed import parse_resolution


def parse_shape(text: str) -> tuple[int, int]:
    """'32' -> (32, 16); '32x12' -> (32, 12): decoder features x residual blocks."""
    from ..model import ModelConfig

    width, _, blocks = text.strip().partition("x")
    return int(width), int(blocks) if blocks else ModelConfig().decoder_blocks


def export_body(width: int, path: Path, blocks: int | None = None) -> Path:
    """`decoder_body` of a random model with `width` decoder features and `blocks` residual blocks
    (default: the shipped number; the zero-initialised tail given weights too, so the graph is not
    constant-folded away)."""
    import torch

    from ..export.onnx_export import export_graph
    from ..model import HyperThumbnail, ModelConfig

    torch.manual_seed(width)
    shape = {"decoder_feats": width} | ({"decoder_blocks": blocks} if blocks else {})
    model = HyperThumbnail(ModelConfig(**shape)).eval()
    for module in model.decoder.modules():
        if isinstance(module, torch.nn.Conv2d) and not module.weight.any():
            torch.nn.init.normal_(module.weight, std=0.01)
    return export_graph(model, "decoder_body", path)


def run(args: argparse.Namespace) -> int:
    from ..model.decoder import HEAD_FEATURES_THUMBNAIL_CHANNELS

    if args.repeats < 1:
        raise ValueError("--repeats must be at least 1")
    widths = [w.strip() for w in args.widths.split(",")]
    shapes = {w: parse_shape(w) for w in widths}
    width, height = parse_resolution(args.resolution)
    precision = graph_precisions("openvino", "auto", names=("decoder_body",))["decoder_body"]
    blocks = (-(-height // 32), -(-width // 32))  # the padded photo's 8x8 blocks at LR
    rng = np.random.default_rng(0)
    # the body reads [thumbnail in two parts (6), its head conv's output (width)] (`Decoder.head_features`)
    features = {w: rng.random((1, HEAD_FEATURES_THUMBNAIL_CHANNELS + shapes[w][0], 8 * blocks[0], 8 * blocks[1]),
                               dtype=np.float32) for w in widths}
    times: dict[str, list[float]] = {w: [] for w in widths}
    with tempfile.TemporaryDirectory(prefix="hyperthumbnail-width-") as tmp:
        bodies = {w: make_runner(export_body(shapes[w][0], Path(tmp) / f"body_{w}.onnx", shapes[w][1]), "openvino",
                                 precision, args.threads) for w in widths}
        for w, body in bodies.items():
            body.run({"features": features[w]})  # kernels prepared for this shape
        for _ in range(args.repeats):
            for w, body in bodies.items():
                start = time.perf_counter()
                body.run({"features": features[w]})
                times[w].append(round((time.perf_counter() - start) * 1e3, 1))
    median = {w: statistics.median(t) for w, t in times.items()}
    record = {
        "meta": {"created": utc_now(), "command": shlex.join(["hyperthumbnail", *sys.argv[1:]]),
                 "machine": machine_info(), "precision": precision, "threads": args.threads,
                 "resolution": [width, height], "features_shapes": {w: list(f.shape) for w, f in features.items()}},
        "runs_ms": {str(w): t for w, t in times.items()},
        "median_ms": {str(w): m for w, m in median.items()},
        "ratio_to_first": {str(w): round(m / median[widths[0]], 3) for w, m in median.items()},
    }
    print(json.dumps({k: record[k] for k in ("median_ms", "ratio_to_first")}), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "decoder_width.json").write_text(json.dumps(record, indent=1) + "\n")
    return 0
