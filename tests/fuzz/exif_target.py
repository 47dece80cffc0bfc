"""Coverage-guided fuzzing of the EXIF/XMP rewriting that every encode applies to a photo's
metadata (and the server to an `EXIF` input): `sanitize_exif`, `Metadata.without_gps`,
`sanitize_xmp`. The only allowed failure is MetadataError.

    python -m tests.fuzz.exif_target [SECONDS] [libFuzzer flags...]   # make fuzz-exif
"""
from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["hyperthumbnail.codec.metadata", "PIL.Image", "PIL.TiffImagePlugin"]):
    from PIL import ExifTags, Image

    from hyperthumbnail.codec.metadata import MAX_EXIF_BYTES, Metadata, MetadataError, sanitize_exif, sanitize_xmp

from .runner import run


def one_input(data: bytes) -> None:
    try:
        exif = sanitize_exif(data, size=(64, 48))
    except MetadataError:
        return
    assert exif.startswith(b"Exif\0\0") and len(exif) <= MAX_EXIF_BYTES
    parsed = Image.Exif()
    parsed.load(exif)  # what we write, Pillow reads back, upright
    assert parsed.get(ExifTags.Base.Orientation) == 1
    stripped = Metadata(exif=exif, xmp=sanitize_xmp(data[:256])).without_gps()
    again = Image.Exif()
    again.load(stripped.exif)
    assert ExifTags.IFD.GPSInfo not in again


if __name__ == "__main__":
    run("exif", one_input, sys.argv)
