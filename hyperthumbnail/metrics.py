"""Image quality and rate metrics used in evaluation, the demo and benchmarks (numpy only).

PSNR on RGB (the paper's headline metric; optionally with a border left out), PSNR on JFIF luma,
PSNR on the JFIF chroma planes (Cb and Cr together), BasicSR's Y-channel PSNR (studio-range
BT.601 luma, `scale` border pixels cropped: what most super-resolution tables report), SSIM as
defined by Wang et al. 2004 (11x11 Gaussian window, sigma 1.5, K1=0.01, K2=0.03, 'valid'
filtering, as in the reference MATLAB code), and bits per pixel of a file.

The two luma PSNRs differ: `psnr_y` is full-range JFIF Y (0.299 R + 0.587 G + 0.114 B, the Y of
the JPEG file), `psnr_y_basicsr` is studio-range Y (16 + (65.481 R + 128.553 G + 24.966 B) / 255,
i.e. the same weights times 219/255) with the same peak 255, so on the same pixels it reads
20*log10(255/219) = 1.32 dB higher, plus whatever cropping the border changes.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["bpp", "crop_border", "psnr", "psnr_cbcr", "psnr_y", "psnr_y_basicsr", "ssim"]

_LUMA = np.array([0.299, 0.587, 0.114])  # JFIF full-range Y from RGB
# JFIF full-range Cb, Cr from RGB (as JPEG; the +128 offsets cancel in a difference)
_CHROMA = np.array([[-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]).T
# BasicSR's rgb2ycbcr(y_only=True) on [0, 1] input: studio-range BT.601 Y (16..235 on [0, 255])
_LUMA_STUDIO = np.array([65.481, 128.553, 24.966])


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.size == 0:
        raise ValueError("images are empty")
    return a, b


def crop_border(image: np.ndarray, border: int) -> np.ndarray:
    """The image without `border` pixels on each of its four sides (first two axes)."""
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    h, w = image.shape[:2]
    if min(h, w) <= 2 * border:
        raise ValueError(f"a {border}-pixel border leaves nothing of a {w}x{h} image")
    return image[border:h - border, border:w - border] if border else image


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0, border: int = 0) -> float:
    """Peak signal-to-noise ratio in dB over all elements (inf for identical inputs), leaving
    out `border` pixels on each side of HxW... images."""
    a, b = _pair(a, b)
    a, b = crop_border(a, border), crop_border(b, border)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def psnr_y(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """PSNR on the JFIF (full-range BT.601) luma of two ...x3 RGB images."""
    a, b = _pair(a, b)
    if a.shape[-1] != 3:
        raise ValueError(f"expected RGB images (last axis 3), got shape {a.shape}")
    return psnr(a @ _LUMA, b @ _LUMA, data_range)


def psnr_cbcr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """PSNR of the JFIF (full-range BT.601, as JPEG) Cb and Cr planes of two ...x3 RGB images,
    one MSE over both planes: the colour error, blind to any change of luma alone."""
    a, b = _pair(a, b)
    if a.shape[-1] != 3:
        raise ValueError(f"expected RGB images (last axis 3), got shape {a.shape}")
    return psnr(a @ _CHROMA, b @ _CHROMA, data_range)


def psnr_y_basicsr(a: np.ndarray, b: np.ndarray, crop: int) -> float:
    """BasicSR's `calculate_psnr(a, b, crop_border=crop, test_y_channel=True)` on HxWx3 uint8 RGB:
    `crop` pixels cut from each side, studio-range Y (16..235) in float without rounding, peak 255."""
    a, b = _pair(a, b)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"expected HxWx3 RGB images, got shape {a.shape}")
    a, b = crop_border(a, crop), crop_border(b, crop)
    # BasicSR: Y = dot(x / 255, weights) + 16 on [0, 255]; the +16 cancels in the difference.
    return psnr(a @ _LUMA_STUDIO / 255.0, b @ _LUMA_STUDIO / 255.0, 255.0)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size) - (size - 1) / 2
    w = np.exp(-(x**2) / (2 * sigma**2))
    return w / w.sum()


def _filter_valid(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of the first two axes with the 1-D window `w`.

    A sum of shifted slices: no (H, W, k) temporaries, so 6K images stay cheap in memory.
    """
    k = len(w)
    rows = sum(w[i] * x[i:x.shape[0] - k + 1 + i] for i in range(k))
    return sum(w[i] * rows[:, i:rows.shape[1] - k + 1 + i] for i in range(k))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Mean SSIM of two HxW or HxWxC images (channels averaged); both sides must be >= 11."""
    a, b = _pair(a, b)
    if a.ndim not in (2, 3):
        raise ValueError(f"expected HxW or HxWxC images, got shape {a.shape}")
    w = _gaussian_window()
    if min(a.shape[:2]) < len(w):
        raise ValueError(f"SSIM needs images of at least {len(w)}x{len(w)}, got {a.shape[:2]}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = _filter_valid(a, w), _filter_valid(b, w)
    var_a = _filter_valid(a * a, w) - mu_a**2
    var_b = _filter_valid(b * b, w) - mu_b**2
    cov = _filter_valid(a * b, w) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())  # equal-size channels: mean over all = mean of channel means


def bpp(num_bytes: int, width: int, height: int) -> float:
    """Bits per pixel of a file of `num_bytes` for an image of width x height pixels."""
    if width < 1 or height < 1:
        raise ValueError(f"image has no pixels ({width}x{height})")
    return 8.0 * num_bytes / (width * height)
