"""The thumbnail file: a standard baseline JPEG that also carries what the HR decoder needs.

The file is written at DCT level with `jpeglib` (libjpeg `jpeg_write_coefficients`): the exact
quantized coefficients and tables the encoder produced, no pixel re-encoding. Any JPEG viewer
shows it as an ordinary thumbnail of size ceil(W/scale) x ceil(H/scale).

HyperThumbnail marker (APP15, 0xFFEF; APP15 has no registered users, unlike APP11 which
JPEG XT / JUMBF use). libjpeg places it right after the JFIF APP0 segment, which JFIF requires
to come first after SOI. Payload, big-endian, 25 bytes:

    offset size  field
    0      11    tag b"HYPERTHUMB\\0"
    11     1     format version (1)
    12     1     scale (2 or 4)
    13     4     original HR width  (uint32)
    17     4     original HR height (uint32)
    21     4     CRC-32 (zlib) of payload bytes 0..20 followed by every byte after this
                 segment up to and including EOI

libjpeg only *warns* about corrupt or truncated entropy-coded data (it pads with zeros and
returns garbage coefficients), so the CRC is what turns such damage into an error; covering the
marker fields too means a changed HR size cannot go unnoticed either.
"""
from __future__ import annotations

import math
import os
import re
import struct
import tempfile
import threading
import zlib
from dataclasses import dataclass

import jpeglib
import numpy as np

from ..interface import COEF_LIMIT

__all__ = [
    "DEFAULT_MAX_HR_PIXELS",
    "MAX_JPEG_SIDE",
    "SUPPORTED_SCALES",
    "Thumbnail",
    "ThumbnailError",
    "read_thumbnail",
    "scan_bytes",
    "thumbnail_size",
    "write_thumbnail",
]

SUPPORTED_SCALES = (2, 4)
DEFAULT_MAX_HR_PIXELS = 60_000_000
FORMAT_VERSION = 1
MARKER_TAG = b"HYPERTHUMB\0"
_APP15 = 0xEF
_PAYLOAD = struct.Struct(">11sBBIII")  # tag, version, scale, width, height, crc32
_CRC_OFFSET = _PAYLOAD.size - 4

# Baseline Huffman coding encodes at most 11-bit DC differences and 10-bit AC values
# (libjpeg's MAX_COEF_BITS); anything larger makes libjpeg abort the write.
_MAX_DC_DIFF = 2047
MAX_JPEG_SIDE = 65535  # 16-bit size fields in SOF: the largest thumbnail side
_MAX_HEADER_SEGMENTS = 32  # jpeglib keeps at most 50 APPn/COM markers in fixed C arrays

_SOI, _EOI, _SOS, _DQT = 0xD8, 0xD9, 0xDA, 0xDB
_SOF_CODES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # C4 DHT, C8 JPG, CC DAC
_PROGRESSIVE_SOF = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
# First byte pair after the scan that is a real marker: not a stuffed 0xFF00, not RSTn, not fill.
_MARKER_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")

# jpeglib keeps marker state in C globals and calls into libjpeg through ctypes (which drops
# the GIL), so concurrent calls from several threads must not overlap.
_JPEGLIB_LOCK = threading.Lock()


class ThumbnailError(ValueError):
    """The bytes are not a valid HyperThumbnail file (the message says what is wrong)."""


@dataclass
class Thumbnail:
    """Quantized JPEG data of one thumbnail plus what the HR decoder needs.

    coefficients: int16 (3, 64, h, w), components Y, Cb, Cr, natural order u*8+v per block;
        the blocks cover exactly thumbnail_size(hr_size, scale) rounded up to whole blocks.
    tables: uint8 (2, 64) natural order; row 0 luma, row 1 chroma (shared by Cb and Cr).
    scale: HR-to-thumbnail factor (2 or 4).
    hr_size: (width, height) of the original HR image.
    """

    coefficients: np.ndarray
    tables: np.ndarray
    scale: int
    hr_size: tuple[int, int]


