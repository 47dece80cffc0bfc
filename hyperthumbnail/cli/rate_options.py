"""Rate-control options of `hyperthumbnail encode` (--target-bpp, --rate, --optimize).

Kept apart from encode.py: the encode command adds the options and encodes through
`RateControlledEncoder`, which wraps whatever encodes (the in-process `Pipeline`, or a
`HyperThumbnailClient` with `--url`, whose TABLE_SCALE input carries the scale), so single-file,
folder and server runs share it.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable

import numpy as np

from ..ratecontrol import ServerRateControl, TwoStageEncoder
from .errors import CLIError
from .options import make_pipeline


def add_rate_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("rate control")
    which = g.add_mutually_exclusive_group()
    which.add_argument("--target-bpp", type=float, default=None, metavar="BPP",
                       help="search the table scale so the file lands at BPP (8 * bytes / input pixels) "
                            "within --tolerance; with --url each probe is one server request")
    which.add_argument("--rate", type=float, default=None, metavar="SCALE",
                       help="multiply the predicted quantization tables by SCALE (>1: smaller file, "
                            "<1: larger; default 1, the model's own tables)")
    g.add_argument("--tolerance", type=float, default=0.03,
                   help="relative tolerance of --target-bpp (default 0.03 = ±3%%)")
    g.add_argument("--optimize", type=int, default=0, metavar="N",
                   help="refine the coefficients with N gradient steps through the frozen decoder "
                        "(in-process torch runtime only; seconds per step for a Kodak-sized photo)")


def check_rate_options(args: argparse.Namespace) -> None:
    """Validate, and switch to the torch runtime for --optimize (it needs gradients)."""
    if args.target_bpp is not None and args.target_bpp <= 0:
        raise CLIError(f"--target-bpp must be positive, got {args.target_bpp}")
    if args.rate is not None and args.rate <= 0:
        raise CLIError(f"--rate must be positive, got {args.rate}")
    if not 0 < args.tolerance < 1:
        raise CLIError(f"--tolerance must be in (0, 1), got {args.tolerance}")
    if args.optimize < 0:
        raise CLIError(f"--optimize takes a number of steps >= 0, got {args.optimize}")
    if args.optimize and getattr(args, "url", None):
        raise CLIError("--optimize runs the model in-process (it needs gradients); drop --url")
    if args.optimize and args.runtime != "torch":
        print("hyperthumbnail encode: --optimize needs gradients: using --runtime torch", file=sys.stderr)
        args.runtime = "torch"


def wanted(args: argparse.Namespace) -> bool:
    return args.target_bpp is not None or args.rate is not None or args.optimize > 0


class RateControlledEncoder:
    """`encode(image) -> bytes` with the rate options applied; `note` says what the last call did.

    encoder: the in-process `Pipeline` (a `TwoStageEncoder`; `max_pixels` is its size limit) or a
    `HyperThumbnailClient` (a `ServerRateControl`: the server searches, and its TABLE_SCALE input
    carries --rate). Both have `encode(image, table_scale=...)` and `close()`.
    """

    def __init__(self, encoder: TwoStageEncoder | ServerRateControl, args: argparse.Namespace,
                 max_pixels: int | None = None, progress: bool = False):
        self.encoder = encoder
        self.args = args
        self.progress = progress  # --optimize's step bar (one file; folder mode has its own bar)
        in_process = not isinstance(encoder, ServerRateControl)
        self.kwargs = {"max_pixels": max_pixels} if in_process and max_pixels is not None else {}
        self.note = ""

    def encode(self, image: np.ndarray) -> bytes:
        from ..ratecontrol import RateControlWarning, encode_at_bpp

        args = self.args
        table_scale = 1.0 if args.rate is None else args.rate
        notes = []
        if args.target_bpp is not None:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", RateControlWarning)
                data, table_scale, _ = encode_at_bpp(self.encoder, image, args.target_bpp, args.tolerance, **self.kwargs)
            for warning in caught:
                print(f"hyperthumbnail encode: warning: {warning.message}", file=sys.stderr)
            notes.append(f"table scale {table_scale:.4g} for {args.target_bpp:g} bpp")
        elif args.rate is not None:
            data = self.encoder.encode(image, table_scale=table_scale, **self.kwargs)
            notes.append(f"table scale {table_scale:.4g}")
        elif not args.optimize:
            data = self.encoder.encode(image, **self.kwargs)
        if args.optimize:
            from ..optimize import optimize_encoding

            result = optimize_encoding(self.encoder.model, image, args.optimize, table_scale, progress=self.progress)
            data = result.data
            first, kept = result.history[0], result.history[result.best_step]
            notes.append(f"{args.optimize} optimization steps in {result.seconds:.1f} s, kept step "
                         f"{result.best_step}: HR PSNR {first['hr_psnr']:.2f} -> {kept['hr_psnr']:.2f} dB, "
                         f"thumbnail {first['thumb_psnr']:.2f} -> {kept['thumb_psnr']:.2f} dB")
        self.note = "; ".join(notes)
        return data

    def close(self) -> None:
        self.encoder.close()


def rate_controlled(make_codec: Callable[[], object], args: argparse.Namespace) -> Callable[[], object]:
    """Folder/server mode: wrap each worker's codec (in-process: one shared pipeline)."""
    if not wanted(args):
        return make_codec
    if args.url:
        return lambda: RateControlledEncoder(make_codec(), args)
    shared = RateControlledEncoder(make_pipeline(args, args.scale), args, args.max_pixels)
    return lambda: shared
