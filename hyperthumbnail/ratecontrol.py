"""Rate control with one model: find the QPM table scale that gives a requested file size.

The QPM predicts a luma and a chroma table per image; `table_scale` multiplies both (then
rounds and clamps them to [1, 255]), so one trained model covers a range of bitrates. The file
size falls monotonically (up to rounding steps) as the scale grows, close to a power law, so
the search brackets the target on the *real* file size and then narrows the bracket by
interpolating in log(size)-log(scale) space, each step kept inside the middle 80% of the
bracket (a safeguarded bisection in log space: it never stalls, and usually needs 3-6 probes).

Integer tables make the size move in steps: near some scales many entries round up together,
and no scale lands within the tolerance. When the search ends on such a step and the tables can
be written directly, a second stage walks between the two bracketing tables entry by entry
(highest frequencies first) and bisects on how many entries take the coarser value: about 7
more probes, steps of one table entry.

Only QPM, quantization and entropy coding depend on the scale, so the search runs against a
`TwoStageEncoder`: the encoder network runs once (`analyze`) and each probe reruns
`quantize_and_write` (or `write_with_tables`). The in-process `Pipeline` is one; the Triton model
`hyperthumbnail_encode_at_bpp` wraps the served models in another and runs this same search next
to them (`serving.backends.EncodeAtBppModel`); the SDK client is a `ServerRateControl`: its
`encode_at_bpp` sends one request and the server searches.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol, runtime_checkable

import numpy as np

from .codec.thumbnail import read_thumbnail
from .metrics import bpp as bits_per_pixel

__all__ = ["MAX_TABLE_SCALE", "MIN_TABLE_SCALE", "RateControlWarning", "ServerRateControl", "TwoStageEncoder",
           "encode_at_bpp", "search_analyzed", "search_table_scale"]

# Predicted tables are integers in [1, 255]: at 256x every entry clamps to 255 (the smallest file
# the model can write), at 1/512x every entry rounds to 0 and clamps to 1 (the largest).
MAX_TABLE_SCALE = 256.0
MIN_TABLE_SCALE = 1.0 / 512.0


class RateControlWarning(UserWarning):
    """The target was not reached within the tolerance; the closest file was returned."""


class TwoStageEncoder(Protocol):
    """An encoder split where rate control needs it: the table-independent half runs once per
    image, the table-dependent half once per probe."""

    def analyze(self, image: np.ndarray, max_pixels: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
        """HxWx3 uint8 -> (unquantized DCT coefficients (3, 64, h, w) float32, HR size (W, H))."""
        ...

    def quantize_and_write(self, coefficients: np.ndarray, hr_size: tuple[int, int], table_scale: float = 1.0) -> bytes:
        """QPM tables times `table_scale`, quantization, entropy coding -> .jpg bytes."""
        ...

    def write_with_tables(self, coefficients: np.ndarray, hr_size: tuple[int, int], tables: np.ndarray) -> bytes:
        """Quantize with given (2, 64) tables (natural order, row 0 luma) -> .jpg bytes."""
        ...


@runtime_checkable
class ServerRateControl(Protocol):
    """A client whose server runs the search itself, in one request."""

    def encode_at_bpp(self, image: np.ndarray, target_bpp: float, tolerance: float = 0.03
                      ) -> tuple[bytes, float, float]:
        """-> (.jpg bytes, table scale found, achieved bpp)."""
        ...


@dataclass(frozen=True)
class _Probe:
    log_scale: float
    log_size: float
    data: bytes


def search_table_scale(write: Callable[[float], bytes], target_bytes: float, tolerance: float = 0.03,
                       max_probes: int = 30,
                       write_tables: Callable[[np.ndarray], bytes] | None = None) -> tuple[bytes, float]:
    """The file `write(table_scale)` closest to `target_bytes` -> (bytes, table_scale).

    Stops at the first file within `tolerance` (relative). `write_tables((2, 64) uint8 tables)`,
    when given, is used where the size jumps over the target between two neighbouring scales:
    the file then holds tables between those of the returned scale and the next coarser probe.
    Warns (`RateControlWarning`) when nothing gets there: the target is outside what the table
    range [1, 255] allows, or even one table entry moves the size across the whole tolerance.
    """
    if target_bytes <= 0:
        raise ValueError(f"target size must be positive, got {target_bytes}")
    log_target = math.log(target_bytes)
    lo_limit, hi_limit = math.log(MIN_TABLE_SCALE), math.log(MAX_TABLE_SCALE)
    probes: list[_Probe] = []
    too_big: _Probe | None = None    # largest scale seen whose file is above the target
    too_small: _Probe | None = None  # smallest scale seen whose file is below it
    x = 0.0  # log(table_scale): start from the model's own tables
    reason = f"no file within ±{tolerance:.0%} after {max_probes} probes"
    for _ in range(max_probes):
        data = write(math.exp(x))
        probe = _Probe(x, math.log(len(data)), data)
        probes.append(probe)
        if abs(len(data) / target_bytes - 1.0) <= tolerance:
            return data, math.exp(x)
        if probe.log_size > log_target:
            too_big = probe if too_big is None or probe.log_scale > too_big.log_scale else too_big
        else:
            too_small = probe if too_small is None or probe.log_scale < too_small.log_scale else too_small
        if too_big is not None and too_small is not None:
            left, right = too_big, too_small
            width = right.log_scale - left.log_scale
            if width < 1e-4:
                if write_tables is not None:
                    blended = _blend_tables(write_tables, left.data, right.data, target_bytes, tolerance)
                    if blended is not None:
                        return blended, math.exp(left.log_scale)
                    reason = "even single table entries move the size across the tolerance"
                else:
                    reason = "many table entries round to the next integer at once"
                reason = (f"the size jumps from {len(left.data)} to {len(right.data)} bytes between table "
                          f"scales {math.exp(left.log_scale):.6g} and {math.exp(right.log_scale):.6g} ({reason})")
                break
            x = _interpolate(left, right, log_target)
            x = min(max(x, left.log_scale + 0.1 * width), right.log_scale - 0.1 * width)
        else:
            need_bigger_scale = too_small is None
            if (need_bigger_scale and x >= hi_limit) or (not need_bigger_scale and x <= lo_limit):
                which = "smallest" if need_bigger_scale else "largest"
                tables = "255" if need_bigger_scale else "1"
                reason = (f"the {which} file this model writes for this image is {len(data)} bytes "
                          f"(table scale {math.exp(x):g}: every table entry {tables})")
                break
            x = _extrapolate(probes, log_target, lo_limit, hi_limit)
    best = min(reversed(probes), key=lambda p: abs(p.log_size - log_target))  # ties: the latest
    warnings.warn(RateControlWarning(f"target {target_bytes:.0f} bytes not reached: {reason}; "
                                     f"closest {len(best.data)} bytes at table scale {math.exp(best.log_scale):.4f}"),
                  stacklevel=2)
    return best.data, math.exp(best.log_scale)


def _blend_tables(write_tables: Callable[[np.ndarray], bytes], finer: bytes, coarser: bytes,
                  target_bytes: float, tolerance: float) -> bytes | None:
    """Bisect on how many of the differing table entries take the coarser file's value.

    `finer` is above the target and `coarser` below. Entries switch highest frequency (u+v)
    first (luma and chroma alternating at each frequency): coarser high frequencies cost the
    least visible detail, and one entry at a time moves the size in small steps. The size is
    monotone in the number switched up to rounding noise; bisection needs it only roughly.
    -> the first file within the tolerance, else None.
    """
    fine_tables = read_thumbnail(finer).tables
    coarse_tables = read_thumbnail(coarser).tables
    by_frequency = sorted(range(64), key=lambda k: (-(k // 8 + k % 8), k))  # u+v, highest first
    order = [(c, k) for k in by_frequency for c in (0, 1)]
    differing = [(c, k) for c, k in order if fine_tables[c, k] != coarse_tables[c, k]]
    lo, hi = 0, len(differing)  # switching `lo` entries stays above the target, `hi` goes below
    while hi - lo > 1:
        mid = (lo + hi) // 2
        tables = fine_tables.copy()
        for c, k in differing[:mid]:
            tables[c, k] = coarse_tables[c, k]
        data = write_tables(tables)
        if abs(len(data) / target_bytes - 1.0) <= tolerance:
            return data
        lo, hi = (mid, hi) if len(data) > target_bytes else (lo, mid)
    return None


def _slope(a: _Probe, b: _Probe) -> float:
    """d log(size) / d log(scale), falling back to -1 where the size did not move."""
    if b.log_scale == a.log_scale:
        return -1.0
    slope = (b.log_size - a.log_size) / (b.log_scale - a.log_scale)
    return slope if slope < -1e-3 else -1.0


def _interpolate(left: _Probe, right: _Probe, log_target: float) -> float:
    return left.log_scale + (log_target - left.log_size) / _slope(left, right)


def _extrapolate(probes: list[_Probe], log_target: float, lo_limit: float, hi_limit: float) -> float:
    """Next scale outside the probed range: follow the power law, at least 1.25x, at most 16x further."""
    last = probes[-1]
    slope = _slope(probes[-2], last) if len(probes) > 1 else -1.0
    step = (log_target - last.log_size) / slope
    step = math.copysign(min(max(abs(step) * 1.1, math.log(1.25)), math.log(16.0)), step)
    return min(max(last.log_scale + step, lo_limit), hi_limit)


def search_analyzed(encoder: TwoStageEncoder, coefficients: np.ndarray, hr_size: tuple[int, int],
                    target_bpp: float, tolerance: float = 0.03) -> tuple[bytes, float]:
    """The search on an image `encoder.analyze` already ran on -> (jpg bytes, table_scale)."""
    width, height = hr_size
    return search_table_scale(partial(encoder.quantize_and_write, coefficients, hr_size), target_bpp * width * height / 8.0,
                              tolerance, write_tables=partial(encoder.write_with_tables, coefficients, hr_size))


def encode_at_bpp(encoder: TwoStageEncoder | ServerRateControl, image: np.ndarray, target_bpp: float,
                  tolerance: float = 0.03, max_pixels: int | None = None) -> tuple[bytes, float, float]:
    """Encode `image` (HxWx3 uint8) at `target_bpp` (whole .jpg file over HR pixels).

    -> (jpg bytes, table_scale used, achieved bpp); the file may hold tables between those of
    `table_scale` and the next coarser scale (see `search_table_scale`). `encoder`: a
    `TwoStageEncoder` such as `hyperthumbnail.pipeline.Pipeline` (encoder run once; `max_pixels`
    is its size limit), or a `ServerRateControl` such as `HyperThumbnailClient` (the server runs
    the search, one request). Warns with `RateControlWarning` and returns the closest file when
    the target is out of reach.
    """
    if target_bpp <= 0:
        raise ValueError(f"target bpp must be positive, got {target_bpp}")
    height, width = image.shape[:2]
    if isinstance(encoder, ServerRateControl):
        data, table_scale, achieved = encoder.encode_at_bpp(image, target_bpp, tolerance)
        if abs(achieved / target_bpp - 1.0) > tolerance:
            warnings.warn(RateControlWarning(f"target {target_bpp:g} bpp not reached: the server returned its "
                                             f"closest file, {achieved:.4f} bpp at table scale {table_scale:.4g}"),
                          stacklevel=2)
        return data, table_scale, achieved
    coefficients, hr_size = encoder.analyze(image, max_pixels)
    data, table_scale = search_analyzed(encoder, coefficients, hr_size, target_bpp, tolerance)
    return data, table_scale, bits_per_pixel(len(data), width, height)