def thumbnail_size(hr_size: tuple[int, int], scale: int) -> tuple[int, int]:
    """(width, height) the thumbnail JPEG declares: ceil(W/scale) x ceil(H/scale)."""
    width, height = hr_size
    return math.ceil(width / scale), math.ceil(height / scale)


def _block_grid(hr_size: tuple[int, int], scale: int) -> tuple[int, int]:
    """(rows, cols) of 8x8 blocks that libjpeg codes for this thumbnail."""
    width, height = thumbnail_size(hr_size, scale)
    return math.ceil(height / 8), math.ceil(width / 8)


# ----------------------------------------------------------------------------- writing


def _check_for_writing(thumb: Thumbnail) -> tuple[np.ndarray, np.ndarray]:
    """Validate a Thumbnail; return (int16 coefficients, uint8 tables). Raises ValueError."""
    if thumb.scale not in SUPPORTED_SCALES:
        raise ValueError(f"scale must be one of {SUPPORTED_SCALES}, got {thumb.scale!r}")
    hr_size = tuple(thumb.hr_size)
    if len(hr_size) != 2 or not all(isinstance(s, (int, np.integer)) for s in hr_size):
        raise ValueError(f"hr_size must be (width, height) integers, got {thumb.hr_size!r}")
    if not all(1 <= s <= 0xFFFFFFFF for s in hr_size):
        raise ValueError(f"hr_size {hr_size} out of range: each side must be in [1, 2**32-1]")
    if max(thumbnail_size(hr_size, thumb.scale)) > MAX_JPEG_SIDE:
        raise ValueError(f"thumbnail of {hr_size} at scale {thumb.scale} exceeds JPEG's "
                         f"{MAX_JPEG_SIDE}-pixel side limit")

    coef = np.asarray(thumb.coefficients)
    rows, cols = _block_grid(hr_size, thumb.scale)
    if coef.shape != (3, 64, rows, cols):
        raise ValueError(f"coefficients must have shape (3, 64, {rows}, {cols}) for HR size "
                         f"{hr_size} at scale {thumb.scale}, got {coef.shape}")
    if not np.issubdtype(coef.dtype, np.integer):
        raise ValueError(f"coefficients must be an integer array (int16), got {coef.dtype}")
    ac = coef[:, 1:]
    ac_peak = max(-int(ac.min()), int(ac.max()))  # no full-size temporaries
    if ac_peak > COEF_LIMIT:
        raise ValueError(f"AC coefficient magnitude {ac_peak} exceeds the baseline limit {COEF_LIMIT}")
    dc = coef[:, 0].astype(np.int64).reshape(3, -1)  # raster order = libjpeg's coding order
    dc_diff_peak = int(np.abs(np.diff(dc, axis=1, prepend=0)).max())
    if dc_diff_peak > _MAX_DC_DIFF:
        raise ValueError(f"DC difference {dc_diff_peak} exceeds the baseline limit {_MAX_DC_DIFF}")

    tables = np.asarray(thumb.tables)
    if tables.shape != (2, 64) or not np.issubdtype(tables.dtype, np.integer):
        raise ValueError(f"tables must be an integer array of shape (2, 64), got "
                         f"{tables.dtype} {tables.shape}")
    if tables.min() < 1 or tables.max() > 255:
        raise ValueError(f"quantization table values must be in [1, 255], got "
                         f"[{tables.min()}, {tables.max()}]")
    return coef.astype(np.int16, copy=False), tables.astype(np.uint8)


def _checksum(payload: bytes, after_marker: bytes) -> int:
    return zlib.crc32(after_marker, zlib.crc32(payload[:_CRC_OFFSET]))


