"""Photo fidelity in the codec: ICC/EXIF/XMP carried, colour spaces converted, stripped thumbnails.

Real tools check the files: libjpeg-turbo's `djpeg` and `jpegtran`, `jpeginfo -c` (Debian
packages in .ci/apt-packages.txt), Pillow reads the metadata back; the ICC profiles are
Ghostscript's (libgs-common): Adobe RGB (1998) and a 187 kB CMYK profile (3 APP2 chunks).
"""
from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageCms
from test_codec import random_thumbnail, segments

from hyperthumbnail.codec import (
    ImageError,
    Metadata,
    ThumbnailError,
    load_image_with_metadata,
    read_metadata,
    read_thumbnail,
    restore_marker,
    save_image,
    with_metadata,
    write_thumbnail,
)
from hyperthumbnail.codec.images import SRGB_PROFILE
from hyperthumbnail.codec.metadata import MAX_ICC_BYTES, MetadataError, icc_from_chunks, icc_segments, sanitize_exif

ICC_DIR = Path("/usr/share/color/icc/ghostscript")
ADOBE_RGB = ICC_DIR / "a98.icc"
CMYK = ICC_DIR / "default_cmyk.icc"
TOOLS = ("djpeg", "jpegtran", "jpeginfo")


def require(*paths: Path) -> None:
    missing = [str(p) for p in paths if not p.is_file()] + [t for t in TOOLS if shutil.which(t) is None]
    if missing:  # the suite installs these (make system-deps); fail loudly rather than skip
        pytest.fail(f"missing {missing}: run `make system-deps` (.ci/apt-packages.txt)")


