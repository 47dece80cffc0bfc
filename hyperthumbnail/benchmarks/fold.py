"""`hyperthumbnail bench fold`: the decoder body with its bicubic skip folded into the LR tail (what
export ships, `export/fold.py`) against the readable full-resolution form, side by side.

Both `decoder_body` graphs are exported from the same weights into one folder and run by the same
runtime at the same precision (default: OpenVINO, bf16 where native). Quality: every photo of
`--photos` is encoded once (the product's encode), its features made once, and rebuilt by each
body; HR PSNR against the photo and the two rebuilt photos against each other. Speed: the body
alone on the features of a `--resolution` photo, the two graphs alternating. Writes `fold.json`.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..client.perf_inputs import make_input
from ..codec.images import crop_to, list_images, load_image
from ..codec.steps import pad_photo
from ..metrics import psnr
from ..runtime.graphs import load_graphs
from ..runtime.select import make_runner
from ..weights import default_weights_path, load_model
from .machine import machine_info, utc_now

FORMS = ("unfolded", "folded")


def _export_bodies(weights: Path, folder: Path) -> dict[str, Path]:
    from ..export.onnx_export import export_graph

    model = load_model(weights)
    return {form: export_graph(model, "decoder_body", folder / f"decoder_body_{form}.onnx", fold_skip=form == "folded")
            for form in FORMS}


def run(args: argparse.Namespace) -> int:
    weights = Path(args.weights) if args.weights else default_weights_path(4)
    graphs = load_graphs(weights, "openvino", args.precision, args.threads, tile_pixels=None)
    precision = graphs.precisions["decoder_body"]  # both bodies run as the shipped one does
    with tempfile.TemporaryDirectory(prefix="hyperthumbnail-fold-") as tmp:
        bodies = {form: make_runner(path, "openvino", precision, args.threads)
                  for form, path in _export_bodies(weights, Path(tmp)).items()}

        def features(image: np.ndarray) -> np.ndarray:
            q, t = graphs.quantize(graphs.coefficients(pad_photo(image, graphs.scale)[0]))
            return graphs.runners["decoder_features"].run({"quantized": q[None], "tables": t[None]})["features"]

        rows = []
        for path in tqdm(list_images(args.photos), desc="quality", dynamic_ncols=True):
            image = load_image(path)
            f = features(image)
            out = {form: crop_to(bodies[form].run({"features": f})["image"][0], image.shape[1], image.shape[0])
                   for form in FORMS}
            rows.append({"photo": Path(path).name, **{f"hr_psnr_{form}": psnr(out[form], image) for form in FORMS},
                         "folded_vs_unfolded_db": psnr(out["folded"], out["unfolded"]),
                         "max_level_difference": int(np.abs(out["folded"].astype(np.int16) - out["unfolded"]).max())})

        speed_input = make_input(args.resolution)  # a real photo resized to it (perf's inputs)
        big = features(speed_input.image)
        for form in FORMS:
            bodies[form].run({"features": big})  # first run: kernels prepared for this shape
        times: dict[str, list[float]] = {form: [] for form in FORMS}
        for _ in tqdm(range(args.repeats), desc=f"body at {args.resolution}", dynamic_ncols=True):
            for form in FORMS:
                started = time.perf_counter()
                bodies[form].run({"features": big})
                times[form].append(time.perf_counter() - started)

    summary = {
        "mean_hr_psnr": {form: statistics.mean(r[f"hr_psnr_{form}"] for r in rows) for form in FORMS},
        "min_folded_vs_unfolded_db": min(r["folded_vs_unfolded_db"] for r in rows),
        "max_level_difference": max(r["max_level_difference"] for r in rows),
        "body_median_ms": {form: 1e3 * statistics.median(times[form]) for form in FORMS},
    }
    summary["speedup"] = summary["body_median_ms"]["unfolded"] / summary["body_median_ms"]["folded"]
    record = {"meta": {"date": utc_now(), "machine": machine_info(), "weights": weights.name, "precision": precision,
                       "photos": str(args.photos), "resolution": args.resolution, "speed_input": speed_input.source,
                       "repeats": args.repeats,
                       "body_features_shape": list(big.shape),
                       "times_ms": {form: [round(1e3 * t, 1) for t in times[form]] for form in FORMS}},
              "summary": summary, "photos": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fold.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"HR PSNR unfolded {summary['mean_hr_psnr']['unfolded']:.4f} / folded {summary['mean_hr_psnr']['folded']:.4f} dB; "
          f"folded vs unfolded >= {summary['min_folded_vs_unfolded_db']:.2f} dB; body at {args.resolution}: "
          f"{summary['body_median_ms']['unfolded']:.0f} -> {summary['body_median_ms']['folded']:.0f} ms "
          f"({summary['speedup']:.2f}x) -> {out / 'fold.json'}")
    return 0