def write_thumbnail(thumb: Thumbnail) -> bytes:
    """Encode a Thumbnail as baseline 4:4:4 JPEG bytes with optimized Huffman tables."""
    coef, tables = _check_for_writing(thumb)
    hr_size = (int(thumb.hr_size[0]), int(thumb.hr_size[1]))
    width, height = thumbnail_size(hr_size, thumb.scale)
    rows, cols = coef.shape[2:]
    # (64, rows, cols) natural order -> jpeglib's (rows, cols, 8, 8)
    planes = [np.ascontiguousarray(c.transpose(1, 2, 0).reshape(rows, cols, 8, 8)) for c in coef]
    jpeg = jpeglib.from_dct(Y=planes[0], Cb=planes[1], Cr=planes[2],
                            qt=tables.reshape(2, 8, 8).astype(np.uint16))
    # from_dct derives the size from the block grid; declare the real thumbnail size instead.
    # libjpeg recomputes the grid from it, which is why the grid must match it exactly.
    jpeg.height, jpeg.width = height, width
    jpeg.samp_factor = np.ones((3, 2), dtype=np.int32)
    payload = _PAYLOAD.pack(MARKER_TAG, FORMAT_VERSION, thumb.scale, *hr_size, 0)  # CRC: below
    jpeg.markers = [jpeglib.Marker(jpeglib.MarkerType.JPEG_APP15, len(payload), payload)]

    with tempfile.TemporaryDirectory(prefix="hyperthumb-") as tmp:
        path = os.path.join(tmp, "thumbnail.jpg")
        with _JPEGLIB_LOCK:
            try:
                jpeg.write_dct(path, flags=["+OPTIMIZE_CODING"])
            except OSError as exc:
                raise ValueError(f"libjpeg failed to write the thumbnail: {exc}") from exc
        with open(path, "rb") as f:
            data = bytearray(f.read())

    segments, _ = _header_segments(data)
    ours = [s for s in segments if s.code == _APP15 and s.payload.startswith(MARKER_TAG)]
    marker_end = ours[0].end
    data[marker_end - 4:marker_end] = _checksum(payload, data[marker_end:]).to_bytes(4, "big")
    return bytes(data)


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Segment:
    code: int  # marker byte after 0xFF
    payload: bytes  # bytes after the length field
    end: int  # offset just past the segment


def _header_segments(data: bytes | bytearray) -> tuple[list[_Segment], int]:
    """Walk the marker segments after SOI up to and including SOS; return them and the
    offset where the entropy-coded scan data starts."""
    if len(data) == 0:
        raise ThumbnailError("empty input: no thumbnail bytes")
    if data[:2] != b"\xff\xd8":
        raise ThumbnailError("not a JPEG file (does not start with the SOI marker FFD8)")
    segments: list[_Segment] = []
    pos = 2
    while True:
        if pos + 2 > len(data):
            raise ThumbnailError("truncated JPEG: the file ends inside the header")
        if data[pos] != 0xFF:
            raise ThumbnailError(f"corrupt JPEG: expected a marker at byte {pos}")
        code = data[pos + 1]
        if code == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if code in (_SOI, _EOI) or 0xD0 <= code <= 0xD7 or code in (0x00, 0x01):
            raise ThumbnailError(f"corrupt JPEG: unexpected marker FF{code:02X} at byte {pos} "
                                 "before the image data")
        if pos + 4 > len(data):
            raise ThumbnailError("truncated JPEG: the file ends inside the header")
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        end = pos + 2 + length
        if length < 2:
            raise ThumbnailError(f"corrupt JPEG: bad segment length {length} at byte {pos}")
        if end > len(data):
            raise ThumbnailError("truncated JPEG: the file ends inside a header segment")
        segments.append(_Segment(code, bytes(data[pos + 4:end]), end))
        if len(segments) > _MAX_HEADER_SEGMENTS:
            raise ThumbnailError(f"too many JPEG header segments (more than {_MAX_HEADER_SEGMENTS})")
        if code == _SOS:
            return segments, end
        pos = end


