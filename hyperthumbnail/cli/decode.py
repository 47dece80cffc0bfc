"""`hyperthumbnail decode IN.jpg -o OUT.png`: HyperThumbnail JPEG -> full-resolution photo."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .encode import add_runtime_options, make_pipeline


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "decode", help="rebuild the full photo from a HyperThumbnail .jpg",
        description="Rebuild the full-resolution photo from a HyperThumbnail .jpg; the output has exactly "
        "the original size (recorded in the file's APP15 segment). Output format follows the extension.",
    )
    p.add_argument("input", help="HyperThumbnail .jpg")
    p.add_argument("-o", "--output", required=True, help="output image (.png recommended)")
    add_runtime_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..codec.images import save_image
    from ..codec.thumbnail import read_thumbnail

    data = Path(args.input).read_bytes()
    scale = read_thumbnail(data).scale  # validates the file before any model is loaded
    pipeline = make_pipeline(args, scale)
    start = time.perf_counter()
    image = pipeline.decode(data)
    elapsed = time.perf_counter() - start
    save_image(image, args.output)
    h, w = image.shape[:2]
    print(f"{args.output}: {w}x{h}, decoded in {elapsed * 1e3:.0f} ms ({args.runtime})")
    return 0
