"""Thumbnail file format: DCT, bit-exact round trip, agreement with libjpeg decoders, errors."""
from __future__ import annotations

import io
import math
import struct
import threading
import time
import zlib
from dataclasses import replace

import jpeglib
import numpy as np
import pytest
import scipy.fft
import torch
from PIL import Image, JpegImagePlugin

from hyperthumbnail.codec import (
    Thumbnail,
    ThumbnailError,
    read_thumbnail,
    thumbnail_size,
    write_thumbnail,
)
from hyperthumbnail.model.dct import (
    block_dct,
    block_idct,
    coefficients_to_image,
    image_to_coefficients,
)

# ----------------------------------------------------------------------------- helpers


def grid(hr_size: tuple[int, int], scale: int) -> tuple[int, int]:
    width, height = thumbnail_size(hr_size, scale)
    return math.ceil(height / 8), math.ceil(width / 8)


def random_thumbnail(hr_size=(1001, 677), scale=4, seed=0) -> Thumbnail:
    """Coefficients in realistic ranges: DC anywhere in the 8-bit range, sparse Laplacian AC."""
    rng = np.random.default_rng(seed)
    rows, cols = grid(hr_size, scale)
    coef = np.round(rng.laplace(0.0, 4.0, (3, 64, rows, cols)))
    coef *= rng.random(coef.shape) < 0.4
    coef[:, 0] = rng.integers(-300, 300, (3, rows, cols))
    coef = np.clip(coef, -1023, 1023).astype(np.int16)
    tables = rng.integers(1, 256, (2, 64)).astype(np.uint8)
    return Thumbnail(coef, tables, scale, hr_size)


def segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker code, offset of 0xFF, segment end) for each header segment up to SOS."""
    out, pos = [], 2
    while True:
        code, length = data[pos + 1], int.from_bytes(data[pos + 2:pos + 4], "big")
        out.append((code, pos, pos + 2 + length))
        if code == 0xDA:
            return out
        pos += 2 + length


def find_segment(data: bytes, code: int) -> tuple[int, int]:
    """(start, end) of the first segment with this marker code."""
    return next((s, e) for c, s, e in segments(data) if c == code)


def resign(data: bytes | bytearray) -> bytes:
    """Recompute the marker CRC after a deliberate edit, so deeper checks get exercised."""
    data = bytearray(data)
    start, end = find_segment(bytes(data), 0xEF)
    payload_start = start + 4
    crc = zlib.crc32(bytes(data[end:]), zlib.crc32(bytes(data[payload_start:end - 4])))
    data[end - 4:end] = crc.to_bytes(4, "big")
    return bytes(data)


def marker_segment(scale: int, width: int, height: int, version: int = 1) -> bytes:
    payload = struct.pack(">11sBBIII", b"HYPERTHUMB\0", version, scale, width, height, 0)
    return b"\xff\xef" + (len(payload) + 2).to_bytes(2, "big") + payload


def pillow_jpeg_with_marker(hr_size=(64, 48), scale=4, mode="RGB", **save_kw) -> bytes:
    """A JPEG made by Pillow (not by us) with a HyperThumbnail marker spliced in after SOI."""
    image = Image.new(mode, thumbnail_size(hr_size, scale), 90)
    buf = io.BytesIO()
    image.save(buf, "JPEG", **save_kw)
    data = buf.getvalue()
    return data[:2] + marker_segment(scale, *hr_size) + data[2:]


@pytest.fixture(scope="module")
def thumb() -> Thumbnail:
    return random_thumbnail()


@pytest.fixture(scope="module")
def data(thumb) -> bytes:
    return write_thumbnail(thumb)


# ----------------------------------------------------------------------------- DCT


def test_block_dct_matches_float64_reference():
    rng = np.random.default_rng(1)
    x = rng.uniform(-128, 127, (2, 3, 24, 40))
    ours = block_dct(torch.from_numpy(x).float()).numpy()  # (2,3,64,3,5)
    blocks = x.reshape(2, 3, 3, 8, 5, 8).transpose(0, 1, 2, 4, 3, 5)  # (..., h, w, 8, 8)
    ref = scipy.fft.dctn(blocks, axes=(-2, -1), norm="ortho")
    ref = ref.reshape(2, 3, 3, 5, 64).transpose(0, 1, 4, 2, 3)  # natural order u*8+v
    assert np.abs(ours - ref).max() < 2e-3


def test_block_idct_matches_float64_reference():
    rng = np.random.default_rng(2)
    coef = rng.normal(0, 50, (1, 3, 64, 2, 3))
    ours = block_idct(torch.from_numpy(coef).float()).numpy()
    blocks = coef.reshape(1, 3, 8, 8, 2, 3).transpose(0, 1, 4, 5, 2, 3)
    ref = scipy.fft.idctn(blocks, axes=(-2, -1), norm="ortho")  # (1,3,2,3,8,8)
    ref = ref.transpose(0, 1, 2, 4, 3, 5).reshape(1, 3, 16, 24)
    assert np.abs(ours - ref).max() < 2e-3


# ----------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("hr_size,scale,seed", [((1001, 677), 4, 0), ((640, 480), 2, 1),
                                                ((33, 1), 2, 2)])
def test_round_trip_is_bit_exact(hr_size, scale, seed):
    t = random_thumbnail(hr_size, scale, seed)
    back = read_thumbnail(write_thumbnail(t))
    assert back.coefficients.dtype == np.int16 and back.tables.dtype == np.uint8
    np.testing.assert_array_equal(back.coefficients, t.coefficients)
    np.testing.assert_array_equal(back.tables, t.tables)
    assert back.scale == scale and back.hr_size == hr_size


def test_round_trip_at_baseline_limits():
    t = random_thumbnail((256, 256), 4)
    t.coefficients[:, 1:] = np.where(t.coefficients[:, 1:] > 0, 1023, -1023)
    t.coefficients[:, 0] = np.where(np.indices(t.coefficients.shape[2:]).sum(0) % 2, 1023, -1024)
    t.tables[:] = 1
    back = read_thumbnail(write_thumbnail(t))
    np.testing.assert_array_equal(back.coefficients, t.coefficients)


def test_accepts_int32_coefficients_from_onnx(thumb):
    as_int32 = Thumbnail(thumb.coefficients.astype(np.int32), thumb.tables, thumb.scale,
                         thumb.hr_size)
    assert write_thumbnail(as_int32) == write_thumbnail(thumb)


def test_round_trip_from_several_threads():
    thumbs = [random_thumbnail((200, 120), 2, seed) for seed in range(8)]
    results: dict[int, Thumbnail] = {}

    def work(i):
        for _ in range(5):
            results[i] = read_thumbnail(write_thumbnail(thumbs[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(thumbs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, t in enumerate(thumbs):
        np.testing.assert_array_equal(results[i].coefficients, t.coefficients)


# ----------------------------------------------------------------------------- file structure


def test_file_is_baseline_444_with_our_tables_and_marker(thumb, data):
    codes = [c for c, _, _ in segments(data)]
    assert codes[0] == 0xE0 and codes[1] == 0xEF  # JFIF APP0 first, then ours
    assert 0xC0 in codes and not {0xC1, 0xC2} & set(codes)
    assert data.endswith(b"\xff\xd9")
    im = Image.open(io.BytesIO(data))
    assert JpegImagePlugin.get_sampling(im) == 0  # 4:4:4
    assert not im.info.get("progressive")
    # Pillow reports tables in natural order: an independent check of table orientation
    assert list(im.quantization[0]) == thumb.tables[0].tolist()
    assert list(im.quantization[1]) == thumb.tables[1].tolist()
    [(name, payload)] = [(n, p) for n, p in im.applist if n == "APP15"]
    assert struct.unpack(">11sBBII", payload[:21]) == (b"HYPERTHUMB\0", 2, 4, 1001, 677)


def test_huffman_tables_are_optimized(thumb, data, tmp_path):
    rows, cols = thumb.coefficients.shape[2:]
    planes = [c.transpose(1, 2, 0).reshape(rows, cols, 8, 8).copy() for c in thumb.coefficients]
    plain = jpeglib.from_dct(*planes, qt=thumb.tables.reshape(2, 8, 8).astype(np.uint16))
    path = tmp_path / "plain.jpg"
    plain.write_dct(str(path))  # libjpeg's default: the standard Annex K Huffman tables
    standard_size = path.stat().st_size
    assert len(data) < 0.97 * standard_size


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("hr_size", [(1, 1), (7, 5), (1001, 677), (16, 9)])
def test_declared_size_is_the_thumbnail_size(hr_size, scale):
    data = write_thumbnail(random_thumbnail(hr_size, scale))
    im = Image.open(io.BytesIO(data))
    assert im.mode == "RGB"
    assert im.size == (math.ceil(hr_size[0] / scale), math.ceil(hr_size[1] / scale))
    im.load()
    assert read_thumbnail(data).hr_size == hr_size


# ----------------------------------------------------------------------------- decoding


def test_our_decode_agrees_with_libjpeg():
    hr_size, scale = (1001, 677), 4
    rows, cols = grid(hr_size, scale)
    yy, xx = np.mgrid[0:rows * 8, 0:cols * 8].astype(np.float64)
    # different horizontal and vertical frequencies: a transposed block layout would show
    image = np.stack([128 + 100 * np.sin(xx / 17) * np.cos(yy / 23),
                      128 + 60 * np.cos(xx / 9 + yy / 31),
                      128 + 90 * np.sin((xx + 2 * yy) / 40)], axis=0) / 255
    coef = image_to_coefficients(torch.from_numpy(image)[None].float())[0].numpy()
    rng = np.random.default_rng(3)
    tables = rng.integers(2, 24, (2, 64)).astype(np.uint8)
    step = tables[[0, 1, 1]][:, :, None, None].astype(np.float32)
    q = np.round(coef / step).astype(np.int16)
    data = write_thumbnail(Thumbnail(q, tables, scale, hr_size))
    width, height = thumbnail_size(hr_size, scale)

    ycc = block_idct(torch.from_numpy(q * step)[None])[0] + 128  # (3, H, W) YCbCr
    ours_ycc = ycc.clamp(0, 255).round().permute(1, 2, 0).numpy()[:height, :width]
    ours_rgb = (coefficients_to_image(torch.from_numpy(q * step)[None])[0].clamp(0, 1) * 255)
    ours_rgb = ours_rgb.round().permute(1, 2, 0).numpy()[:height, :width]

    im = Image.open(io.BytesIO(data))
    im.draft("YCbCr", im.size)  # libjpeg's IDCT output before its colour conversion
    pil_ycc = np.asarray(im).astype(np.float32)
    pil_rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.float32)

    # libjpeg's integer IDCT (islow) is within 1 level of the exact float IDCT ...
    assert np.abs(ours_ycc - pil_ycc).max() <= 1
    # ... and libjpeg rounds YCbCr before converting to RGB, so RGB can differ by 2
    # (a Cr off by one moves R by 1.4 plus rounding); the float path is otherwise identical.
    rgb_diff = np.abs(ours_rgb - pil_rgb)
    assert rgb_diff.max() <= 2
    assert rgb_diff.mean() < 0.5


# ----------------------------------------------------------------------------- read errors


def raises(data: bytes, match: str, **kw) -> None:
    with pytest.raises(ThumbnailError, match=match):
        read_thumbnail(data, **kw)


def test_empty_input():
    raises(b"", "empty")


def test_not_a_jpeg():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    raises(buf.getvalue(), "not a JPEG")


@pytest.mark.parametrize("cut", [3, 30, 200])
def test_truncated_header(data, cut):
    raises(data[:cut], "truncated")


def test_truncated_image_data(data):
    raises(data[: len(data) // 2], "truncated")
    raises(data[:-2], "truncated")  # EOI missing


def test_plain_jpeg_without_marker():
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, "JPEG", subsampling=0)
    raises(buf.getvalue(), "marker is missing")


def test_corrupt_image_data_is_detected(data):
    _, scan_header_end = find_segment(data, 0xDA)
    corrupt = bytearray(data)
    corrupt[scan_header_end + 100] ^= 0x21
    raises(bytes(corrupt), "checksum")


def test_tampered_hr_size_is_detected(data):
    start, _ = find_segment(data, 0xEF)
    tampered = bytearray(data)
    tampered[start + 4 + 13:start + 4 + 17] = (1002).to_bytes(4, "big")  # same thumbnail size
    raises(bytes(tampered), "checksum")
    tampered[start + 4 + 13:start + 4 + 17] = (1200).to_bytes(4, "big")
    raises(bytes(tampered), "does not match")


@pytest.mark.parametrize("offset,value,match", [(11, 3, "version 3"), (11, 1, "33 bytes, expected 25"),
                                                (12, 3, "scale 3"), (0, ord("X"), "missing")])
def test_tampered_marker_fields(data, offset, value, match):
    start, _ = find_segment(data, 0xEF)
    tampered = bytearray(data)
    tampered[start + 4 + offset] = value
    raises(bytes(tampered), match)


# ----------------------------------------------------------------------------- model id


def as_format_1(data: bytes) -> bytes:
    """The same thumbnail as a format-1 writer made it: no model id, the CRC recomputed."""
    start, end = find_segment(data, 0xEF)
    payload = bytes(data[start + 4:end])
    v1 = payload[:11] + b"\x01" + payload[12:21]
    v1 += zlib.crc32(data[end:], zlib.crc32(v1)).to_bytes(4, "big")
    return data[:start] + b"\xff\xef" + (len(v1) + 2).to_bytes(2, "big") + v1 + data[end:]


def test_model_id_round_trips_and_is_covered_by_the_crc(thumb):
    from hyperthumbnail.codec.thumbnail import thumbnail_model_id

    data = write_thumbnail(replace(thumb, model_id="0123456789abcdef"))
    assert read_thumbnail(data).model_id == "0123456789abcdef" == thumbnail_model_id(data)
    assert thumbnail_model_id(as_format_1(data)) is None
    plain = io.BytesIO()
    Image.new("RGB", (16, 16)).save(plain, "JPEG")
    with pytest.raises(ThumbnailError, match="marker is missing"):
        thumbnail_model_id(plain.getvalue())
    assert read_thumbnail(write_thumbnail(thumb)).model_id is None  # unknown: all zero
    start, _ = find_segment(data, 0xEF)
    tampered = bytearray(data)
    tampered[start + 4 + 21] ^= 0xFF
    raises(bytes(tampered), "checksum")


@pytest.mark.parametrize("bad", ["0123", "0000000000000000", "not hex at all!!"])
def test_model_id_must_be_16_hex_digits(thumb, bad):
    with pytest.raises(ValueError, match="16 hex digits"):
        write_thumbnail(replace(thumb, model_id=bad))


def test_format_1_thumbnails_stay_readable(thumb):
    """Every thumbnail written before the model id existed is format 1: same pixels, id unknown."""
    v2 = write_thumbnail(replace(thumb, model_id="0123456789abcdef"))
    v1 = as_format_1(v2)
    assert len(v1) == len(v2) - 8
    old = read_thumbnail(v1)
    assert old.model_id is None and old.hr_size == thumb.hr_size
    np.testing.assert_array_equal(old.coefficients, thumb.coefficients)


def test_decoder_refuses_a_thumbnail_of_another_model(thumb):
    from hyperthumbnail.codec.steps import StepError, decode_thumbnail

    ours, other = "0123456789abcdef", "fedcba9876543210"
    data = write_thumbnail(replace(thumb, model_id=other))
    with pytest.raises(StepError, match=f"made by model {other}.*serves {ours}"):
        decode_thumbnail(data, 4, served_models=(ours,))
    assert decode_thumbnail(data, 4, served_models=(ours, other))[2] == thumb.hr_size
    for unknown in (write_thumbnail(thumb), as_format_1(data)):  # no id: taken, as before ids
        assert decode_thumbnail(unknown, 4, served_models=(ours,))[2] == thumb.hr_size


def test_duplicate_marker(data):
    start, end = find_segment(data, 0xEF)
    raises(data[:end] + data[start:end] + data[end:], "more than one")


def test_progressive_jpeg_is_rejected():
    raises(pillow_jpeg_with_marker(progressive=True, subsampling=0), "progressive")


def test_subsampled_jpeg_is_rejected():
    raises(pillow_jpeg_with_marker(subsampling=2), "4:4:4")


def test_greyscale_jpeg_is_rejected():
    raises(pillow_jpeg_with_marker(mode="L"), "3 colour components")


def test_too_many_header_segments(data):
    start, _ = find_segment(data, 0xEF)
    comments = b"\xff\xfe\x00\x03x" * 40
    raises(data[:start] + comments + data[start:], "too many")


def test_huge_declared_size_fails_fast(data):
    sof, _ = find_segment(data, 0xC0)
    marker, _ = find_segment(data, 0xEF)
    huge = bytearray(data)
    huge[marker + 4 + 13:marker + 4 + 21] = struct.pack(">II", 60000, 60000)
    huge[sof + 5:sof + 9] = struct.pack(">HH", 15000, 15000)
    huge = resign(huge)
    start = time.perf_counter()
    raises(huge, "exceeds the limit")
    # allowed by a raised limit, the lie is still caught before libjpeg allocates anything
    raises(huge, "cannot hold", max_hr_pixels=10**10)
    assert time.perf_counter() - start < 0.5


def test_size_limit_is_configurable(data):
    raises(data, "exceeds the limit", max_hr_pixels=1001 * 677 - 1)
    assert read_thumbnail(data, max_hr_pixels=1001 * 677).hr_size == (1001, 677)


def test_libjpeg_errors_become_thumbnail_errors(data):
    # A Huffman table with 3 codes of length 1 is impossible: libjpeg aborts on it.
    dht, _ = find_segment(data, 0xC4)
    bad = bytearray(data)
    counts = dht + 5  # after FF C4, length (2), class/id (1)
    moved = 3 - bad[counts]
    bad[counts] = 3
    # keep the total count (and so the segment length) unchanged
    for i in range(1, 16):
        take = min(moved, bad[counts + i])
        bad[counts + i] -= take
        moved -= take
    assert moved == 0
    raises(resign(bad), "libjpeg")


# ----------------------------------------------------------------------------- write errors


@pytest.mark.parametrize("change,match", [
    (dict(coefficients=np.zeros((3, 64, 2, 2), np.int16)), "shape"),
    (dict(coefficients=np.zeros((3, 64, 11, 16), np.float32)), "integer"),
    (dict(tables=np.zeros((2, 64), np.uint8)), r"\[1, 255\]"),
    (dict(tables=np.full((2, 64), 256, np.int32)), r"\[1, 255\]"),
    (dict(tables=np.ones((3, 64), np.uint8)), "shape"),
    (dict(scale=3), "scale"),
    (dict(hr_size=(0, 10)), "hr_size"),
])
def test_write_rejects_invalid_input(change, match):
    t = random_thumbnail((250, 170), 2)
    fields = dict(coefficients=t.coefficients, tables=t.tables, scale=t.scale, hr_size=t.hr_size)
    fields.update(change)
    with pytest.raises(ValueError, match=match):
        write_thumbnail(Thumbnail(**fields))


def test_write_rejects_coefficients_beyond_baseline():
    t = random_thumbnail((64, 64), 4)
    t.coefficients[1, 5, 0, 1] = 1024
    with pytest.raises(ValueError, match="AC coefficient"):
        write_thumbnail(t)
    t.coefficients[1, 5, 0, 1] = 0
    t.coefficients[0, 0, 0, 0], t.coefficients[0, 0, 0, 1] = -1024, 1024
    with pytest.raises(ValueError, match="DC difference"):
        write_thumbnail(t)