def _parse_marker(segments: list[_Segment], max_hr_pixels: int) -> tuple[_Segment, int, int, int]:
    """Validate our APP15 segment; return (segment, scale, width, height)."""
    ours = [s for s in segments if s.code == _APP15 and s.payload.startswith(MARKER_TAG)]
    if not ours:
        raise ThumbnailError("not a HyperThumbnail file: the APP15 'HYPERTHUMB' marker is missing, so this "
                             "is an ordinary JPEG; make a HyperThumbnail from the photo with "
                             "`hyperthumbnail encode` first")
    if len(ours) > 1:
        raise ThumbnailError("corrupt HyperThumbnail file: more than one HYPERTHUMB marker")
    payload = ours[0].payload
    if len(payload) < len(MARKER_TAG) + 1:
        raise ThumbnailError("corrupt HyperThumbnail marker: no format version")
    version = payload[len(MARKER_TAG)]
    if version != FORMAT_VERSION:
        raise ThumbnailError(f"unsupported HyperThumbnail format version {version} "
                             f"(this build reads version {FORMAT_VERSION})")
    if len(payload) != _PAYLOAD.size:
        raise ThumbnailError(f"corrupt HyperThumbnail marker: {len(payload)} bytes, "
                             f"expected {_PAYLOAD.size}")
    _, _, scale, width, height, _ = _PAYLOAD.unpack(payload)
    if scale not in SUPPORTED_SCALES:
        raise ThumbnailError(f"corrupt HyperThumbnail marker: scale {scale} is not one of "
                             f"{SUPPORTED_SCALES}")
    if width < 1 or height < 1:
        raise ThumbnailError(f"corrupt HyperThumbnail marker: HR size {width}x{height}")
    if width * height > max_hr_pixels:
        raise ThumbnailError(f"declared HR size {width}x{height} ({width * height} pixels) exceeds "
                             f"the limit of {max_hr_pixels} pixels")
    return ours[0], scale, width, height


def _check_frame(segments: list[_Segment], expected_size: tuple[int, int]) -> None:
    """Baseline, 8-bit, 3 components at 4:4:4, one interleaved scan, size as the marker says."""
    frames = [s for s in segments if s.code in _SOF_CODES]
    if len(frames) != 1:
        raise ThumbnailError(f"corrupt JPEG: expected one frame header (SOF), found {len(frames)}")
    sof = frames[0]
    if sof.code in _PROGRESSIVE_SOF:
        raise ThumbnailError("progressive JPEG is not a HyperThumbnail file (baseline required)")
    if sof.code != 0xC0:
        raise ThumbnailError(f"not a baseline JPEG (frame type SOF{sof.code - 0xC0})")
    p = sof.payload
    if len(p) < 6 or len(p) != 6 + 3 * p[5]:
        raise ThumbnailError("corrupt JPEG: malformed frame header")
    precision, height, width, ncomp = p[0], int.from_bytes(p[1:3], "big"), \
        int.from_bytes(p[3:5], "big"), p[5]
    if precision != 8:
        raise ThumbnailError(f"not a baseline JPEG: {precision}-bit samples")
    if ncomp != 3:
        raise ThumbnailError(f"expected 3 colour components (YCbCr), found {ncomp}")
    sampling = [p[7 + 3 * i] for i in range(3)]
    if any(s != 0x11 for s in sampling):
        factors = ", ".join(f"{s >> 4}x{s & 15}" for s in sampling)
        raise ThumbnailError(f"chroma subsampling is not 4:4:4 (sampling factors {factors})")
    if (width, height) != expected_size:
        raise ThumbnailError(f"JPEG size {width}x{height} does not match the marker "
                             f"(expected {expected_size[0]}x{expected_size[1]})")
    table_ids = [p[8 + 3 * i] for i in range(3)]
    if table_ids[1] != table_ids[2]:
        raise ThumbnailError("Cb and Cr use different quantization tables (must be shared)")
    defined = set()
    for s in (s for s in segments if s.code == _DQT):
        q = s.payload
        while q:
            if q[0] >> 4 != 0:
                raise ThumbnailError("not a baseline JPEG: 16-bit quantization table")
            if len(q) < 65:
                raise ThumbnailError("corrupt JPEG: truncated quantization table")
            defined.add(q[0] & 15)
            q = q[65:]
    if not set(table_ids) <= defined:
        raise ThumbnailError(f"corrupt JPEG: quantization tables {sorted(set(table_ids) - defined)}"
                             " are used but not defined")
    sos = segments[-1].payload
    if len(sos) < 1 or sos[0] != 3 or len(sos) != 4 + 2 * sos[0] or sos[-3:] != b"\x00\x3f\x00":
        raise ThumbnailError("unsupported JPEG scan: expected one sequential scan of all "
                             "3 components")


