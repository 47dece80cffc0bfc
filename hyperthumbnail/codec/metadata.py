"""Photo metadata carried through the codec: ICC colour profile, EXIF and XMP.

The pixels the codec sees are upright RGB (EXIF orientation applied, non-RGB colour spaces
converted), so what travels with them is rewritten to describe *those* pixels: EXIF Orientation
becomes 1, the EXIF thumbnail (IFD1) and the tags that describe the original file's layout are
dropped, and the XMP orientation is set to 1 too. Parsing and writing EXIF is Pillow's
(`Image.Exif`); ICC profiles are checked with LittleCMS (`ImageCms`).

In a JPEG (the thumbnail) they are the usual segments: APP1 `Exif\\0\\0`, APP1 with the Adobe XMP
namespace, APP2 `ICC_PROFILE\\0` split into chunks of at most 65519 bytes (ICC.1 annex B.4).
"""
from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass, replace

from PIL import ExifTags, Image, ImageCms

__all__ = [
    "EXIF_HEADER",
    "ICC_HEADER",
    "MAX_ICC_BYTES",
    "XMP_HEADER",
    "Metadata",
    "MetadataError",
    "check_rgb_profile",
    "icc_from_chunks",
    "icc_segments",
    "sanitize_exif",
    "sanitize_xmp",
]

EXIF_HEADER = b"Exif\0\0"
XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\0"
ICC_HEADER = b"ICC_PROFILE\0"
_MAX_SEGMENT_PAYLOAD = 65533  # 16-bit segment length minus the 2 length bytes
_ICC_CHUNK = _MAX_SEGMENT_PAYLOAD - len(ICC_HEADER) - 2  # 65519: header + sequence no. + count
_MAX_ICC_CHUNKS = 16  # keeps the thumbnail's header within the reader's segment limit
MAX_ICC_BYTES = _MAX_ICC_CHUNKS * _ICC_CHUNK  # ~1 MiB; real camera/display profiles are < 100 kB
MAX_EXIF_BYTES = _MAX_SEGMENT_PAYLOAD  # one APP1 segment, "Exif\0\0" included
MAX_XMP_BYTES = _MAX_SEGMENT_PAYLOAD - len(XMP_HEADER)  # no Extended XMP

# IFD0 tags that describe how the *original file* stored its pixels (or its EXIF thumbnail),
# which is false for the thumbnail and for the decoded image.
_LAYOUT_TAGS = (
    0x0100, 0x0101, 0x0102, 0x0103, 0x0106, 0x0111, 0x0115, 0x0116, 0x0117, 0x011C,
    0x0201, 0x0202, 0x0211, 0x0212,
)
_PIXEL_X, _PIXEL_Y = 0xA002, 0xA003  # Exif IFD: the image's size
_XMP_ORIENTATION = (re.compile(rb'(tiff:Orientation=")[0-9]+(")'),
                    re.compile(rb"(<tiff:Orientation>)[0-9]+(</tiff:Orientation>)"))
_XMP_GPS = (re.compile(rb'\s+exif:GPS\w+="[^"]*"'),
            re.compile(rb"<exif:GPS(\w+)(?:\s[^>]*)?>.*?</exif:GPS\1>", re.DOTALL),
            re.compile(rb"<exif:GPS\w+[^>]*/>"))


class MetadataError(ValueError):
    """Metadata that cannot be read or carried (the message says which and why)."""


