"""What `encode` and `decode` share beyond one in-process file: going through a Triton server
(`--url`), and folder mode (IN is a directory: every image in it, a progress bar, a summary).

The in-process `Pipeline` and `HyperThumbnailClient` have the same `encode(image) -> bytes` /
`decode(bytes) -> image` methods, so one code path serves both. Through a server, `--concurrency`
requests are in flight at once (one client per worker thread, as tritonclient wants).
"""
from __future__ import annotations

import argparse
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

from ..codec.images import IMAGE_SUFFIXES
from .errors import CLIError
from .options import make_pipeline
from .rate_options import rate_controlled
from .rate_options import wanted as rate_wanted

Kind = Literal["encode", "decode"]
OUTPUT_SUFFIX = {"encode": ".jpg", "decode": ".png"}


def wanted(args: argparse.Namespace) -> bool:
    """Whether this run is not the plain in-process single-file case."""
    return bool(args.url) or Path(args.input).is_dir()


@dataclass
class Outcome:
    source: Path
    target: Path
    thumbnail_bytes: int = 0
    width: int = 0
    height: int = 0
    seconds: float = 0.0  # the model call only (encode or decode), not file I/O
    error: str | None = None

    @property
    def bpp(self) -> float:
        from ..metrics import bpp

        return bpp(self.thumbnail_bytes, self.width, self.height)


def _encode_file(codec, source: Path, target: Path, args: argparse.Namespace, max_pixels: int) -> Outcome:
    from ..codec.images import load_image_with_metadata
    from ..codec.thumbnail import with_metadata

    image, metadata = load_image_with_metadata(source, max_pixels, args.strip_metadata, args.strip_gps)
    start = time.perf_counter()
    if metadata and args.url and not rate_wanted(args):  # the server carries it (ICC_PROFILE, EXIF inputs)
        data = codec.encode(image, metadata=metadata)
    else:  # in-process, or around a rate search: the same bytes, attached here
        data = codec.encode(image)
        data = with_metadata(data, metadata) if metadata else data
    seconds = time.perf_counter() - start
    target.write_bytes(data)
    return Outcome(source, target, len(data), image.shape[1], image.shape[0], seconds)


def _decode_file(codec, source: Path, target: Path, args: argparse.Namespace, max_pixels: int) -> Outcome:
    from ..codec.images import save_image
    from ..codec.thumbnail import read_metadata, restore_marker

    data = source.read_bytes()
    if args.scale is not None:  # a stripped thumbnail: write its marker again
        data = restore_marker(data, args.scale, args.size, max_pixels)
    start = time.perf_counter()
    if args.url:  # the server returns the metadata (ICC_PROFILE, EXIF outputs)
        image, metadata = codec.decode_with_metadata(data)
    else:
        image, metadata = codec.decode(data), read_metadata(data)
    seconds = time.perf_counter() - start
    save_image(image, target, metadata)
    return Outcome(source, target, len(data), image.shape[1], image.shape[0], seconds)


def _jobs(args: argparse.Namespace, kind: Kind) -> list[tuple[Path, Path]]:
    source, target = Path(args.input), Path(args.output)
    if not source.exists():
        raise CLIError(f"{source} does not exist")
    if not source.is_dir():
        return [(source, target)]
    if target.exists() and not target.is_dir():
        raise CLIError(f"{source} is a folder, so -o must be a folder too; {target} is a file")
    suffixes = {".jpg", ".jpeg"} if kind == "decode" else IMAGE_SUFFIXES
    files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise CLIError(f"no {'thumbnails (.jpg)' if kind == 'decode' else 'images'} in {source}")
    jobs = [(f, target / (f.stem + OUTPUT_SUFFIX[kind])) for f in files]
    clashes = [name for name, n in Counter(t.name for _, t in jobs).items() if n > 1]  # a.png + a.jpg -> a.jpg
    if clashes:
        raise CLIError(f"several inputs would write the same output: {', '.join(sorted(clashes))}")
    target.mkdir(parents=True, exist_ok=True)
    return jobs


