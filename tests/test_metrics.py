"""Metrics against closed-form values and an independent scipy SSIM."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal

from hyperthumbnail.metrics import bpp, crop_border, psnr, psnr_cbcr, psnr_y, psnr_y_basicsr, ssim


def test_psnr_known_values():
    a = np.zeros((4, 4, 3), np.uint8)
    b = np.ones((4, 4, 3), np.uint8)
    assert psnr(a, b) == pytest.approx(20 * math.log10(255))  # MSE 1
    b[0, 0, 0] = 5  # MSE (47 + 25) / 48 = 1.5; uint8 inputs must not wrap around
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 1.5))
    assert psnr(a / 255, b / 255, data_range=1.0) == pytest.approx(psnr(a, b))
    assert psnr(b, b) == math.inf


def test_psnr_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        psnr(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))


def test_psnr_y_uses_jfif_luma():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
    b = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
    luma = lambda x: 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]  # noqa: E731
    mse = np.mean((luma(a.astype(float)) - luma(b.astype(float))) ** 2)
    assert psnr_y(a, b) == pytest.approx(10 * math.log10(255**2 / mse))
    # a change with zero luma (Cb/Cr only) is invisible to psnr_y
    shifted = a.astype(float) + np.array([0.587, -0.299, 0.0]) * 10
    assert psnr_y(a, shifted) > 200  # only float rounding error left


def test_psnr_border_ignores_a_corrupted_border():
    a = np.full((20, 24, 3), 100, np.uint8)
    b = a + 3  # interior: a constant offset of 3 -> MSE 9
    b[:2] = 0
    b[:, -2:] = 255
    assert psnr(a, b, border=2) == pytest.approx(20 * math.log10(255 / 3))
    assert psnr(a, b) < psnr(a, b, border=2) - 10  # the border counts without it
    assert crop_border(a, 2).shape == (16, 20, 3)
    with pytest.raises(ValueError, match="leaves nothing"):
        psnr(a, b, border=10)
    with pytest.raises(ValueError, match=">= 0"):
        psnr(a, b, border=-1)


def basicsr_reference(a: np.ndarray, b: np.ndarray, crop: int) -> float:
    """BasicSR's calculate_psnr(test_y_channel=True) step by step: crop, float32 /255, studio Y, x255."""
    def y(img):
        img = img[crop:-crop, crop:-crop].astype(np.float32) / 255.0
        return (np.dot(img, [65.481, 128.553, 24.966]) + 16.0) / 255.0 * 255.0
    mse = np.mean((y(a).astype(np.float64) - y(b).astype(np.float64)) ** 2)
    return 10 * math.log10(255**2 / mse)


def test_psnr_y_basicsr_known_values():
    a = np.full((24, 24, 3), 90, np.uint8)
    b = a + 5  # grey offset of 5 -> studio Y moves by 5 * 219 / 255
    b[:4] = 255  # a corrupted 4-pixel border (crop = scale 4) is left out
    b[:, :4] = 0
    assert psnr_y_basicsr(a, b, 4) == pytest.approx(20 * math.log10(255 / (5 * 219 / 255)))
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (30, 26, 3)).astype(np.uint8)
    b = rng.integers(0, 256, (30, 26, 3)).astype(np.uint8)
    assert psnr_y_basicsr(a, b, 4) == pytest.approx(basicsr_reference(a, b, 4), abs=1e-4)
    # studio Y = full-range JFIF Y * 219/255 at the same peak: 1.32 dB above psnr_y on the same pixels
    assert psnr_y_basicsr(a, b, 2) == pytest.approx(psnr_y(a[2:-2, 2:-2], b[2:-2, 2:-2]) + 20 * math.log10(255 / 219))


def test_psnr_cbcr_sees_colour_only():
    rng = np.random.default_rng(4)
    a = rng.integers(40, 200, (8, 8, 3)).astype(np.float64)
    assert psnr_cbcr(a, a + 7) > 200  # a grey shift changes no chroma (only float rounding error left)
    # a change of Cb by +6 with Y and Cr unchanged (JFIF inverse) -> MSE over the two planes 36 / 2
    to_ycc = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
    delta = np.linalg.solve(to_ycc, [0.0, 6.0, 0.0])
    assert psnr_cbcr(a, a + delta) == pytest.approx(10 * math.log10(255**2 / 18))
    assert psnr_y(a, a + delta) > 200


def reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. 2004 with a 2-D 11x11 Gaussian window via scipy (valid region)."""
    x = np.arange(11) - 5
    g = np.exp(-(x**2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    scores = []
    for ch in range(a.shape[2]):
        x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)
        f = lambda z: scipy.signal.correlate2d(z, window, mode="valid")  # noqa: E731
        mx, my = f(x), f(y)
        sxx, syy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
        m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
        scores.append(m.mean())
    return float(np.mean(scores))


def test_ssim_matches_reference():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (40, 52, 3)).astype(np.uint8)
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    value = ssim(a, b)
    assert value == pytest.approx(reference_ssim(a, b), abs=1e-9)
    assert 0.5 < value < 0.99


def test_ssim_identity_and_ordering():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
    assert ssim(a, a) == pytest.approx(1.0)
    light = np.clip(a + rng.normal(0, 5, a.shape), 0, 255)
    heavy = np.clip(a + rng.normal(0, 40, a.shape), 0, 255)
    assert ssim(a, light) > ssim(a, heavy)


def test_ssim_rejects_tiny_images():
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(np.zeros((10, 20, 3)), np.zeros((10, 20, 3)))


def test_bpp():
    assert bpp(1000, 100, 10) == pytest.approx(8.0)
    assert bpp(3, 4, 6) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        bpp(10, 0, 10)