@dataclass(frozen=True)
class Metadata:
    """What a photo carries besides its pixels; None where it has none.

    icc_profile: the ICC profile bytes (as embedded; the pixels are in this colour space).
    exif: a TIFF-structured EXIF block starting with b"Exif\\0\\0" (as in a JPEG APP1 segment).
    xmp: the XMP packet (UTF-8 XML bytes).
    """

    icc_profile: bytes | None = None
    exif: bytes | None = None
    xmp: bytes | None = None

    def __bool__(self) -> bool:
        return any((self.icc_profile, self.exif, self.xmp))

    def without_gps(self) -> Metadata:
        """The same with the EXIF GPS IFD and the XMP `exif:GPS*` properties removed."""
        exif = self.exif
        if exif:
            parsed = _parse_exif(exif)
            if ExifTags.IFD.GPSInfo in parsed:
                del parsed[ExifTags.IFD.GPSInfo]
            exif = parsed.tobytes()
        xmp = self.xmp
        if xmp:
            for pattern in _XMP_GPS:
                xmp = pattern.sub(b"", xmp)
        return replace(self, exif=exif, xmp=xmp)


def _parse_exif(exif: bytes) -> Image.Exif:
    parsed = Image.Exif()
    try:
        parsed.load(exif)
        parsed.get_ifd(ExifTags.IFD.Exif)  # loads the sub-IFDs now, so errors surface here
        parsed.get_ifd(ExifTags.IFD.GPSInfo)
    except (OSError, ValueError, SyntaxError, struct.error, KeyError, IndexError) as exc:
        raise MetadataError(f"unreadable EXIF data: {exc}") from exc
    return parsed


def sanitize_exif(exif: bytes, size: tuple[int, int] | None = None) -> bytes:
    """EXIF for upright pixels: Orientation 1, no EXIF thumbnail, no layout tags of the
    original file; PixelXDimension/PixelYDimension set to `size` (width, height) if given.

    Returns b"Exif\\0\\0" + TIFF data. Raises MetadataError if it cannot be parsed or is larger
    than one JPEG APP1 segment holds (after the MakerNote, which often is most of it, is dropped).
    """
    if not exif.startswith(EXIF_HEADER):
        exif = EXIF_HEADER + exif  # PNG eXIf / WebP EXIF chunks carry the bare TIFF structure
    parsed = _parse_exif(exif)
    for tag in _LAYOUT_TAGS:
        if tag in parsed:
            del parsed[tag]
    parsed[ExifTags.Base.Orientation] = 1
    sub = parsed.get_ifd(ExifTags.IFD.Exif)
    if size is not None and sub:
        for tag, value in ((_PIXEL_X, size[0]), (_PIXEL_Y, size[1])):
            if tag in sub:
                sub[tag] = value
    out = _to_bytes(parsed)  # IFD1 (the EXIF thumbnail) is not written: Pillow writes IFD0 only
    if len(out) > MAX_EXIF_BYTES and ExifTags.Base.MakerNote in sub:
        del sub[ExifTags.Base.MakerNote]
        out = _to_bytes(parsed)
    if len(out) > MAX_EXIF_BYTES:
        raise MetadataError(f"the EXIF data is {len(out)} bytes, more than one JPEG APP1 segment "
                            f"holds ({MAX_EXIF_BYTES}); drop it with --strip-metadata")
    return out


def _to_bytes(parsed: Image.Exif) -> bytes:
    """Pillow's EXIF writer; tags it cannot write (a value of another type than the tag's, as
    corrupt files have: found by fuzzing) are dropped rather than failing the whole photo."""
    try:
        return parsed.tobytes()
    except Exception:  # noqa: BLE001 - Pillow raises AttributeError, TypeError, ... on such tags
        pass
    for ifd in [parsed] + [parsed.get_ifd(tag) for tag in (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo,
                                                            ExifTags.IFD.Interop)]:
        for tag in [t for t in ifd if t not in _POINTERS]:
            if not _writable(tag, ifd[tag], ifd is parsed.get_ifd(ExifTags.IFD.GPSInfo)):
                del ifd[tag]
    try:
        return parsed.tobytes()
    except Exception as exc:  # noqa: BLE001
        raise MetadataError(f"EXIF data that cannot be rewritten: {type(exc).__name__}: {exc}") from exc


_POINTERS = frozenset({ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo, ExifTags.IFD.Interop})