class _InProcess:
    """The in-process pipelines behind the client's encode/decode interface (decode follows each file's scale)."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.pipelines: dict[int, object] = {}

    def _pipeline(self, scale: int):
        if scale not in self.pipelines:
            self.pipelines[scale] = make_pipeline(self.args, scale)
        return self.pipelines[scale]

    def encode(self, image):
        return self._pipeline(self.args.scale).encode(image, max_pixels=self.args.max_pixels)

    def decode(self, data: bytes):
        from ..codec.thumbnail import read_thumbnail

        return self._pipeline(read_thumbnail(data).scale).decode(data, max_pixels=self.args.max_pixels)

    def close(self) -> None:
        for pipeline in self.pipelines.values():
            pipeline.close()


def _codecs(args: argparse.Namespace) -> tuple[Callable[[], object], int, str]:
    """(make the codec of one worker, number of workers, where the work runs)."""
    if not args.url:
        codec = _InProcess(args)  # one, shared: a pipeline already uses every core
        return lambda: codec, 1, f"in-process, {args.runtime}"
    from ..client import HyperThumbnailClient

    def connect() -> HyperThumbnailClient:
        return HyperThumbnailClient(args.url, protocol=args.protocol, timeout_s=args.timeout, use_shm=args.shm)

    with connect() as client:
        if not client.is_ready():
            raise CLIError(f"no ready HyperThumbnail server at {args.protocol}://{client.options.url} "
                           "(start one with `hyperthumbnail serve`)")
    where = f"server {args.protocol}://{client.options.url}" + (", shm" if args.shm else "")
    return connect, max(1, args.concurrency), where


def _expected_errors() -> tuple[type[BaseException], ...]:
    from ..client import HyperThumbnailError
    from ..codec.images import ImageError
    from ..codec.steps import StepError
    from ..codec.thumbnail import ThumbnailError

    return HyperThumbnailError, ImageError, ThumbnailError, StepError, OSError


def run_batch(args: argparse.Namespace, kind: Kind) -> int:
    """`encode`/`decode` through a server and/or over a folder; exit code 1 if any file failed."""
    from ..codec.images import DEFAULT_MAX_PIXELS

    jobs = _jobs(args, kind)
    make_codec, workers, where = _codecs(args)
    if kind == "encode":
        make_codec = rate_controlled(make_codec, args)
    work = partial(_encode_file if kind == "encode" else _decode_file, args=args,
                   max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS)
    expected = _expected_errors()
    local = threading.local()
    codecs: list = []

    def one(job: tuple[Path, Path]) -> Outcome:
        if not hasattr(local, "codec"):
            local.codec = make_codec()
            codecs.append(local.codec)
        try:
            return work(local.codec, *job)
        except expected as exc:
            return Outcome(*job, error=f"{type(exc).__name__}: {exc}")

    started = time.perf_counter()
    try:
        if len(jobs) == 1:
            outcomes = [one(jobs[0])]
        else:
            from tqdm import tqdm

            with ThreadPoolExecutor(min(workers, len(jobs))) as pool:
                outcomes = list(tqdm(pool.map(one, jobs), total=len(jobs), desc=kind, unit="image"))
    finally:
        for codec in codecs:
            codec.close()
    total = time.perf_counter() - started

    if len(jobs) == 1 and not Path(args.input).is_dir():
        outcome = outcomes[0]
        if outcome.error:
            raise CLIError(f"{outcome.source}: {outcome.error}")
        verb = "encoded" if kind == "encode" else "decoded"
        size = f"{outcome.thumbnail_bytes} bytes, {outcome.bpp:.4f} bpp for " if kind == "encode" else ""
        print(f"{outcome.target}: {size}{outcome.width}x{outcome.height}, {verb} in {outcome.seconds * 1e3:.0f} ms ({where})")
        return 0
    _summary(kind, outcomes, total, where)
    return 1 if any(o.error for o in outcomes) else 0


def _summary(kind: Kind, outcomes: list[Outcome], total: float, where: str) -> None:
    from rich.console import Console
    from rich.table import Table

    ok = [o for o in outcomes if not o.error]
    table = Table(title=f"hyperthumbnail {kind}: {len(outcomes)} files ({where})")
    for column in ("images", "failed", "mean bpp", "mean model time", "total time", "images/s"):
        table.add_column(column, justify="right")
    mean_bpp = sum(o.bpp for o in ok) / len(ok) if ok else float("nan")
    mean_ms = sum(o.seconds for o in ok) / len(ok) * 1e3 if ok else float("nan")
    table.add_row(str(len(ok)), str(len(outcomes) - len(ok)), f"{mean_bpp:.4f}", f"{mean_ms:.0f} ms",
                  f"{total:.1f} s", f"{len(ok) / total:.2f}")
    console = Console()
    console.print(table)
    for o in outcomes:
        if o.error:
            console.print(f"[red]failed[/red] {o.source}: {o.error}", highlight=False)
