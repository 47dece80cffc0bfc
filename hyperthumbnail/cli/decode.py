"""`hyperthumbnail decode IN.jpg -o OUT.png`: HyperThumbnail JPEG -> full-resolution photo."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import batch
from .errors import CLIError
from .options import add_runtime_options, add_server_options, make_pipeline


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "decode", help="rebuild the full photo from a HyperThumbnail .jpg",
        description="Rebuild the full-resolution photo from a HyperThumbnail .jpg; the output has exactly "
        "the original size (recorded in the file's APP15 segment). Output format follows the extension.",
    )
    p.add_argument("input", help="HyperThumbnail .jpg, or a folder of them (then -o is a folder)")
    p.add_argument("-o", "--output", required=True,
                   help="output image (.png recommended; folder mode: output folder, .png files)")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="refuse thumbnails of larger photos (default 40000000)")
    add_runtime_options(p)
    add_server_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if batch.wanted(args):  # --url and/or a folder
        return batch.run_batch(args, "decode")
    from ..codec.images import DEFAULT_MAX_PIXELS, ImageError, save_image
    from ..codec.thumbnail import ThumbnailError, read_thumbnail

    max_pixels = args.max_pixels or DEFAULT_MAX_PIXELS
    try:
        data = Path(args.input).read_bytes()
    except OSError as exc:
        raise CLIError(f"cannot read {args.input}: {exc.strerror or exc}") from exc
    try:  # validates the file before any model is loaded
        scale = read_thumbnail(data, max_hr_pixels=max_pixels).scale
    except ThumbnailError as exc:
        raise CLIError(f"{args.input}: {exc}") from exc
    pipeline = make_pipeline(args, scale)
    start = time.perf_counter()
    image = pipeline.decode(data, max_pixels=max_pixels)
    elapsed = time.perf_counter() - start
    try:
        save_image(image, args.output)
    except ImageError as exc:
        raise CLIError(str(exc)) from exc
    h, w = image.shape[:2]
    print(f"{args.output}: {w}x{h}, decoded in {elapsed * 1e3:.0f} ms ({args.runtime})")
    return 0