def _writable(tag: int, value: object, gps: bool) -> bool:
    """Whether Pillow can write this one tag (probed in an IFD of its own)."""
    from PIL import TiffImagePlugin

    probe = TiffImagePlugin.ImageFileDirectory_v2(group=ExifTags.IFD.GPSInfo if gps else None)
    try:
        probe[tag] = value
        probe.tobytes(8)
    except Exception:  # noqa: BLE001 - whatever Pillow raises, the tag cannot be carried
        return False
    return True


def sanitize_xmp(xmp: bytes | str) -> bytes:
    """XMP for upright pixels (tiff:Orientation 1). Raises MetadataError if too large."""
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    for pattern in _XMP_ORIENTATION:
        xmp = pattern.sub(rb"\g<1>1\g<2>", xmp)
    if len(xmp) > MAX_XMP_BYTES:
        raise MetadataError(f"the XMP packet is {len(xmp)} bytes, more than one JPEG APP1 segment "
                            f"holds ({MAX_XMP_BYTES}); drop it with --strip-metadata")
    return xmp


def icc_segments(profile: bytes) -> list[bytes]:
    """APP2 payloads carrying `profile`: "ICC_PROFILE\\0", sequence number (1-based), count, data."""
    if not profile:
        return []
    if len(profile) > MAX_ICC_BYTES:
        raise MetadataError(f"the ICC profile is {len(profile)} bytes, more than the thumbnail "
                            f"carries ({MAX_ICC_BYTES}); drop it with --strip-metadata")
    chunks = [profile[i:i + _ICC_CHUNK] for i in range(0, len(profile), _ICC_CHUNK)]
    return [ICC_HEADER + bytes((n, len(chunks))) + chunk for n, chunk in enumerate(chunks, 1)]


def icc_from_chunks(payloads: list[bytes]) -> bytes | None:
    """Reassemble an ICC profile from APP2 payloads (in file order); None if there are none.

    Raises MetadataError if the chunks are inconsistent (missing, repeated, counts disagree).
    """
    if not payloads:
        return None
    chunks: dict[int, bytes] = {}
    counts = set()
    for payload in payloads:
        if len(payload) < len(ICC_HEADER) + 2:
            raise MetadataError("corrupt ICC profile segment: too short")
        number, count = payload[len(ICC_HEADER)], payload[len(ICC_HEADER) + 1]
        if not 1 <= number <= count:
            raise MetadataError(f"corrupt ICC profile segment: chunk {number} of {count}")
        if number in chunks:
            raise MetadataError(f"corrupt ICC profile: chunk {number} appears twice")
        chunks[number] = payload[len(ICC_HEADER) + 2:]
        counts.add(count)
    if len(counts) != 1:
        raise MetadataError(f"corrupt ICC profile: the segments disagree on the chunk count {sorted(counts)}")
    count = counts.pop()
    if len(chunks) != count:
        missing = sorted(set(range(1, count + 1)) - set(chunks))
        raise MetadataError(f"corrupt ICC profile: chunks {missing} of {count} are missing")
    return b"".join(chunks[n] for n in range(1, count + 1))


def check_rgb_profile(profile: bytes) -> bytes:
    """`profile` if LittleCMS reads it as an RGB profile (the thumbnail's pixels are RGB);
    MetadataError otherwise."""
    try:
        space = ImageCms.ImageCmsProfile(io.BytesIO(profile)).profile.xcolor_space
    except (OSError, ImageCms.PyCMSError, ValueError, TypeError) as exc:
        raise MetadataError(f"not a valid ICC profile ({exc})") from exc
    if space != "RGB ":
        raise MetadataError(f"the ICC profile is for {space.strip()} data, the pixels are RGB")
    if len(profile) > MAX_ICC_BYTES:
        raise MetadataError(f"the ICC profile is {len(profile)} bytes, more than the thumbnail carries "
                            f"({MAX_ICC_BYTES})")
    return profile
