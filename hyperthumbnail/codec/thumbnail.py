"""The thumbnail file: a standard baseline JPEG that also carries what the HR decoder needs.

The file is written at DCT level with `jpeglib` (libjpeg `jpeg_write_coefficients`): the exact
quantized coefficients and tables the encoder produced, no pixel re-encoding. Any JPEG viewer
shows it as an ordinary thumbnail of size ceil(W/scale) x ceil(H/scale).

HyperThumbnail marker (APP15, 0xFFEF; APP15 has no registered users, unlike APP11 which
JPEG XT / JUMBF use). libjpeg places it right after the JFIF APP0 segment, which JFIF requires
to come first after SOI. Payload, big-endian, 33 bytes (format version 2):

    offset size  field
    0      11    tag b"HYPERTHUMB\\0"
    11     1     format version (2)
    12     1     scale (2 or 4)
    13     4     original HR width  (uint32)
    17     4     original HR height (uint32)
    21     8     model id: which encoder made the coefficients (`weights.model_id`, the first 8
                 bytes of the SHA-256 of its encoder and QPM tensors); all zero = unknown
    29     4     CRC-32 (zlib) of payload bytes 0..28 followed by every byte after this
                 segment up to and including EOI

Format version 1 (every thumbnail written before the model id existed) is the same without the
model id (25 bytes, CRC at offset 21); it is read as "model unknown", like a v2 id of zeros (a
stripped thumbnail whose marker was written again). A decoder refuses a known id it was not
trained for (`steps.decode_thumbnail`) instead of rebuilding garbage from it.

libjpeg only *warns* about corrupt or truncated entropy-coded data (it pads with zeros and
returns garbage coefficients), so the CRC is what turns such damage into an error; covering the
marker fields too means a changed HR size cannot go unnoticed either.

Photo metadata (metadata.py) goes between the JFIF APP0 and our APP15: APP1 EXIF, APP1 XMP, APP2
ICC chunks. It is outside the CRC, so tools that edit or strip metadata leave the file valid.

A *stripped* thumbnail (every APPn removed, e.g. `jpegtran -copy none` or a CDN's optimiser;
DCT coefficients untouched) still holds everything but the scale and the original size:
`read_thumbnail(data, scale=4, hr_size=...)` reads it (without `hr_size`: the thumbnail size
times the scale). There is no CRC to check then, so a JPEG whose quantization tables are
libjpeg's standard quality tables, i.e. re-encoded pixels, is refused.
"""
from __future__ import annotations

import math
import os
import re
import struct
import tempfile
import threading
import zlib
from dataclasses import dataclass, field

import jpeglib
import numpy as np

from ..interface import COEF_LIMIT
from .metadata import EXIF_HEADER, ICC_HEADER, XMP_HEADER, Metadata, MetadataError, icc_from_chunks, icc_segments

__all__ = [
    "DEFAULT_MAX_HR_PIXELS",
    "MAX_JPEG_SIDE",
    "SUPPORTED_SCALES",
    "Thumbnail",
    "ThumbnailError",
    "read_metadata",
    "read_thumbnail",
    "restore_marker",
    "scan_bytes",
    "thumbnail_model_id",
    "thumbnail_size",
    "with_metadata",
    "write_thumbnail",
]

SUPPORTED_SCALES = (2, 4)
DEFAULT_MAX_HR_PIXELS = 60_000_000
FORMAT_VERSION = 2
MARKER_TAG = b"HYPERTHUMB\0"
MODEL_ID_BYTES = 8
_APP15 = 0xEF
# tag, version, scale, width, height, [model id,] crc32; the CRC is always the last 4 bytes.
_PAYLOADS = {1: struct.Struct(">11sBBIII"), 2: struct.Struct(f">11sBBII{MODEL_ID_BYTES}sI")}
_PAYLOAD = _PAYLOADS[FORMAT_VERSION]
_UNKNOWN_MODEL = bytes(MODEL_ID_BYTES)

# Baseline Huffman coding encodes at most 11-bit DC differences and 10-bit AC values
# (libjpeg's MAX_COEF_BITS); anything larger makes libjpeg abort the write.
_MAX_DC_DIFF = 2047
MAX_JPEG_SIDE = 65535  # 16-bit size fields in SOF: the largest thumbnail side
_MAX_HEADER_SEGMENTS = 32  # jpeglib keeps at most 50 APPn/COM markers in fixed C arrays

