"""Image loading (modes, EXIF orientation, 16-bit), saving, padding and cropping."""
from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import photo_like
from PIL import Image

from hyperthumbnail.codec import (
    ImageError,
    check_size,
    crop_to,
    load_image,
    pad_to_multiple,
    save_image,
)


def encode(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def rgb_pattern(width: int = 24, height: int = 16) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def check_rgb(arr: np.ndarray, width: int, height: int) -> None:
    assert arr.dtype == np.uint8 and arr.shape == (height, width, 3)


# ----------------------------------------------------------------------------- modes


def test_rgb_png_from_bytes_and_path(tmp_path):
    arr = rgb_pattern()
    data = encode(Image.fromarray(arr))
    np.testing.assert_array_equal(load_image(data), arr)
    path = tmp_path / "a.png"
    path.write_bytes(data)
    np.testing.assert_array_equal(load_image(path), arr)
    np.testing.assert_array_equal(load_image(str(path)), arr)


def test_rgba_is_composited_over_white():
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = (200, 20, 0)
    rgba[..., 3] = [[0, 255, 128], [0, 255, 128]]
    out = load_image(encode(Image.fromarray(rgba, "RGBA")))
    check_rgb(out, 3, 2)
    np.testing.assert_array_equal(out[0, 0], (255, 255, 255))
    np.testing.assert_array_equal(out[0, 1], (200, 20, 0))
    expected = np.round(np.array([200, 20, 0]) * 128 / 255 + 255 * 127 / 255)
    assert np.abs(out[0, 2].astype(int) - expected).max() <= 1


def test_la_is_composited_over_white():
    la = Image.fromarray(np.array([[[10, 0], [10, 255]]], np.uint8), "LA")
    out = load_image(encode(la))
    np.testing.assert_array_equal(out[0], [[255, 255, 255], [10, 10, 10]])


def test_pa_is_composited_over_white():
    p = Image.new("P", (2, 1))
    p.putpalette([0, 0, 255] + [0, 0, 0] * 255)
    pa = p.convert("PA")
    pa.putalpha(Image.fromarray(np.array([[0, 255]], np.uint8)))
    assert pa.mode == "PA"
    out = load_image(encode(pa, "TIFF"))  # PNG cannot store PA; TIFF can
    np.testing.assert_array_equal(out[0], [[255, 255, 255], [0, 0, 255]])


def test_greyscale():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = load_image(encode(Image.fromarray(grey, "L")))
    check_rgb(out, 4, 3)
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))


def test_palette_without_and_with_transparency():
    p = Image.fromarray(np.array([[0, 1, 2]], np.uint8), "P")
    p.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0, 0, 0] * 253)
    np.testing.assert_array_equal(load_image(encode(p))[0], [[255, 0, 0], [0, 255, 0], [0, 0, 255]])
    transparent_green = load_image(encode(p, "GIF", transparency=1))
    np.testing.assert_array_equal(transparent_green[0], [[255, 0, 0], [255, 255, 255], [0, 0, 255]])


@pytest.mark.parametrize("fmt,mode", [("PNG", "I;16"), ("TIFF", "I;16B"), ("TIFF", "I")])
def test_sixteen_bit_is_scaled_not_clipped(fmt, mode):
    values = np.array([[0, 257, 32896, 65535, 1000]], dtype=np.uint16)
    if mode == "I;16B":
        image = Image.frombytes(mode, (5, 1), values.astype(">u2").tobytes())
    elif mode == "I":
        image = Image.fromarray(values.astype(np.int32))
    else:
        image = Image.fromarray(values)
    data = encode(image, fmt)
    assert Image.open(io.BytesIO(data)).mode == mode
    out = load_image(data)
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 255, 4])
    assert (out == out[..., :1]).all()


def test_cmyk_jpeg():
    cmyk = Image.new("CMYK", (16, 8), (0, 255, 255, 0))  # red
    data = encode(cmyk, "JPEG", quality=95)
    out = load_image(data)
    check_rgb(out, 16, 8)
    np.testing.assert_array_equal(out, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    assert out[..., 0].min() > 240 and out[..., 1:].max() < 15


def test_ycbcr_jpeg_matches_pillow():
    data = encode(Image.fromarray(rgb_pattern(33, 17)), "JPEG", quality=90)
    out = load_image(data)
    check_rgb(out, 33, 17)
    np.testing.assert_array_equal(out, np.asarray(Image.open(io.BytesIO(data))))


# ----------------------------------------------------------------------------- EXIF


def exif_with_orientation(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif


@pytest.mark.parametrize("orientation,transform", [
    (3, lambda a: np.rot90(a, 2)),
    (6, lambda a: np.rot90(a, -1)),  # stored image must be turned 90 degrees clockwise
    (8, lambda a: np.rot90(a, 1)),
    (2, lambda a: a[:, ::-1]),
])
def test_exif_orientation_png_exact(orientation, transform):
    arr = rgb_pattern(24, 16)
    out = load_image(encode(Image.fromarray(arr), "PNG", exif=exif_with_orientation(orientation)))
    np.testing.assert_array_equal(out, transform(arr))


def test_exif_orientation_jpeg():
    arr = np.zeros((16, 32, 3), np.uint8)
    arr[:, :16] = (250, 0, 0)  # left half red, right half blue
    arr[:, 16:] = (0, 0, 250)
    data = encode(Image.fromarray(arr), "JPEG", quality=95, exif=exif_with_orientation(6))
    out = load_image(data)
    check_rgb(out, 16, 32)  # rotated: width and height swap
    assert out[2, 8, 0] > 200 and out[2, 8, 2] < 50  # red ends on top after a clockwise turn
    assert out[29, 8, 2] > 200 and out[29, 8, 0] < 50


# ----------------------------------------------------------------------------- errors and sizes


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 30])
def test_unreadable_bytes(data):
    with pytest.raises(ImageError, match="cannot read image"):
        load_image(data)