def _scan_end(data: bytes, start: int, num_blocks: int) -> int:
    """Offset just past the EOI that must follow the (single) scan.

    Every block costs at least 2 bits (a DC code and an end-of-block code, each >= 1 bit),
    so a scan shorter than that cannot hold the declared size; checking it here keeps a file
    that lies about its size from reaching libjpeg's full-size allocation.
    """
    match = _MARKER_AFTER_SCAN.search(data, start)
    if match is None:
        raise ThumbnailError("truncated JPEG: the image data has no end (EOI marker missing)")
    code = data[match.start() + 1]
    if code != _EOI:
        raise ThumbnailError(f"unsupported JPEG: marker FF{code:02X} after the image data "
                             "(only a single scan followed by EOI is allowed)")
    if (match.start() - start) * 8 < 2 * num_blocks:
        raise ThumbnailError(f"truncated JPEG: {match.start() - start} bytes of image data "
                             f"cannot hold {num_blocks} blocks")
    return match.end()


def read_thumbnail(data: bytes, max_hr_pixels: int = DEFAULT_MAX_HR_PIXELS) -> Thumbnail:
    """Parse and validate thumbnail bytes; raise ThumbnailError naming any problem.

    Headers, sizes (against `max_hr_pixels`, and against the amount of image data actually
    present) and the checksum are checked before libjpeg sees anything, so hostile input fails
    fast and libjpeg's whole-image allocation stays bounded.
    """
    data = bytes(data)
    segments, scan_start = _header_segments(data)
    marker, scale, width, height = _parse_marker(segments, max_hr_pixels)
    hr_size = (width, height)
    _check_frame(segments, thumbnail_size(hr_size, scale))
    rows, cols = _block_grid(hr_size, scale)
    end = _scan_end(data, scan_start, 3 * rows * cols)
    stored_crc = int.from_bytes(marker.payload[_CRC_OFFSET:], "big")
    if _checksum(marker.payload, data[marker.end:end]) != stored_crc:
        raise ThumbnailError("checksum mismatch: the thumbnail is corrupt or was modified")

    with tempfile.TemporaryDirectory(prefix="hyperthumb-") as tmp:
        path = os.path.join(tmp, "thumbnail.jpg")
        with open(path, "wb") as f:
            f.write(data[:end])
        with _JPEGLIB_LOCK:
            try:
                jpeg = jpeglib.read_dct(path)
                jpeg.load()
            except OSError as exc:
                raise ThumbnailError(f"libjpeg could not decode the thumbnail: {exc}") from exc

    planes = [jpeg.Y, jpeg.Cb, jpeg.Cr]
    if any(plane is None or plane.shape != (rows, cols, 8, 8) for plane in planes):
        raise ThumbnailError("libjpeg returned an unexpected coefficient layout")
    coefficients = np.stack([p.reshape(rows, cols, 64).transpose(2, 0, 1) for p in planes])
    tables = np.stack([jpeg.qt[jpeg.quant_tbl_no[0]], jpeg.qt[jpeg.quant_tbl_no[1]]]).reshape(2, 64)
    if tables.min() < 1:
        raise ThumbnailError("corrupt JPEG: quantization table contains 0")
    return Thumbnail(
        coefficients=np.ascontiguousarray(coefficients, dtype=np.int16),
        tables=tables.astype(np.uint8),
        scale=scale,
        hr_size=hr_size,
    )


def scan_bytes(jpeg: bytes) -> int:
    """Length of the entropy-coded data of a single-scan baseline JPEG."""
    i = 2
    while i + 4 <= len(jpeg):
        if jpeg[i] != 0xFF:
            raise ValueError("corrupt JPEG marker stream")
        marker = jpeg[i + 1]
        length = int.from_bytes(jpeg[i + 2:i + 4], "big")
        if marker == 0xDA:  # SOS: the scan follows its header, EOI (2 bytes) closes the file
            return len(jpeg) - (i + 2 + length) - 2
        i += 2 + length
    raise ValueError("no SOS marker found")
