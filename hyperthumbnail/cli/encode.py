"""`hyperthumbnail encode IN -o OUT.jpg`: photo -> HyperThumbnail JPEG."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import batch, rate_options
from .errors import CLIError
from .options import add_runtime_options, add_server_options, make_pipeline


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "encode", help="encode a photo into a HyperThumbnail .jpg",
        description="Encode a photo (PNG, JPEG, ... any Pillow format; EXIF orientation applied, alpha "
        "composited over white, CMYK/Lab converted to sRGB through their ICC profile; the ICC profile, EXIF "
        "and XMP are kept) into a standard JPEG thumbnail SCALE times smaller per side, from which "
        "`decode` rebuilds the full photo. Prints the bitrate (8 * file bytes / input pixels) and time.",
    )
    p.add_argument("input", help="input image file, or a folder of images (then -o is a folder)")
    p.add_argument("-o", "--output", required=True, help="output .jpg path (folder mode: output folder)")
    p.add_argument("--scale", type=int, choices=(2, 4), default=4, help="downscaling factor per side")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="refuse larger photos (default 50331648 = 8192x6144; Pillow refuses above 178956970 regardless)")
    g = p.add_argument_group("metadata (the photo's ICC profile, EXIF and XMP go into the thumbnail)")
    g.add_argument("--strip-metadata", action="store_true",
                   help="keep no metadata; colour-profiled pixels are converted to sRGB so they look right untagged")
    g.add_argument("--strip-gps", action="store_true", help="drop the GPS position (EXIF GPS IFD, XMP exif:GPS*)")
    add_runtime_options(p)
    add_server_options(p)
    rate_options.add_rate_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rate_options.check_rate_options(args)
    if batch.wanted(args):  # --url and/or a folder
        return batch.run_batch(args, "encode")
    from ..codec.images import DEFAULT_MAX_PIXELS, ImageError, load_image_with_metadata
    from ..codec.steps import StepError
    from ..codec.thumbnail import with_metadata
    from ..metrics import bpp

    max_pixels = args.max_pixels or DEFAULT_MAX_PIXELS
    try:
        image, metadata = load_image_with_metadata(args.input, max_pixels, args.strip_metadata, args.strip_gps)
    except ImageError as exc:
        raise CLIError(str(exc)) from exc
    pipeline = make_pipeline(args, args.scale)
    if pipeline.scale != args.scale:
        raise CLIError(f"the weights are for scale {pipeline.scale}, not {args.scale}")
    start = time.perf_counter()
    pipeline.load("encode")
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    try:
        encoder = rate_options.RateControlledEncoder(pipeline, args, max_pixels, progress=True)
        data = encoder.encode(image)
    except StepError as exc:
        raise CLIError(f"{args.input}: {exc}") from exc
    elapsed = time.perf_counter() - start
    data = with_metadata(data, metadata) if metadata else data  # sizes checked when they were read
    try:
        Path(args.output).write_bytes(data)
    except OSError as exc:
        raise CLIError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
    h, w = image.shape[:2]
    print(f"{args.output}: {len(data)} bytes, {bpp(len(data), w, h):.4f} bpp for {w}x{h}, "
          f"encoded in {elapsed * 1e3:.0f} ms, graphs loaded in {loaded * 1e3:.0f} ms ({pipeline.describe()})"
          + (f"; {encoder.note}" if encoder.note else ""))
    return 0
