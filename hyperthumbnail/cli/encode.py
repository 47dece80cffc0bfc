"""`hyperthumbnail encode IN -o OUT.jpg`: photo -> HyperThumbnail JPEG."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import CLIError


def add_runtime_options(p: argparse.ArgumentParser) -> None:
    """Options shared by encode and decode: where the model runs."""
    p.add_argument("--weights", default=None, help="weights (.safetensors) or training checkpoint (.pt); default: shipped")
    p.add_argument("--runtime", choices=("onnx", "torch"), default="onnx",
                   help="in-process runtime; onnx gives the same bytes as the Triton server")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")


def make_pipeline(args: argparse.Namespace, scale: int = 4):
    from ..pipeline import Pipeline

    try:
        return Pipeline(args.weights, scale=scale, runtime=args.runtime, threads=args.threads)
    except FileNotFoundError as exc:
        raise CLIError(str(exc)) from exc


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "encode", help="encode a photo into a HyperThumbnail .jpg",
        description="Encode a photo (PNG, JPEG, ... any Pillow format; EXIF orientation applied, alpha "
        "composited over white) into a standard JPEG thumbnail SCALE times smaller per side, from which "
        "`decode` rebuilds the full photo. Prints the bitrate (8 * file bytes / input pixels) and time.",
    )
    p.add_argument("input", help="input image file")
    p.add_argument("-o", "--output", required=True, help="output .jpg path")
    p.add_argument("--scale", type=int, choices=(2, 4), default=4, help="downscaling factor per side")
    add_runtime_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..codec.images import load_image
    from ..metrics import bpp

    image = load_image(args.input)
    pipeline = make_pipeline(args, args.scale)
    if pipeline.scale != args.scale:
        raise CLIError(f"the weights are for scale {pipeline.scale}, not {args.scale}")
    start = time.perf_counter()
    data = pipeline.encode(image)
    elapsed = time.perf_counter() - start
    Path(args.output).write_bytes(data)
    h, w = image.shape[:2]
    print(f"{args.output}: {len(data)} bytes, {bpp(len(data), w, h):.4f} bpp for {w}x{h}, "
          f"encoded in {elapsed * 1e3:.0f} ms ({args.runtime})")
    return 0
