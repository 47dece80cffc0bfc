"""One picture per photo that shows what HyperThumbnail does: a detailed crop of the original, of
the thumbnail (the .jpg, zoomed), of bicubic + plain JPEG at the same file size, and of the photo
rebuilt from the thumbnail, each captioned with its bpp and PSNR (`make demo` writes these)."""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..codec.images import bicubic_downscale
from ..metrics import bpp, psnr
from .crops import caption_font, labelled, sheet, zoom
from .methods import bicubic_jpeg_codec

CROP = 192  # HR pixels of the crop's side; a multiple of both scales
ZOOM = 2    # nearest-neighbour zoom of the HR crops (the thumbnail's is ZOOM * scale)


@dataclass
class Comparison:
    picture: Image.Image
    numbers: dict  # bpp and PSNR of each panel, for the demo's table


def most_detailed_box(image: np.ndarray, side: int = CROP) -> tuple[int, int]:
    """(x, y) of the side x side window, on a grid of half windows, whose luma changes the most:
    where a rebuilt photo shows whether it restored detail or only blurred it."""
    luma = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    energy = np.abs(np.diff(luma, axis=0))[:, :-1] + np.abs(np.diff(luma, axis=1))[:-1]
    h, w = energy.shape
    if h < side or w < side:
        return 0, 0
    step = side // 2
    best = max(((y, x) for y in range(0, h - side + 1, step) for x in range(0, w - side + 1, step)),
               key=lambda yx: float(energy[yx[0]:yx[0] + side, yx[1]:yx[1] + side].mean()))
    return best[1], best[0]


def compare(name: str, image: np.ndarray, thumbnail_jpeg: bytes, restored: np.ndarray, scale: int) -> Comparison:
    """The four-panel picture of `image`, its HyperThumbnail `thumbnail_jpeg` and `restored` photo."""
    h, w = image.shape[:2]
    side = min(CROP, h, w) // scale * scale
    x, y = most_detailed_box(image, side)
    x, y = x // scale * scale, y // scale * scale  # on the thumbnail's grid
    baseline = bicubic_jpeg_codec(scale, "444")(image, thumbnail_jpeg)
    thumb = np.asarray(Image.open(io.BytesIO(thumbnail_jpeg)).convert("RGB"))  # as any viewer shows it
    numbers = {
        "thumbnail_size": f"{thumb.shape[1]}x{thumb.shape[0]}", "bpp": bpp(len(thumbnail_jpeg), w, h),
        "thumbnail_psnr": psnr(thumb, bicubic_downscale(image, scale)),
        "hr_psnr": psnr(restored, image),
        "bicubic_jpeg_quality": baseline.quality, "bicubic_jpeg_bpp": bpp(len(baseline.jpeg), w, h),
        "bicubic_jpeg_hr_psnr": psnr(baseline.recon, image),
    }

    def crop(a: np.ndarray) -> np.ndarray:
        return zoom(a[y:y + side, x:x + side], ZOOM)

    s = scale
    font = caption_font(15)
    panels = [
        labelled(crop(image), ["original", f"{w}x{h}"], font),
        labelled(zoom(thumb[y // s:(y + side) // s, x // s:(x + side) // s], ZOOM * s),
                 [f"thumbnail .jpg {numbers['thumbnail_size']}",
                  f"{numbers['bpp']:.3f} bpp, {numbers['thumbnail_psnr']:.2f} dB vs bicubic"], font),
        labelled(crop(baseline.recon), [f"bicubic + JPEG q{baseline.quality} + bicubic",
                                        f"{numbers['bicubic_jpeg_bpp']:.3f} bpp, {numbers['bicubic_jpeg_hr_psnr']:.2f} dB"],
                 font),
        labelled(crop(restored), ["HyperThumbnail: rebuilt from the .jpg",
                                  f"{numbers['bpp']:.3f} bpp, {numbers['hr_psnr']:.2f} dB"], font),
    ]
    title = (f"{name}: {side}x{side} crop at ({x}, {y}), zoomed {ZOOM}x; PSNR on RGB over the whole photo; "
             f"bpp = 8 x file bytes / original pixels")
    return Comparison(sheet(title, panels, font), numbers)
