"""The fuzzer's seed corpus: small valid and broken thumbnails, made from scratch.

`python -m tests.fuzz.seeds` (re)writes them into tests/fuzz/corpus/<target>/ (committed);
`tests/test_fuzz.py` checks the committed files are what this makes, so the corpus cannot
drift from the format. Targets: `thumbnail` (a thumbnail file), `exif` (an EXIF block as a
photo carries it, "Exif\\0\\0" + TIFF structure).
"""
from __future__ import annotations

import io
import struct
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

from hyperthumbnail.codec import Metadata, Thumbnail, thumbnail_size, write_thumbnail
from hyperthumbnail.codec.metadata import ICC_HEADER, sanitize_exif

__all__ = ["exif_seeds", "seeds", "write_seeds"]


def _thumbnail(hr_size: tuple[int, int], scale: int, seed: int, metadata: Metadata = Metadata()) -> bytes:
    rng = np.random.default_rng(seed)
    width, height = thumbnail_size(hr_size, scale)
    rows, cols = -(-height // 8), -(-width // 8)
    coef = np.round(rng.laplace(0.0, 3.0, (3, 64, rows, cols))) * (rng.random((3, 64, rows, cols)) < 0.3)
    coef[:, 0] = rng.integers(-200, 200, (3, rows, cols))
    tables = rng.integers(1, 60, (2, 64))
    return write_thumbnail(Thumbnail(coef.astype(np.int16), tables.astype(np.uint8), scale, hr_size, metadata))


def _segments(data: bytes) -> list[tuple[int, int, int]]:
    """(code, start, end) of each header segment up to SOS."""
    out, pos = [], 2
    while True:
        code, length = data[pos + 1], int.from_bytes(data[pos + 2:pos + 4], "big")
        out.append((code, pos, pos + 2 + length))
        if code == 0xDA:
            return out
        pos += 2 + length


def _strip(data: bytes) -> bytes:
    """What `jpegtran -copy none` leaves: no APP1-APP15 segments."""
    drop = [(s, e) for c, s, e in _segments(data) if 0xE1 <= c <= 0xEF]
    out, pos = bytearray(data[:2]), 2
    for start, end in drop:
        out += data[pos:start]
        pos = end
    return bytes(out + data[pos:])


def _two_chunk_icc(data: bytes, profile: bytes) -> bytes:
    """Insert a profile as two small APP2 chunks after APP0 (real files split at 65519 bytes)."""
    half = len(profile) // 2
    segs = b""
    for number, chunk in ((1, profile[:half]), (2, profile[half:])):
        payload = ICC_HEADER + bytes((number, 2)) + chunk
        segs += b"\xff\xe2" + (len(payload) + 2).to_bytes(2, "big") + payload
    app0_end = _segments(data)[0][2]
    return data[:app0_end] + segs + data[app0_end:]


def _pillow(mode: str = "RGB", **save) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (24, 16), 90).save(buf, "JPEG", **save)
    return buf.getvalue()


# LittleCMS stamps a new profile with the current time (ICC header bytes 24-36); the seeds carry
# this fixed one so the script makes the same bytes on any day.
_ICC_DATE = struct.pack(">6H", 2026, 11, 29, 17, 29, 35)


def _fixed_date(profile: bytes) -> bytes:
    return profile[:24] + _ICC_DATE + profile[36:]


def seeds() -> dict[str, bytes]:
    """name -> bytes; all small (the fuzzer mutates faster on small inputs)."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0112] = "HyperCam", 6
    exif.get_ifd(0x8825)[1] = "N"
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><tiff:Orientation>1</tiff:Orientation></x:xmpmeta>'
    srgb = _fixed_date(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    valid = _thumbnail((24, 16), 4, 0)
    meta = _thumbnail((40, 24), 4, 1, Metadata(icc_profile=srgb, exif=sanitize_exif(exif.tobytes()), xmp=xmp))
    out = {
        "valid_x4.jpg": valid,
        "valid_x2.jpg": _thumbnail((20, 12), 2, 2),
        "valid_1x1.jpg": _thumbnail((1, 1), 4, 3),
        "metadata.jpg": meta,
        "icc_two_chunks.jpg": _two_chunk_icc(valid, srgb),
        "stripped.jpg": _strip(meta),
        "truncated_scan.jpg": valid[:-20],
        "truncated_header.jpg": valid[:60],
        "flipped_bit.jpg": valid[:-10] + bytes([valid[-10] ^ 1]) + valid[-9:],
        "ordinary_420.jpg": _pillow(quality=75),
        "ordinary_444_q90.jpg": _pillow(quality=90, subsampling=0),
        "progressive.jpg": _pillow(quality=75, progressive=True),
        "greyscale.jpg": _pillow("L"),
        "not_a_jpeg.bin": b"\x89PNG\r\n\x1a\n" + bytes(16),
        "empty.bin": b"",
    }
    return out


def exif_seeds() -> dict[str, bytes]:
    """EXIF blocks: a phone's (GPS, Exif IFD, MakerNote), big- and little-endian, broken ones."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = "HyperCam", "HC-1", 6
    exif.get_ifd(0x8769).update({0x9003: "2026:11:29 12:00:00", 0xA002: 64, 0xA003: 48, 0x927C: b"maker" * 4})
    exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 30.0)})
    big = exif.tobytes()
    little = b"Exif\0\0" + b"II*\0" + (8).to_bytes(4, "little") + (1).to_bytes(2, "little") \
        + (0x0112).to_bytes(2, "little") + (3).to_bytes(2, "little") + (1).to_bytes(4, "little") \
        + (8).to_bytes(4, "little") + bytes(4)
    return {
        "phone_be.exif": big,
        "orientation_le.exif": little,
        "bare_tiff.exif": big[6:],  # PNG eXIf / WebP EXIF chunks have no Exif\0\0
        "truncated.exif": big[:40],
        "bad_offset.exif": big[:10] + b"\xff\xff\xff\xff" + big[14:],
        "empty_ifd.exif": b"Exif\0\0MM\0*\0\0\0\x08\0\0\0\0\0\0",
    }


def write_seeds(root: Path) -> list[Path]:
    paths = []
    for target, made in (("thumbnail", seeds()), ("exif", exif_seeds())):
        (root / target).mkdir(parents=True, exist_ok=True)
        for name, data in made.items():
            (root / target / name).write_bytes(data)
            paths.append(root / target / name)
    return paths


if __name__ == "__main__":
    for path in write_seeds(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "corpus")):
        print(f"{path}  {path.stat().st_size} bytes")