_APP0, _APP1, _APP2 = 0xE0, 0xE1, 0xE2
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
    metadata: ICC profile, EXIF and XMP of the photo (written as APP2/APP1 segments).
    model_id: hex id of the encoder that made the coefficients (`weights.model_id`); None when
        unknown (a format-1 file, or a stripped one whose marker was written again).
    """

    coefficients: np.ndarray
    tables: np.ndarray
    scale: int
    hr_size: tuple[int, int]
    metadata: Metadata = field(default_factory=Metadata)
    model_id: str | None = None


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
    return zlib.crc32(after_marker, zlib.crc32(payload[:-4]))


def _model_id_bytes(model_id: str | None) -> bytes:
    if model_id is None:
        return _UNKNOWN_MODEL
    try:
        raw = bytes.fromhex(model_id)
    except ValueError:
        raw = b""
    if len(raw) != MODEL_ID_BYTES or raw == _UNKNOWN_MODEL:
        raise ValueError(f"model id must be {2 * MODEL_ID_BYTES} hex digits (not all zero), got {model_id!r}")
    return raw


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
    payload = _PAYLOAD.pack(MARKER_TAG, FORMAT_VERSION, thumb.scale, *hr_size,
                            _model_id_bytes(thumb.model_id), 0)  # CRC: below
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
    return with_metadata(data, thumb.metadata) if thumb.metadata else bytes(data)


def with_metadata(data: bytes, metadata: Metadata) -> bytes:
    """The thumbnail (or any JPEG) `data` with its EXIF, XMP and ICC segments replaced by
    `metadata`'s, placed after the JFIF APP0 (or SOI). Pixels, marker and CRC are untouched.

    Raises ThumbnailError if `data` is not a readable JPEG header, ValueError if the metadata
    does not fit in JPEG segments.
    """
    data = bytes(data)
    segments, _ = _header_segments(data)
    new = _metadata_segments(metadata)
    out, pos = [data[:2]], 2
    for i, segment in enumerate(segments):
        if new is not None and not (i == 0 and segment.code == _APP0):
            out.append(new)  # right after APP0, or after SOI when there is no APP0
            new = None
        if not _is_metadata(segment):
            out.append(data[pos:segment.end])  # fill bytes before a marker travel with it
        pos = segment.end
    out.append(data[pos:])
    return b"".join(out)


def _is_metadata(segment: _Segment) -> bool:
    if segment.code == _APP1:
        return segment.payload.startswith(EXIF_HEADER) or segment.payload.startswith(XMP_HEADER)
    return segment.code == _APP2 and segment.payload.startswith(ICC_HEADER)


def _segment(code: int, payload: bytes) -> bytes:
    return bytes((0xFF, code)) + (len(payload) + 2).to_bytes(2, "big") + payload


def _metadata_segments(metadata: Metadata) -> bytes:
    """APP1 EXIF, APP1 XMP, APP2 ICC chunks: the order cameras and Pillow use after JFIF."""
    try:
        icc = icc_segments(metadata.icc_profile or b"")
    except MetadataError as exc:
        raise ValueError(str(exc)) from exc
    out = []
    if metadata.exif:
        exif = metadata.exif if metadata.exif.startswith(EXIF_HEADER) else EXIF_HEADER + metadata.exif
        if len(exif) > 65533:
            raise ValueError(f"the EXIF data is {len(exif)} bytes, more than one APP1 segment holds")
        out.append(_segment(_APP1, exif))
    if metadata.xmp:
        if len(XMP_HEADER) + len(metadata.xmp) > 65533:
            raise ValueError(f"the XMP packet is {len(metadata.xmp)} bytes, more than one APP1 segment holds")
        out.append(_segment(_APP1, XMP_HEADER + metadata.xmp))
    out += [_segment(_APP2, chunk) for chunk in icc]
    return b"".join(out)


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


MISSING_MARKER = ("not a HyperThumbnail file: the APP15 'HYPERTHUMB' marker is missing. If it is a "
                  "HyperThumbnail whose metadata was stripped (jpegtran -copy none, a CDN), decode it "
                  "with --scale 4 (or 2) and --size WxH (the original size; default: the thumbnail "
                  "size times the scale); if it is an ordinary JPEG, make a HyperThumbnail from the "
                  "photo with `hyperthumbnail encode` first")


def _parse_marker(segments: list[_Segment], max_hr_pixels: int
                  ) -> tuple[_Segment, int, int, int, str | None] | None:
    """Validate our APP15 segment; return (segment, scale, width, height, model id), None if
    there is none."""
    ours = [s for s in segments if s.code == _APP15 and s.payload.startswith(MARKER_TAG)]
    if not ours:
        return None
    if len(ours) > 1:
        raise ThumbnailError("corrupt HyperThumbnail file: more than one HYPERTHUMB marker")
    payload = ours[0].payload
    if len(payload) < len(MARKER_TAG) + 1:
        raise ThumbnailError("corrupt HyperThumbnail marker: no format version")
    version = payload[len(MARKER_TAG)]
    layout = _PAYLOADS.get(version)
    if layout is None:
        raise ThumbnailError(f"unsupported HyperThumbnail format version {version} "
                             f"(this build reads versions {', '.join(map(str, _PAYLOADS))})")
    if len(payload) != layout.size:
        raise ThumbnailError(f"corrupt HyperThumbnail marker: {len(payload)} bytes, "
                             f"expected {layout.size} for format version {version}")
    fields = layout.unpack(payload)
    scale, width, height = fields[2:5]
    raw_id = fields[5] if version >= 2 else _UNKNOWN_MODEL
    if scale not in SUPPORTED_SCALES:
        raise ThumbnailError(f"corrupt HyperThumbnail marker: scale {scale} is not one of "
                             f"{SUPPORTED_SCALES}")
    if width < 1 or height < 1:
        raise ThumbnailError(f"corrupt HyperThumbnail marker: HR size {width}x{height}")
    _check_hr_pixels(width, height, max_hr_pixels)
    return ours[0], scale, width, height, (None if raw_id == _UNKNOWN_MODEL else raw_id.hex())


def _check_hr_pixels(width: int, height: int, max_hr_pixels: int) -> None:
    if width * height > max_hr_pixels:
        raise ThumbnailError(f"declared HR size {width}x{height} ({width * height} pixels) exceeds "
                             f"the limit of {max_hr_pixels} pixels")


def _frame_size(segments: list[_Segment]) -> tuple[int, int]:
    """(width, height) from the frame header (checked in full by _check_frame)."""
    frames = [s for s in segments if s.code in _SOF_CODES]
    if len(frames) != 1 or len(frames[0].payload) < 5:
        raise ThumbnailError(f"corrupt JPEG: expected one frame header (SOF), found {len(frames)}")
    p = frames[0].payload
    return int.from_bytes(p[3:5], "big"), int.from_bytes(p[1:3], "big")


def _stripped_geometry(segments: list[_Segment], scale: int | None, hr_size: tuple[int, int] | None,
                       max_hr_pixels: int) -> tuple[int, tuple[int, int]]:
    """(scale, HR size) of a thumbnail without our marker, from what the caller says."""
    if scale is None:
        raise ThumbnailError(MISSING_MARKER)
    if scale not in SUPPORTED_SCALES:
        raise ThumbnailError(f"--scale {scale} is not one of {SUPPORTED_SCALES}")
    width, height = _frame_size(segments)
    if width < 1 or height < 1:
        raise ThumbnailError(f"corrupt JPEG: frame size {width}x{height}")
    if hr_size is None:
        hr_size = (width * scale, height * scale)
    elif thumbnail_size(hr_size, scale) != (width, height):
        expected = thumbnail_size(hr_size, scale)
        raise ThumbnailError(f"--size {hr_size[0]}x{hr_size[1]} at --scale {scale} means a "
                             f"{expected[0]}x{expected[1]} thumbnail, but this JPEG is {width}x{height}")
    _check_hr_pixels(*hr_size, max_hr_pixels)
    return scale, hr_size


def _metadata(segments: list[_Segment]) -> Metadata:
    """ICC profile (APP2 chunks), EXIF and XMP (first APP1 of each kind) in the header."""
    exif = next((s.payload for s in segments if s.code == _APP1 and s.payload.startswith(EXIF_HEADER)), None)
    xmp = next((s.payload[len(XMP_HEADER):] for s in segments
                if s.code == _APP1 and s.payload.startswith(XMP_HEADER)), None)
    try:
        icc = icc_from_chunks([s.payload for s in segments if s.code == _APP2 and s.payload.startswith(ICC_HEADER)])
    except MetadataError as exc:
        raise ThumbnailError(f"{exc} (metadata can be removed with `jpegtran -copy none`; the image "
                             "then decodes with --scale and --size)") from exc
    return Metadata(icc_profile=icc, exif=exif, xmp=xmp)


# libjpeg's standard tables (ITU-T T.81 K.1), natural order, which it scales by quality.
_IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99])
_IJG_CHROMA = np.array([17, 18, 24, 47] + [99] * 4 + [18, 21, 26, 66] + [99] * 4 + [24, 26, 56] + [99] * 5
                       + [47, 66] + [99] * 6 + [99] * 32)


def _ijg_quality(tables: np.ndarray) -> int | None:
    """The libjpeg quality (1-100) whose standard tables these are, or None."""
    for quality in range(1, 101):
        factor = 5000 // quality if quality < 50 else 200 - 2 * quality
        expected = [np.clip((t * factor + 50) // 100, 1, 255) for t in (_IJG_LUMA, _IJG_CHROMA)]
        if np.array_equal(tables[0], expected[0]) and np.array_equal(tables[1], expected[1]):
            return quality
    return None


def _check_frame(segments: list[_Segment], expected_size: tuple[int, int],
                 source: str = "the marker") -> None:
    """Baseline, 8-bit, 3 components at 4:4:4, one interleaved scan, size as `source` says."""
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
        raise ThumbnailError(f"chroma subsampling is not 4:4:4 (sampling factors {factors}): a "
                             "HyperThumbnail is always 4:4:4, so this JPEG was re-encoded or is an "
                             "ordinary one")
    if (width, height) != expected_size:
        raise ThumbnailError(f"JPEG size {width}x{height} does not match {source} "
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


def read_thumbnail(data: bytes, max_hr_pixels: int = DEFAULT_MAX_HR_PIXELS, scale: int | None = None,
                   hr_size: tuple[int, int] | None = None) -> Thumbnail:
    """Parse and validate thumbnail bytes; raise ThumbnailError naming any problem.

    Headers, sizes (against `max_hr_pixels`, and against the amount of image data actually
    present) and the checksum are checked before libjpeg sees anything, so hostile input fails
    fast and libjpeg's whole-image allocation stays bounded.

    `scale` and `hr_size` (width, height) are for a thumbnail whose APP segments were stripped:
    they stand in for the marker (hr_size defaults to the thumbnail size times the scale). If
    the marker is there, they must agree with it.
    """
    data = bytes(data)
    segments, scan_start = _header_segments(data)
    parsed = _parse_marker(segments, max_hr_pixels)
    if parsed is None:
        scale, hr_size = _stripped_geometry(segments, scale, hr_size, max_hr_pixels)
        _check_frame(segments, thumbnail_size(hr_size, scale), "--size/--scale")
        model_id = None
    else:
        marker, marked_scale, width, height, model_id = parsed
        if scale is not None and scale != marked_scale:
            raise ThumbnailError(f"--scale {scale} disagrees with the thumbnail's marker (scale {marked_scale})")
        if hr_size is not None and tuple(hr_size) != (width, height):
            raise ThumbnailError(f"--size {hr_size[0]}x{hr_size[1]} disagrees with the thumbnail's "
                                 f"marker (size {width}x{height})")
        scale, hr_size = marked_scale, (width, height)
        _check_frame(segments, thumbnail_size(hr_size, scale))
    rows, cols = _block_grid(hr_size, scale)
    end = _scan_end(data, scan_start, 3 * rows * cols)
    if parsed is not None:
        stored_crc = int.from_bytes(marker.payload[-4:], "big")
        if _checksum(marker.payload, data[marker.end:end]) != stored_crc:
            raise ThumbnailError("checksum mismatch: the thumbnail is corrupt or was modified "
                                 "(re-encoding changes it too)")
    metadata = _metadata(segments)

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
    quality = _ijg_quality(tables) if parsed is None else None
    if quality is not None:
        raise ThumbnailError(f"the quantization tables are libjpeg's standard quality-{quality} tables: "
                             "this JPEG was re-encoded (or is an ordinary JPEG), so its coefficients are "
                             "not the encoder's; decode the original thumbnail")
    return Thumbnail(
        coefficients=np.ascontiguousarray(coefficients, dtype=np.int16),
        tables=tables.astype(np.uint8),
        scale=scale,
        hr_size=hr_size,
        metadata=metadata,
        model_id=model_id,
    )


def thumbnail_model_id(data: bytes) -> str | None:
    """The model id in a thumbnail's marker from its header alone (no entropy decoding, no CRC
    check): what a gateway routes on. None for a file without an id; ThumbnailError if the header
    is unreadable or the JPEG has no HyperThumbnail marker."""
    parsed = _parse_marker(_header_segments(bytes(data))[0], max_hr_pixels=2**64)
    if parsed is None:
        raise ThumbnailError(MISSING_MARKER)
    return parsed[4]


def read_metadata(data: bytes) -> Metadata:
    """The ICC profile, EXIF and XMP in a JPEG's header, without decoding anything else.
    Raises ThumbnailError if the header is unreadable or the ICC chunks do not add up."""
    return _metadata(_header_segments(bytes(data))[0])


def restore_marker(data: bytes, scale: int, hr_size: tuple[int, int] | None = None,
                   max_hr_pixels: int = DEFAULT_MAX_HR_PIXELS) -> bytes:
    """A stripped thumbnail (no APP15 marker) as a complete one: the same coefficients and tables
    with the marker and CRC written again, so every decoder path (in-process, SDK, server) takes it
    and rebuilds exactly the pixels of the unstripped file. A file that still has its marker is
    returned as it is (after checking `scale`/`hr_size` agree with it). Raises ThumbnailError.
    """
    thumb = read_thumbnail(data, max_hr_pixels=max_hr_pixels, scale=scale, hr_size=hr_size)
    if _parse_marker(_header_segments(bytes(data))[0], max_hr_pixels) is not None:
        return bytes(data)
    try:
        return write_thumbnail(thumb)
    except ValueError as exc:  # coefficients libjpeg read but baseline Huffman cannot code
        raise ThumbnailError(f"cannot rebuild the thumbnail: {exc}") from exc


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