def test_truncated_file():
    data = encode(Image.fromarray(rgb_pattern(64, 64)))
    with pytest.raises(ImageError, match="cannot read image"):
        load_image(data[: len(data) // 2])


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="cannot open image"):
        load_image(tmp_path / "missing.png")


def test_size_limit_is_checked_before_decoding():
    data = encode(Image.new("RGB", (100, 50)))
    with pytest.raises(ImageError, match="more than the limit"):
        load_image(data, max_pixels=4999)
    check_rgb(load_image(data, max_pixels=5000), 100, 50)
    check_rgb(load_image(data, max_pixels=None), 100, 50)


def test_check_size():
    check_size(10, 10, 100)
    with pytest.raises(ImageError, match="no pixels"):
        check_size(0, 10)
    with pytest.raises(ImageError, match="more than the limit"):
        check_size(11, 10, 100)


def test_save_image_png_round_trip(tmp_path):
    arr = rgb_pattern()
    save_image(arr, tmp_path / "out.png")
    assert Image.open(tmp_path / "out.png").format == "PNG"
    np.testing.assert_array_equal(load_image(tmp_path / "out.png"), arr)


@pytest.mark.parametrize("bands", [None, 1, 2, 3, 7])
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (1200, 1), (1100, 1700)])
def test_png_deflated_in_bands_is_the_same_photo(shape, bands):
    """Bands cut at any row (and more bands than rows would allow) join into one valid zlib stream:
    Pillow (libpng's rules: CRCs, Adler-32, filters) reads back exactly the pixels."""
    from hyperthumbnail.codec.png import png_rgb8

    arr = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    arr[: shape[0] // 2] //= 16  # some compressible rows too
    with Image.open(io.BytesIO(png_rgb8(arr, level=1, bands=bands))) as im:
        im.load()
        assert im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), arr)


def test_save_image_rejects_bad_input(tmp_path):
    with pytest.raises(ImageError, match="HxWx3 uint8"):
        save_image(np.zeros((4, 4, 3), np.float32), tmp_path / "a.png")
    with pytest.raises(ImageError, match="HxWx3 uint8"):
        save_image(np.zeros((4, 4), np.uint8), tmp_path / "a.png")
    with pytest.raises(ImageError, match="cannot write"):
        save_image(rgb_pattern(), tmp_path / "a.unknown-extension")


def test_save_image_format_by_extension_and_level(tmp_path):
    arr = photo_like(96, 64)
    sizes = {}
    for level in (0, 1, 9):
        save_image(arr, tmp_path / f"l{level}.png", level=level)
        np.testing.assert_array_equal(load_image(tmp_path / f"l{level}.png"), arr)  # lossless at any level
        sizes[level] = (tmp_path / f"l{level}.png").stat().st_size
    assert sizes[0] > sizes[1] >= sizes[9]  # the level reaches zlib
    save_image(arr, tmp_path / "default.png")
    assert (tmp_path / "default.png").read_bytes() == (tmp_path / "l1.png").read_bytes()  # fast by default
    for name, fmt in (("a.jpg", "JPEG"), ("a.JPEG", "JPEG"), ("a.webp", "WEBP")):
        save_image(arr, tmp_path / name, level=80)
        with Image.open(tmp_path / name) as im:
            assert im.format == fmt and im.size == (96, 64)
    save_image(arr, tmp_path / "q95.jpg")
    save_image(arr, tmp_path / "q10.jpg", level=10)
    assert (tmp_path / "q10.jpg").stat().st_size < (tmp_path / "q95.jpg").stat().st_size


def test_save_image_rejects_bad_levels(tmp_path):
    with pytest.raises(ImageError, match=r"PNG compress level must be in 0..9, got 10"):
        save_image(rgb_pattern(), tmp_path / "a.png", level=10)
    with pytest.raises(ImageError, match=r"JPEG quality must be in 1..100, got 0"):
        save_image(rgb_pattern(), tmp_path / "a.jpg", level=0)
    with pytest.raises(ImageError, match="no level/quality setting"):
        save_image(rgb_pattern(), tmp_path / "a.bmp", level=3)
    with pytest.raises(ImageError, match="unknown file extension"):
        save_image(rgb_pattern(), tmp_path / "noextension")
    assert not list(tmp_path.iterdir())  # nothing half-written


# ----------------------------------------------------------------------------- padding


def test_pad_replicates_edges_bottom_right():
    arr = rgb_pattern(5, 3)
    padded = pad_to_multiple(arr, 4)
    assert padded.shape == (4, 8, 3)
    np.testing.assert_array_equal(padded[:3, :5], arr)
    np.testing.assert_array_equal(padded[3, :5], arr[2])  # bottom row repeated
    np.testing.assert_array_equal(padded[:3, 5:], np.repeat(arr[:, 4:5], 3, axis=1))
    np.testing.assert_array_equal(padded[3, 7], arr[2, 4])


def test_pad_is_a_no_op_when_aligned_and_works_in_2d():
    arr = rgb_pattern(16, 8)
    assert pad_to_multiple(arr, 8) is arr
    assert pad_to_multiple(np.zeros((1, 1), np.uint8), 32).shape == (32, 32)
    with pytest.raises(ValueError):
        pad_to_multiple(arr, 0)


def test_crop_undoes_pad():
    arr = rgb_pattern(1001, 677)
    padded = pad_to_multiple(arr, 32)
    assert padded.shape == (704, 1024, 3)
    np.testing.assert_array_equal(crop_to(padded, 1001, 677), arr)
    with pytest.raises(ValueError, match="cannot crop"):
        crop_to(arr, 1002, 677)
