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
        "the original size (recorded in the file's APP15 segment) and the photo's ICC profile, EXIF and XMP. "
        "Output format follows the extension. A thumbnail whose APP segments were stripped decodes with "
        "--scale (and --size).",
    )
    p.add_argument("input", help="HyperThumbnail .jpg, or a folder of them (then -o is a folder)")
    p.add_argument("-o", "--output", required=True,
                   help="output image (.png recommended; folder mode: output folder, .png files)")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="refuse thumbnails of larger photos (default 50331648 = 8192x6144)")
    p.add_argument("--level", type=int, default=None, metavar="N",
                   help="output compression: PNG level 0-9 (default 1, fast; 9 is ~6x slower and ~10%% smaller), "
                   "JPEG/WebP quality 1-100 (default 95/90)")
    g = p.add_argument_group("stripped thumbnails (APP segments removed, e.g. by jpegtran -copy none or a CDN)")
    g.add_argument("--scale", type=int, choices=(2, 4), default=None,
                   help="the scale the thumbnail was made at (the stripped marker said it)")
    g.add_argument("--size", type=_size, default=None, metavar="WxH",
                   help="the original photo's size (default with --scale: the thumbnail size times the scale)")
    add_runtime_options(p)
    add_server_options(p)
    p.set_defaults(func=run)


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 4032x3024, got {text!r}") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"the size must be positive, got {text!r}")
    return width, height


def run(args: argparse.Namespace) -> int:
    if args.size is not None and args.scale is None:
        raise CLIError("--size needs --scale (both describe a stripped thumbnail)")
    if batch.wanted(args):  # --url and/or a folder
        return batch.run_batch(args, "decode")
    from ..codec.images import DEFAULT_MAX_PIXELS, ImageError, save_image
    from ..codec.thumbnail import ThumbnailError, read_thumbnail, restore_marker

    max_pixels = args.max_pixels or DEFAULT_MAX_PIXELS
    try:
        data = Path(args.input).read_bytes()
    except OSError as exc:
        raise CLIError(f"cannot read {args.input}: {exc.strerror or exc}") from exc
    try:  # validates the file before any model is loaded
        if args.scale is not None:  # a stripped thumbnail: write its marker again
            data = restore_marker(data, args.scale, args.size, max_pixels)
        thumb = read_thumbnail(data, max_hr_pixels=max_pixels)
    except ThumbnailError as exc:
        raise CLIError(f"{args.input}: {exc}") from exc
    shipped = make_pipeline(args, thumb.scale)
    pipeline = shipped.for_thumbnail(data)  # an older generation's thumbnail: the decoder shipped for it
    start = time.perf_counter()
    pipeline.load("decode")
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    image = pipeline.decode(data, max_pixels=max_pixels)
    elapsed = time.perf_counter() - start
    try:
        save_image(image, args.output, thumb.metadata, level=args.level)
    except ImageError as exc:
        raise CLIError(str(exc)) from exc
    h, w = image.shape[:2]
    by = "" if pipeline is shipped else f"; made by model {thumb.model_id}, decoded by its own decoder {pipeline.weights.name}"
    print(f"{args.output}: {w}x{h}, decoded in {elapsed * 1e3:.0f} ms, graphs loaded in {loaded * 1e3:.0f} ms "
          f"({pipeline.describe()}{by})")
    return 0
