"""ONNX Runtime vs OpenVINO f32 vs OpenVINO bf16, per exported graph: time at one resolution
and the rate-distortion effect on Kodak, in one run. This is how `runtime.graphs` chose its
per-graph precisions; rerun it on another CPU to check the choice there.

    python -m hyperthumbnail.benchmarks.runtimes --image PHOTO --kodak DIR --out runtimes.json

Timing: the best of `--repeats` calls after one warm-up, each graph on its own (the same input
for every runtime: ONNX Runtime's output of the step before). RD: each graph swapped on its own
(the other graphs stay ONNX Runtime) and all together, bpp of the whole file and PSNR on RGB.
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..codec.images import crop_to, load_image, pad_to_multiple
from ..codec.steps import decode_thumbnail, encode_thumbnail
from ..metrics import psnr
from ..runtime.graphs import export_graphs, make_runner
from ..runtime.openvino import OpenVinoRunner, cpu_has_native_bf16
from .machine import machine_info, utc_now

# (runtime, precision): "openvino_bf16" is the default's (the encoder's tail in f32, `runtime.select`),
# "openvino_bf16_whole" every op of every graph in bf16 (the default before 2026-12-07).
VARIANTS = {"onnxruntime": ("onnx", "f32"), "openvino_f32": ("openvino", "f32"), "openvino_bf16": ("openvino", "bf16"),
            "openvino_bf16_whole": ("openvino", "bf16")}
GRAPHS = ("encoder", "qpm", "decoder_features", "decoder_body", "decoder")


def _runner(path: Path, variant: str):
    runtime, precision = VARIANTS[variant]
    if variant == "openvino_bf16_whole":
        return OpenVinoRunner(path, precision="bf16")  # no f32 tail
    return make_runner(path, runtime, precision)


def _best(call: Callable[[], object], repeats: int) -> float:
    call()  # warm-up: OpenVINO prepares its kernels for a new shape on the first call
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def _float_image(image: np.ndarray) -> np.ndarray:
    chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
    chw /= np.float32(255.0)
    return chw[None]


def graph_times(graph_dir: Path, image: np.ndarray, repeats: int = 3) -> dict:
    """Seconds per graph per variant on `image` (padded HxWx3 uint8), with output agreement."""
    ort = {name: make_runner(graph_dir / f"{name}.onnx", "onnx") for name in GRAPHS}
    feeds = {"encoder": {"image": _float_image(image)}}
    coefficients = ort["encoder"].run(feeds["encoder"])["coefficients"]
    feeds["qpm"] = {"coefficients": coefficients, "table_scale": np.ones((1, 1), np.float32)}
    q = ort["qpm"].run(feeds["qpm"])
    feeds["decoder"] = feeds["decoder_features"] = {"quantized": q["quantized"], "tables": q["tables"]}
    feeds["decoder_body"] = {"features": ort["decoder_features"].run(feeds["decoder_features"])["features"]}
    reference = {name: ort[name].run(feeds[name]) for name in GRAPHS}
    out: dict = {}
    for variant, (runtime, _) in VARIANTS.items():
        for name in GRAPHS:
            runner = ort[name] if runtime == "onnx" else _runner(graph_dir / f"{name}.onnx", variant)
            seconds = _best(lambda runner=runner, name=name: runner.run(feeds[name]), repeats)
            result = runner.run(feeds[name])
            diff = {key: float(np.abs(result[key].astype(np.float64) - reference[name][key]).max())
                    for key in reference[name]}
            out.setdefault(name, {})[variant] = {"seconds": round(seconds, 4), "max_abs_diff_vs_onnxruntime": diff}
    return out


def kodak_rd(graph_dir: Path, kodak: Path, scale: int = 4) -> dict:
    """Mean bpp / PSNR on Kodak with each graph (and all) on each variant, the rest on ONNX Runtime."""
    files = sorted(p for p in kodak.iterdir() if p.suffix.lower() in (".png", ".jpg", ".ppm"))
    if not files:
        raise SystemExit(f"no images in {kodak}")
    runners = {(name, variant): _runner(graph_dir / f"{name}.onnx", variant)
               for name in ("encoder", "decoder") for variant in VARIANTS}
    qpm = make_runner(graph_dir / "qpm.onnx", "onnx")
    setups = {"onnxruntime": ("onnxruntime", "onnxruntime")}
    for variant in ("openvino_f32", "openvino_bf16", "openvino_bf16_whole"):
        setups[f"encoder {variant}"] = (variant, "onnxruntime")
        setups[f"decoder {variant}"] = ("onnxruntime", variant)
        setups[f"both {variant}"] = (variant, variant)
    setups["encoder openvino_f32 + decoder openvino_bf16"] = ("openvino_f32", "openvino_bf16")
    rows: dict[str, list[tuple[float, float]]] = {key: [] for key in setups}
    for path in files:
        image = load_image(path)
        padded = pad_to_multiple(image, 8 * scale)
        size = (image.shape[1], image.shape[0])
        thumbnails = {}
        for variant in {enc for enc, _ in setups.values()}:
            c = runners["encoder", variant].run({"image": _float_image(padded)})["coefficients"]
            q = qpm.run({"coefficients": c, "table_scale": np.ones((1, 1), np.float32)})
            thumbnails[variant] = encode_thumbnail(q["quantized"][0], q["tables"][0], size, scale)
        for key, (enc, dec) in setups.items():
            data = thumbnails[enc]
            quantized, tables, _ = decode_thumbnail(data, scale)
            decoded = runners["decoder", dec].run({"quantized": quantized[None], "tables": tables[None]})["image"][0]
            pixels = np.clip(np.rint(crop_to(decoded.transpose(1, 2, 0), *size) * 255), 0, 255).astype(np.uint8)
            rows[key].append((len(data) * 8 / (size[0] * size[1]), psnr(pixels, image)))
    base_bpp = float(np.mean([r[0] for r in rows["onnxruntime"]]))
    base_psnr = float(np.mean([r[1] for r in rows["onnxruntime"]]))
    summary = {}
    for key, values in rows.items():
        bpp, quality = float(np.mean([v[0] for v in values])), float(np.mean([v[1] for v in values]))
        summary[key] = {"bpp": round(bpp, 5), "psnr": round(quality, 4),
                        "delta_bpp": round(bpp - base_bpp, 5), "delta_psnr": round(quality - base_psnr, 4)}
    return {"images": len(files), "setups": summary}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", type=Path, required=True, help="photo to time the graphs on (cropped)")
    parser.add_argument("--size", default="1920x1088", help="crop WxH from the photo's centre (default 1920x1088)")
    parser.add_argument("--kodak", type=Path, help="folder of Kodak images for the RD effect (skipped if absent)")
    parser.add_argument("--graphs", type=Path, help="exported graph folder (default: the pipeline's cache)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from ..runtime.graphs import graph_cache_dir
    from ..weights import default_weights_path

    graph_dir = args.graphs or graph_cache_dir(default_weights_path(4))
    graph_dir.mkdir(parents=True, exist_ok=True)
    export_graphs(None, graph_dir, 4, names=GRAPHS + ("qpm",))
    width, height = (int(v) for v in args.size.lower().split("x"))
    photo = load_image(args.image, max_pixels=None)
    top, left = max(0, (photo.shape[0] - height) // 2), max(0, (photo.shape[1] - width) // 2)
    crop = pad_to_multiple(photo[top:top + height, left:left + width], 32)
    record = {"created": utc_now(), "machine": machine_info(), "native_bf16": cpu_has_native_bf16(),
              "image": args.image.name, "size": list(crop.shape[1::-1]), "repeats": args.repeats,
              "graph_seconds": graph_times(graph_dir, crop, args.repeats)}
    print(json.dumps(record["graph_seconds"], indent=1), flush=True)
    if args.kodak and args.kodak.is_dir():
        record["kodak_rd"] = kodak_rd(graph_dir, args.kodak)
        print(json.dumps(record["kodak_rd"], indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
