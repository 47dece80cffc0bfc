"""Coverage-guided fuzzing (atheris + libFuzzer) of the thumbnail reader and the decode path.

    python -m tests.fuzz.thumbnail_target [SECONDS] [libFuzzer flags...]   # make fuzz FUZZ_SECONDS=600

One input is what a client can send to `hyperthumbnail_decode` (or hand to `decode`): it goes
through `read_thumbnail` (with the marker, and with `scale=4` when the marker is missing, as
`decode --scale 4` does, then `restore_marker`), the served decode step `decode_thumbnail`, and,
when it parses, the metadata is re-attached (`with_metadata`) and written into a PNG the way
`decode` writes one.
The only allowed failure is a ThumbnailError/StepError; anything else raised, a call over 1 s
(`-timeout=1`), a process growing by over 1 GiB or one allocation over 1 GiB (tests/fuzz/runner.py) is a
finding. Coverage comes
from instrumenting hyperthumbnail.codec (and the step module); libjpeg itself (through jpeglib)
runs uninstrumented but is exercised on every input that gets that far.

Where the corpus and findings go: runner.py. Each finding becomes a regression test in
tests/test_fuzz.py.
"""
from __future__ import annotations

import io
import sys

import atheris

with atheris.instrument_imports(include=["hyperthumbnail.codec"]):
    import numpy as np
    from PIL import Image

    from hyperthumbnail.codec.images import _save_options
    from hyperthumbnail.codec.steps import StepError, decode_thumbnail
    from hyperthumbnail.codec.thumbnail import (
        MISSING_MARKER,
        ThumbnailError,
        read_thumbnail,
        restore_marker,
        thumbnail_size,
        with_metadata,
    )

from .runner import run

MAX_HR_PIXELS = 8192 * 6144  # the server's default limit (interface.DEFAULT_MAX_PIXELS)
_TINY = np.zeros((4, 4, 3), dtype=np.uint8)


def one_input(data: bytes) -> None:
    """What the decode path does with untrusted bytes, with the properties it must keep."""
    given: dict = {}  # what `decode` would be told on the command line
    try:
        thumb = read_thumbnail(data, max_hr_pixels=MAX_HR_PIXELS)
    except ThumbnailError as exc:
        if str(exc) != MISSING_MARKER:
            return
        try:
            thumb = read_thumbnail(data, max_hr_pixels=MAX_HR_PIXELS, scale=4)
        except ThumbnailError:
            return
        given = {"scale": thumb.scale, "hr_size": thumb.hr_size}
    # what was read is consistent with what the decoder will allocate
    width, height = thumbnail_size(thumb.hr_size, thumb.scale)
    assert thumb.coefficients.shape == (3, 64, -(-height // 8), -(-width // 8)), thumb.coefficients.shape
    assert thumb.hr_size[0] * thumb.hr_size[1] <= MAX_HR_PIXELS
    assert thumb.tables.shape == (2, 64) and thumb.tables.min() >= 1
    # the served step agrees (or refuses for the scale/marker reason only)
    try:
        quantized, tables, hr_size = decode_thumbnail(data, scale=4, max_pixels=MAX_HR_PIXELS)
        assert np.array_equal(quantized, thumb.coefficients) and hr_size == thumb.hr_size
    except StepError:
        pass
    # metadata survives being re-attached, and goes into the decoded PNG
    again = read_thumbnail(with_metadata(data, thumb.metadata), max_hr_pixels=MAX_HR_PIXELS, **given)
    assert again.metadata == thumb.metadata and np.array_equal(again.coefficients, thumb.coefficients)
    if given:  # `decode --scale 4`: the marker is written again, then it decodes as a whole thumbnail
        try:
            restored = read_thumbnail(restore_marker(data, **given), max_hr_pixels=MAX_HR_PIXELS)
        except ThumbnailError as exc:
            assert str(exc).startswith("cannot rebuild the thumbnail"), exc
        else:
            assert np.array_equal(restored.coefficients, thumb.coefficients) and restored.hr_size == thumb.hr_size
    if thumb.metadata:
        try:
            Image.fromarray(_TINY).save(io.BytesIO(), "PNG", **_save_options("PNG", thumb.metadata))
        except (OSError, ValueError) as exc:  # save_image turns these into ImageError
            print(f"note: PNG refused the metadata: {exc}", file=sys.stderr)


if __name__ == "__main__":
    run("thumbnail", one_input, sys.argv)