def photo(width=64, height=48, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], -1) + rng.integers(0, 20, (height, width, 3))
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def camera_exif(orientation=6, gps=True, ifd1=True) -> bytes:
    """EXIF like a phone's: Make/Model, Orientation, Exif IFD with size, GPS, an IFD1 thumbnail."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "HyperCam"
    exif[ExifTags.Base.Model] = "HC-1"
    exif[ExifTags.Base.Orientation] = orientation
    exif.get_ifd(ExifTags.IFD.Exif).update({ExifTags.Base.DateTimeOriginal: "2026:11:29 12:00:00",
                                            ExifTags.Base.ExifImageWidth: 64, ExifTags.Base.ExifImageHeight: 48})
    if gps:
        exif.get_ifd(ExifTags.IFD.GPSInfo).update({1: "N", 2: (48.0, 51.0, 30.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    raw = exif.tobytes()
    if ifd1:  # an IFD1 with a JPEG thumbnail, as cameras write (Pillow does not write IFD1 itself)
        tiff = bytearray(raw[6:])
        order = "little" if tiff[:2] == b"II" else "big"
        thumb = io.BytesIO()
        Image.new("RGB", (8, 8), "red").save(thumb, "JPEG")
        ifd1_at = len(tiff)
        entries = [(0x0201, 4, 1, ifd1_at + 2 + 2 * 12 + 4), (0x0202, 4, 1, len(thumb.getvalue()))]
        tiff += len(entries).to_bytes(2, order)
        for tag, typ, count, value in entries:
            tiff += tag.to_bytes(2, order) + typ.to_bytes(2, order) + count.to_bytes(4, order) + value.to_bytes(4, order)
        tiff += bytes(4) + thumb.getvalue()
        ifd0_count = int.from_bytes(tiff[8:10], order)  # IFD0 at offset 8 (Pillow's layout)
        next_at = 10 + 12 * ifd0_count
        assert tiff[next_at:next_at + 4] == bytes(4)
        tiff[next_at:next_at + 4] = ifd1_at.to_bytes(4, order)
        assert Image.Exif().load(b"Exif\0\0" + bytes(tiff)) is None
        raw = b"Exif\0\0" + bytes(tiff)
    return raw


XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:exif="http://ns.adobe.com/exif/1.0/" '
       b'tiff:Orientation="6" exif:GPSLatitude="48,51.5N"><exif:GPSLongitude>2,17.6E</exif:GPSLongitude>'
       b'</rdf:Description></rdf:RDF></x:xmpmeta>')


def jpeg_photo(**save) -> bytes:
    buf = io.BytesIO()
    photo().save(buf, "JPEG", quality=95, **save)
    return buf.getvalue()


def check_with_tools(path: Path) -> None:
    """djpeg decodes it and jpeginfo -c finds no error (both exit 0, nothing on stderr)."""
    for cmd in (["djpeg", "-outfile", "/dev/null", str(path)], ["jpeginfo", "-c", str(path)]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0 and not done.stderr, (cmd, done.stdout, done.stderr)
    assert "OK" in done.stdout and "WARNING" not in done.stdout


# ----------------------------------------------------------------------------- input side


def test_photo_metadata_is_read_and_rewritten_for_upright_pixels():
    require(ADOBE_RGB)
    profile = ADOBE_RGB.read_bytes()
    data = jpeg_photo(icc_profile=profile, exif=camera_exif(), xmp=XMP)
    pixels, meta = load_image_with_metadata(data)
    assert pixels.shape == (64, 48, 3)  # Orientation 6: rotated upright
    assert meta.icc_profile == profile  # RGB: pixels and profile kept as they are
    exif = Image.Exif()
    exif.load(meta.exif)
    assert exif[ExifTags.Base.Make] == "HyperCam" and exif[ExifTags.Base.Orientation] == 1
    assert exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.ExifImageWidth] == 48  # upright size
    assert exif.get_ifd(ExifTags.IFD.GPSInfo)[1] == "N"
    assert b"\xff\xd8" not in meta.exif  # the EXIF thumbnail (IFD1) is gone
    assert b'tiff:Orientation="1"' in meta.xmp


def test_exif_thumbnail_ifd1_is_dropped():
    raw = camera_exif()
    assert raw.count(b"\xff\xd8") == 1  # the input has its embedded JPEG thumbnail
    out = sanitize_exif(raw)
    assert b"\xff\xd8" not in out
    order = "little" if out[6:8] == b"II" else "big"
    ifd0 = int.from_bytes(out[6 + 4:6 + 8], order)
    count = int.from_bytes(out[6 + ifd0:6 + ifd0 + 2], order)
    link = 6 + ifd0 + 2 + 12 * count
    assert int.from_bytes(out[link:link + 4], order) == 0  # IFD0 links to no IFD1
    parsed = Image.Exif()
    parsed.load(raw)
    assert parsed.get_ifd(ExifTags.IFD.IFD1)  # while the input had one


def test_strip_gps_and_strip_metadata():
    data = jpeg_photo(icc_profile=ADOBE_RGB.read_bytes(), exif=camera_exif(), xmp=XMP)
    _, meta = load_image_with_metadata(data, strip_gps=True)
    exif = Image.Exif()
    exif.load(meta.exif)
    assert ExifTags.IFD.GPSInfo not in exif and exif[ExifTags.Base.Make] == "HyperCam"
    assert b"GPS" not in meta.xmp and b"tiff:Orientation" in meta.xmp
    pixels, meta = load_image_with_metadata(data, strip_metadata=True)
    assert meta == Metadata() and not meta
    # stripped, the Adobe RGB pixels are converted to sRGB so they still look right untagged
    kept, _ = load_image_with_metadata(data)
    assert pixels.shape == kept.shape and np.abs(pixels.astype(int) - kept).max() > 5


def test_cmyk_with_profile_is_converted_by_littlecms():
    require(CMYK)
    cmyk = ImageCms.profileToProfile(photo(), ImageCms.createProfile("sRGB"), str(CMYK), outputMode="CMYK")
    buf = io.BytesIO()
    cmyk.save(buf, "JPEG", quality=95, icc_profile=CMYK.read_bytes())
    with Image.open(io.BytesIO(buf.getvalue())) as check:  # Pillow itself splits it over APP2s
        assert check.mode == "CMYK" and len(check.info["icc_profile"]) == CMYK.stat().st_size
    pixels, meta = load_image_with_metadata(buf.getvalue())
    assert meta.icc_profile == SRGB_PROFILE
    expected = np.asarray(ImageCms.profileToProfile(Image.open(io.BytesIO(buf.getvalue())), str(CMYK),
                                                    ImageCms.createProfile("sRGB"), outputMode="RGB"))
    assert np.abs(pixels.astype(int) - expected).max() <= 1
    # through the profile the colours come back nearer the original than Pillow's naive 255-C formula
    naive = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).astype(int)
    original = np.asarray(photo()).astype(int)
    assert np.abs(pixels - original).mean() < 0.5 * np.abs(naive - original).mean()


def test_lab_tiff_is_converted():
    lab = ImageCms.profileToProfile(photo(), ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"),
                                    outputMode="LAB")
    buf = io.BytesIO()
    lab.save(buf, "TIFF")
    pixels, meta = load_image_with_metadata(buf.getvalue())
    assert meta.icc_profile == SRGB_PROFILE and np.abs(pixels.astype(int) - np.asarray(photo())).mean() < 3


def test_invalid_embedded_profile_is_a_clear_error():
    data = jpeg_photo(icc_profile=b"not a profile" * 10)
    with pytest.raises(ImageError, match="embedded ICC profile is invalid.*--strip-metadata"):
        load_image_with_metadata(data)
    pixels, meta = load_image_with_metadata(data, strip_metadata=True)
    assert pixels.shape == (48, 64, 3) and not meta


# ----------------------------------------------------------------------------- the thumbnail


@pytest.fixture(scope="module")
def meta() -> Metadata:
    return Metadata(icc_profile=ADOBE_RGB.read_bytes(), exif=sanitize_exif(camera_exif()), xmp=XMP)


def test_thumbnail_carries_metadata_and_opens_everywhere(tmp_path, meta):
    require(ADOBE_RGB)
    thumb = random_thumbnail((200, 120), 4)
    plain = write_thumbnail(thumb)
    thumb.metadata = meta
    data = write_thumbnail(thumb)
    back = read_thumbnail(data)
    assert back.metadata == meta and np.array_equal(back.coefficients, thumb.coefficients)
    assert read_metadata(data) == meta
    assert read_thumbnail(with_metadata(data, Metadata())).metadata == Metadata()
    assert with_metadata(plain, meta) == data  # same bytes whichever way the metadata gets in
    codes = [c for c, _, _ in segments(data)]
    assert codes[:5] == [0xE0, 0xE1, 0xE1, 0xE2, 0xEF]  # JFIF, EXIF, XMP, ICC, our marker
    path = tmp_path / "t.jpg"
    path.write_bytes(data)
    check_with_tools(path)
    with Image.open(path) as im:
        im.load()
        assert im.info["icc_profile"] == meta.icc_profile and im.info["xmp"] == XMP
        assert im.getexif()[ExifTags.Base.Make] == "HyperCam" and im.getexif()[ExifTags.Base.Orientation] == 1


def test_large_profile_is_split_over_app2_segments(tmp_path):
    require(CMYK)
    profile = CMYK.read_bytes()  # 187 kB: 3 chunks
    thumb = random_thumbnail((200, 120), 4)
    thumb.metadata = Metadata(icc_profile=profile)
    data = write_thumbnail(thumb)
    chunks = [data[s + 4:e] for c, s, e in segments(data) if c == 0xE2]
    assert [c[12:14] for c in chunks] == [b"\x01\x03", b"\x02\x03", b"\x03\x03"]
    assert read_thumbnail(data).metadata.icc_profile == profile
    path = tmp_path / "t.jpg"
    path.write_bytes(data)
    check_with_tools(path)
    with Image.open(path) as im:
        assert im.info["icc_profile"] == profile


def test_icc_chunk_errors():
    chunks = icc_segments(bytes(200_000))
    assert len(chunks) == 4 and icc_from_chunks(chunks[::-1]) == bytes(200_000)  # any order
    for bad, match in [(chunks[:2], r"chunks \[3, 4\] of 4 are missing"), (chunks + chunks[:1], "appears twice"),
                       ([chunks[0][:12]], "too short"), ([chunks[0][:12] + b"\x05\x04"], "chunk 5 of 4")]:
        with pytest.raises(MetadataError, match=match):
            icc_from_chunks(bad)
    with pytest.raises(MetadataError, match="more than the thumbnail carries"):
        icc_segments(bytes(MAX_ICC_BYTES + 1))


def test_corrupt_icc_in_thumbnail_is_refused_with_the_way_out():
    thumb = random_thumbnail((200, 120), 4)
    thumb.metadata = Metadata(icc_profile=bytes(100_000))
    data = bytearray(write_thumbnail(thumb))
    second = [s for c, s, _ in segments(bytes(data)) if c == 0xE2][1]
    data[second + 4 + 12] = 7  # chunk "7 of 2"
    with pytest.raises(ThumbnailError, match="corrupt ICC profile.*jpegtran -copy none"):
        read_thumbnail(bytes(data))


# ----------------------------------------------------------------------------- output side


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".tiff"])
def test_decoded_image_carries_metadata(tmp_path, meta, ext):
    path = tmp_path / f"out{ext}"
    save_image(np.asarray(photo()), path, meta)
    with Image.open(path) as im:
        im.load()
        assert im.info["icc_profile"] == meta.icc_profile
        assert im.getexif()[ExifTags.Base.Make] == "HyperCam"
        if ext in (".png", ".jpg", ".webp"):
            assert (im.info.get("xmp") or im.info.get("XML:com.adobe.xmp").encode()) == XMP
    if ext == ".png":
        chunks = path.read_bytes()
        assert b"iCCP" in chunks and b"eXIf" in chunks


# ----------------------------------------------------------------------------- stripped thumbnails


def jpegtran(data: bytes, tmp_path: Path, *args: str) -> bytes:
    src, dst = tmp_path / "in.jpg", tmp_path / "out.jpg"
    src.write_bytes(data)
    subprocess.run(["jpegtran", *args, "-outfile", str(dst), str(src)], check=True, timeout=30)
    return dst.read_bytes()


def test_stripped_thumbnail_reads_with_scale_and_size(tmp_path, meta):
    require()
    thumb = random_thumbnail((1001, 677), 4)
    thumb.metadata = meta
    stripped = jpegtran(write_thumbnail(thumb), tmp_path, "-copy", "none")
    assert not [c for c, _, _ in segments(stripped) if 0xE1 <= c <= 0xEF]
    with pytest.raises(ThumbnailError, match="marker is missing.*--scale 4.*--size WxH.*hyperthumbnail encode"):
        read_thumbnail(stripped)
    back = read_thumbnail(stripped, scale=4, hr_size=(1001, 677))
    assert np.array_equal(back.coefficients, thumb.coefficients) and np.array_equal(back.tables, thumb.tables)
    assert back.hr_size == (1001, 677) and back.metadata == Metadata()
    assert read_thumbnail(stripped, scale=4).hr_size == (251 * 4, 170 * 4)
    optimized = jpegtran(stripped, tmp_path, "-optimize", "-copy", "none")
    assert np.array_equal(read_thumbnail(optimized, scale=4).coefficients, thumb.coefficients)
    with pytest.raises(ThumbnailError, match="--size 1100x677 at --scale 4 means a 275x170 thumbnail, but this JPEG is 251x170"):
        read_thumbnail(stripped, scale=4, hr_size=(1100, 677))
    with pytest.raises(ThumbnailError, match="--scale 3 is not one of"):
        read_thumbnail(stripped, scale=3)
    with pytest.raises(ThumbnailError, match="exceeds the limit"):
        read_thumbnail(stripped, scale=4, max_hr_pixels=1000)


def test_flags_must_agree_with_a_marker():
    data = write_thumbnail(random_thumbnail((200, 120), 4))
    assert read_thumbnail(data, scale=4, hr_size=(200, 120)).hr_size == (200, 120)
    with pytest.raises(ThumbnailError, match="--scale 2 disagrees with the thumbnail's marker"):
        read_thumbnail(data, scale=2)
    with pytest.raises(ThumbnailError, match="--size 201x120 disagrees"):
        read_thumbnail(data, hr_size=(201, 120))


@pytest.mark.parametrize("save,match", [
    ({"quality": 90, "subsampling": 0}, "standard quality-90 tables: this JPEG was re-encoded"),
    ({"quality": 90}, "chroma subsampling is not 4:4:4.*re-encoded"),
    ({"quality": 90, "subsampling": 0, "progressive": True}, "progressive JPEG"),
])
def test_reencoded_thumbnail_stays_refused(save, match):
    data = write_thumbnail(random_thumbnail((200, 120), 4))
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buf, "JPEG", **save)
    with pytest.raises(ThumbnailError, match=match):
        read_thumbnail(buf.getvalue(), scale=4, hr_size=(200, 120))


def test_restore_marker_gives_back_the_thumbnail(tmp_path, meta):
    require()
    thumb = random_thumbnail((1001, 677), 4)
    thumb.metadata = meta
    whole = write_thumbnail(thumb)
    stripped = jpegtran(whole, tmp_path, "-copy", "none")
    restored = restore_marker(stripped, 4, (1001, 677))
    assert restored == write_thumbnail(random_thumbnail((1001, 677), 4))  # byte-identical, minus the metadata
    assert restore_marker(whole, 4, (1001, 677)) == whole  # a complete thumbnail is left alone
    with pytest.raises(ThumbnailError, match="--size 1001x600"):
        restore_marker(stripped, 4, (1001, 600))


# ----------------------------------------------------------------------------- through the model


@pytest.fixture(scope="module")
def pipeline():
    from conftest import served_weights

    from hyperthumbnail.pipeline import Pipeline

    if served_weights() is not None:
        pytest.skip("no shipped weights")
    return Pipeline()  # the default runtime, as the CLI and the server use


def test_stripped_thumbnail_decodes_to_the_same_pixels(tmp_path, pipeline):
    """Acceptance: every APP1-APP15 segment removed, --scale 4 --size WxH: exactly the unstripped pixels."""
    require()
    from conftest import photo_like

    whole = pipeline.encode(photo_like(100, 62, seed=3))
    stripped = jpegtran(whole, tmp_path, "-copy", "none")
    assert not [c for c, _, _ in segments(stripped) if 0xE1 <= c <= 0xEF]
    expected = pipeline.decode(whole)
    assert expected.shape == (62, 100, 3)
    assert np.array_equal(pipeline.decode(restore_marker(stripped, 4, (100, 62))), expected)
    # without --size: the thumbnail's 25x16 times 4; the same decoder output, cropped less
    bigger = pipeline.decode(restore_marker(stripped, 4))
    assert bigger.shape == (64, 100, 3) and np.array_equal(bigger[:62], expected)


def test_metadata_sent_with_pixels_is_checked():
    """What the served jpeg_encode does with ICC_PROFILE / EXIF inputs: an RGB profile, EXIF rewritten upright."""
    from hyperthumbnail.codec.steps import StepError, attach_metadata

    plain = write_thumbnail(random_thumbnail((48, 64), 4))
    data = attach_metadata(plain, ADOBE_RGB.read_bytes(), camera_exif(), (48, 64))
    meta = read_thumbnail(data).metadata
    exif = Image.Exif()
    exif.load(meta.exif)
    assert meta.icc_profile == ADOBE_RGB.read_bytes() and exif[ExifTags.Base.Orientation] == 1
    assert attach_metadata(plain, None, None, (48, 64)) == plain
    for icc, exif_bytes, match in [(b"junk", None, "ICC_PROFILE: not a valid ICC profile"),
                                   (CMYK.read_bytes(), None, "ICC_PROFILE: the ICC profile is for CMYK data, the pixels are RGB"),
                                   (None, b"Exif\0\0garbage", "EXIF: unreadable EXIF data")]:
        with pytest.raises(StepError, match=match):
            attach_metadata(plain, icc, exif_bytes, (48, 64))


# ----------------------------------------------------------------------------- the CLI (in-process, and --url)


def camera_photo(path: Path) -> tuple[bytes, Path]:
    """A phone-like JPEG: 100x62 stored, EXIF Orientation 6 (upright 62x100), Adobe RGB, Make, GPS, XMP."""
    from conftest import photo_like

    profile = ADOBE_RGB.read_bytes()
    Image.fromarray(photo_like(100, 62, seed=5)).save(path, "JPEG", quality=95, icc_profile=profile,
                                                       exif=camera_exif(), xmp=XMP)
    return profile, path


def cli(capsys, *argv: str) -> str:
    from hyperthumbnail.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def cli_error(capsys, *argv: str) -> str:
    from hyperthumbnail.cli import main

    code = main([str(a) for a in argv])
    _, err = capsys.readouterr()
    assert code != 0 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def check_acceptance(thumb: Path, restored: Path, profile: bytes) -> None:
    """The thumbnail: upright size, identical profile, Make, Orientation 1, opens everywhere; the PNG:
    identical profile and the Make."""
    check_with_tools(thumb)
    with Image.open(thumb) as im:
        assert im.size == (16, 25)  # ceil(62/4) x ceil(100/4): the upright photo's thumbnail
        assert im.info["icc_profile"] == profile
        exif = im.getexif()
        assert exif[ExifTags.Base.Make] == "HyperCam" and exif[ExifTags.Base.Orientation] == 1
        assert ExifTags.IFD.GPSInfo in exif and im.info["xmp"].count(b'tiff:Orientation="1"') == 1
    with Image.open(restored) as im:
        im.load()
        assert im.size == (62, 100) and im.info["icc_profile"] == profile
        assert im.getexif()[ExifTags.Base.Make] == "HyperCam"
    assert b"iCCP" in restored.read_bytes() and b"eXIf" in restored.read_bytes()


def test_cli_acceptance_in_process(capsys, tmp_path):
    require(ADOBE_RGB)
    profile, photo_path = camera_photo(tmp_path / "IMG_0001.jpg")
    thumb, restored = tmp_path / "t.jpg", tmp_path / "r.png"
    cli(capsys, "encode", photo_path, "-o", thumb)
    cli(capsys, "decode", thumb, "-o", restored)
    check_acceptance(thumb, restored, profile)
    # the same pixels as without metadata: it only rides along
    plain = tmp_path / "plain.jpg"
    plain.write_bytes(with_metadata(thumb.read_bytes(), Metadata()))
    cli(capsys, "decode", plain, "-o", tmp_path / "plain.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "plain.png")), np.asarray(Image.open(restored)))


def test_cli_strip_options(capsys, tmp_path):
    require(ADOBE_RGB)
    _, photo_path = camera_photo(tmp_path / "IMG_0002.jpg")
    cli(capsys, "encode", photo_path, "-o", tmp_path / "nogps.jpg", "--strip-gps")
    with Image.open(tmp_path / "nogps.jpg") as im:
        assert ExifTags.IFD.GPSInfo not in im.getexif() and b"GPS" not in im.info["xmp"]
        assert im.getexif()[ExifTags.Base.Make] == "HyperCam"
    cli(capsys, "encode", photo_path, "-o", tmp_path / "bare.jpg", "--strip-metadata")
    with Image.open(tmp_path / "bare.jpg") as im:
        assert im.size == (16, 25) and not {"icc_profile", "exif", "xmp"} & set(im.info)
    assert not [c for c, _, _ in segments((tmp_path / "bare.jpg").read_bytes()) if c in (0xE1, 0xE2)]


def test_cli_stripped_thumbnail(capsys, tmp_path, pipeline):
    """Acceptance: every APP1-APP15 segment removed; `decode --scale 4 --size WxH` gives exactly the
    pixels of the unstripped decode; without the flags the refusal names them."""
    require()
    from conftest import photo_like

    Image.fromarray(photo_like(90, 70, seed=9)).save(tmp_path / "p.png")
    whole, stripped = tmp_path / "t.jpg", tmp_path / "s.jpg"
    cli(capsys, "encode", tmp_path / "p.png", "-o", whole)
    subprocess.run(["jpegtran", "-copy", "none", "-outfile", str(stripped), str(whole)], check=True)
    assert not [c for c, _, _ in segments(stripped.read_bytes()) if 0xE1 <= c <= 0xEF]
    err = cli_error(capsys, "decode", stripped, "-o", tmp_path / "x.png")
    assert "marker is missing" in err and "--scale 4" in err and "--size WxH" in err
    cli(capsys, "decode", whole, "-o", tmp_path / "whole.png")
    cli(capsys, "decode", stripped, "-o", tmp_path / "stripped.png", "--scale", "4", "--size", "90x70")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "stripped.png")), np.asarray(Image.open(tmp_path / "whole.png")))
    cli(capsys, "decode", stripped, "-o", tmp_path / "big.png", "--scale", "4")
    assert Image.open(tmp_path / "big.png").size == (92, 72)  # 23x18 thumbnail x 4
    err = cli_error(capsys, "decode", stripped, "-o", tmp_path / "x.png", "--scale", "4", "--size", "100x70")
    assert "--size 100x70 at --scale 4 means a 25x18 thumbnail, but this JPEG is 23x18" in err
    assert "--size needs --scale" in cli_error(capsys, "decode", stripped, "-o", tmp_path / "x.png", "--size", "90x70")
    # re-encoded (pixels decoded and saved again by an optimiser): refused with the reason
    Image.open(whole).save(tmp_path / "re.jpg", quality=80, subsampling=0)
    err = cli_error(capsys, "decode", tmp_path / "re.jpg", "-o", tmp_path / "x.png", "--scale", "4")
    assert "standard quality-80 tables: this JPEG was re-encoded" in err


def test_cli_refuses_a_thumbnail_of_another_model(capsys, tmp_path, pipeline):
    """The marker names the model that made the thumbnail; a decoder not trained for it refuses
    by name instead of rebuilding garbage. Thumbnails without an id (format 1) still decode."""
    from dataclasses import replace

    from conftest import photo_like

    from hyperthumbnail.codec.thumbnail import read_thumbnail, write_thumbnail

    Image.fromarray(photo_like(90, 70, seed=9)).save(tmp_path / "p.png")
    cli(capsys, "encode", tmp_path / "p.png", "-o", tmp_path / "t.jpg")
    thumb = read_thumbnail((tmp_path / "t.jpg").read_bytes())
    assert thumb.model_id == pipeline.model_id
    (tmp_path / "other.jpg").write_bytes(write_thumbnail(replace(thumb, model_id="fedcba9876543210")))
    err = cli_error(capsys, "decode", tmp_path / "other.jpg", "-o", tmp_path / "x.png")
    served = ", ".join(pipeline.served_models)  # its own id first, then the older ones it also decodes
    assert f"made by model fedcba9876543210, which this decoder was not trained for (it serves {served})" in err
    (tmp_path / "unknown.jpg").write_bytes(write_thumbnail(replace(thumb, model_id=None)))
    cli(capsys, "decode", tmp_path / "unknown.jpg", "-o", tmp_path / "unknown.png")
    cli(capsys, "decode", tmp_path / "t.jpg", "-o", tmp_path / "t.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "unknown.png")), np.asarray(Image.open(tmp_path / "t.png")))


def test_shipped_weights_route_an_older_generations_thumbnails(capsys, tmp_path, monkeypatch):
    """A thumbnail stored by an older shipped generation (one the newest decoder does not serve)
    decodes with that generation's shipped decoder, through the SDK and the CLI; weights a caller
    names decode only the ids they serve."""
    from conftest import photo_like, small_weights

    import hyperthumbnail.weights as weights
    from hyperthumbnail.codec.steps import StepError
    from hyperthumbnail.pipeline import Pipeline

    shipped = tmp_path / "weights"
    older = small_weights(shipped / "older" / "hyperthumbnail_x4_old.safetensors", 1)
    newest = small_weights(shipped / "hyperthumbnail_x4.safetensors", 2)
    monkeypatch.setattr(weights, "WEIGHTS_DIR", shipped)
    monkeypatch.setattr(weights, "OLDER_WEIGHTS_DIR", shipped / "older")
    assert weights.shipped_weights(4) == (newest, older)
    assert weights.shipped_weights(2) == (shipped / "hyperthumbnail_x2.safetensors",)

    stored = Pipeline(older, runtime="torch").encode(photo_like(64, 48, seed=3))
    own = Pipeline(older, runtime="torch").decode(stored)
    router = Pipeline(runtime="torch")
    assert router.model_id == weights.model_id(newest) != weights.model_id(older)
    assert router.for_thumbnail(stored).weights == older and router.for_thumbnail(router.encode(own)) is router
    assert router.for_thumbnail(stored) is router.for_thumbnail(stored)  # loaded once
    assert np.array_equal(router.decode(stored), own)
    with pytest.raises(StepError, match=f"made by model {weights.model_id(older)}, which this decoder was not") as refused:
        Pipeline(newest, runtime="torch").decode(stored)
    assert str(refused.value).endswith(f"(their card's model_id; shipped as {older})")
    (tmp_path / "stored.jpg").write_bytes(stored)
    out = cli(capsys, "decode", tmp_path / "stored.jpg", "-o", tmp_path / "stored.png", "--runtime", "torch")
    assert f"made by model {weights.model_id(older)}, decoded by its own decoder {older.name}" in out
    assert np.array_equal(np.asarray(Image.open(tmp_path / "stored.png")), own)


@pytest.mark.server
def test_served_ensembles_carry_metadata(triton_server, tmp_path):
    """Raw tritonclient: ICC_PROFILE/EXIF into hyperthumbnail_encode come back inside the thumbnail
    (byte-identical to in-process encode + attach); hyperthumbnail_decode returns them; requests
    without them are unchanged; a bad profile is that request's 400."""
    import tritonclient.http as httpclient
    from conftest import photo_like
    from tritonclient.utils import InferenceServerException

    from hyperthumbnail.codec.steps import attach_metadata

    require(ADOBE_RGB, CMYK)
    profile = ADOBE_RGB.read_bytes()
    image = photo_like(64, 48, seed=2)[None]
    client = httpclient.InferenceServerClient(triton_server.http_url.removeprefix("http://"))

    def encode(**extra: bytes) -> bytes:
        inputs = [httpclient.InferInput("IMAGE", list(image.shape), "UINT8")]
        inputs[0].set_data_from_numpy(image)
        for name, value in extra.items():
            inputs.append(httpclient.InferInput(name, [1, 1], "BYTES"))
            inputs[-1].set_data_from_numpy(np.array([[value]], dtype=np.object_))
        return bytes(client.infer("hyperthumbnail_encode", inputs).as_numpy("THUMBNAIL")[0, 0])

    plain = encode()
    served = encode(ICC_PROFILE=profile, EXIF=camera_exif())
    assert served == attach_metadata(plain, profile, camera_exif(), (64, 48))
    meta = read_metadata(served)
    assert meta.icc_profile == profile and b"HyperCam" in meta.exif
    assert read_metadata(encode(ICC_PROFILE=profile)) == Metadata(icc_profile=profile)
    with pytest.raises(InferenceServerException, match="ICC_PROFILE: the ICC profile is for CMYK data"):
        encode(ICC_PROFILE=CMYK.read_bytes())

    def decode(data: bytes, *outputs: str):
        inp = httpclient.InferInput("THUMBNAIL", [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[data]], dtype=np.object_))
        requested = [httpclient.InferRequestedOutput(n) for n in outputs] or None
        return client.infer("hyperthumbnail_decode", [inp], outputs=requested)

    result = decode(served)
    assert bytes(result.as_numpy("ICC_PROFILE")[0, 0]) == profile
    assert bytes(result.as_numpy("EXIF")[0, 0]) == meta.exif
    assert np.array_equal(result.as_numpy("IMAGE"), decode(plain).as_numpy("IMAGE"))
    assert bytes(decode(plain).as_numpy("ICC_PROFILE")[0, 0]) == b""
    only_image = decode(served, "IMAGE")  # the existing interface: IMAGE only
    assert only_image.as_numpy("ICC_PROFILE") is None and only_image.as_numpy("IMAGE").shape == (1, 48, 64, 3)
    client.close()


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_cli_acceptance_through_the_server(capsys, tmp_path, triton_server, protocol, pipeline):
    """--url: the CLI sends the photo's ICC/EXIF to the server and writes what the server returns."""
    require(ADOBE_RGB)
    url = (triton_server.http_url if protocol == "http" else triton_server.grpc_url).split("://")[-1]
    profile, photo_path = camera_photo(tmp_path / "IMG_0003.jpg")
    thumb, restored = tmp_path / "t.jpg", tmp_path / "r.png"
    cli(capsys, "encode", photo_path, "-o", thumb, "--url", url, "--protocol", protocol)
    cli(capsys, "decode", thumb, "-o", restored, "--url", url, "--protocol", protocol)
    check_acceptance(thumb, restored, profile)
    cli(capsys, "encode", photo_path, "-o", tmp_path / "local.jpg")
    assert thumb.read_bytes() == (tmp_path / "local.jpg").read_bytes()  # served == in-process, metadata included
    # stripped, through the server: the SDK writes the marker again before sending
    stripped = tmp_path / "s.jpg"
    subprocess.run(["jpegtran", "-copy", "none", "-outfile", str(stripped), str(thumb)], check=True)
    cli(capsys, "decode", stripped, "-o", tmp_path / "s.png", "--scale", "4", "--size", "62x100", "--url", url,
        "--protocol", protocol)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "s.png")), np.asarray(Image.open(restored)))


@pytest.mark.server
def test_async_sdk_carries_metadata(triton_server, tmp_path):
    """AsyncHyperThumbnailClient: encode(metadata=...) and decode_with_metadata, and a stripped decode."""
    import asyncio

    from hyperthumbnail.client import AsyncHyperThumbnailClient

    require(ADOBE_RGB)
    _, photo_path = camera_photo(tmp_path / "IMG_0004.jpg")
    image, metadata = load_image_with_metadata(photo_path)

    async def main():
        async with AsyncHyperThumbnailClient(triton_server.grpc_url, protocol="grpc") as client:
            jpeg = await client.encode(image, metadata=metadata)
            restored, back = await client.decode_with_metadata(jpeg)
            stripped = jpegtran(jpeg, tmp_path, "-copy", "none")
            again = await client.decode(stripped, scale=4, size=(62, 100))
            return jpeg, restored, back, again

    jpeg, restored, back, again = asyncio.run(main())
    assert back.icc_profile == metadata.icc_profile and back.xmp == metadata.xmp
    assert back == read_metadata(jpeg) and restored.shape == (100, 62, 3)
    assert np.array_equal(again, restored)
