"""Colour conversion and the 8x8 block DCT, exactly as baseline JPEG (libjpeg) defines them.

Layout convention used across the project: coefficients are `(B, C, 64, H/8, W/8)` with the 64
entries of each block in natural row-major order `u * 8 + v` (u = vertical frequency), which is
also the order jpeglib returns `(h, w, 8, 8)` blocks in. Zig-zag order is only used inside QPM.
The DCT is a stride-8 convolution (and the IDCT a 1x1 convolution + pixel shuffle) so the same
code exports to ONNX/TensorRT as plain Conv ops.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .precision import full_precision

# JFIF full-range YCbCr (ITU-R BT.601), on the 0..255 scale.
RGB_TO_YCBCR = torch.tensor(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
)
YCBCR_TO_RGB = torch.tensor([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]])


def zigzag_order() -> np.ndarray:
    """`zz[i]` = natural index (u*8+v) of the i-th coefficient in JPEG zig-zag order."""
    order = sorted(
        ((u, v) for u in range(8) for v in range(8)),
        key=lambda p: (p[0] + p[1], p[1] if (p[0] + p[1]) % 2 == 0 else p[0]),
    )
    return np.array([u * 8 + v for u, v in order], dtype=np.int64)


def dct_basis() -> torch.Tensor:
    """(64, 8, 8) orthonormal 2-D DCT-II basis; basis[u*8+v, i, j] multiplies pixel (i, j)."""
    c = np.array([math.sqrt(1 / 8)] + [math.sqrt(2 / 8)] * 7)
    k = np.arange(8)
    d = c[:, None] * np.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16)  # (freq, pos)
    basis = np.einsum("ui,vj->uvij", d, d).reshape(64, 8, 8)
    return torch.from_numpy(basis).float()


_BASIS = dct_basis()


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) RGB on 0..255 -> YCbCr on 0..255 (Cb/Cr offset by 128)."""
    ycc = torch.einsum("ij,bjhw->bihw", RGB_TO_YCBCR.to(rgb), rgb)
    offset = torch.tensor([0.0, 128.0, 128.0], dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return ycc + offset


def ycbcr_to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    offset = torch.tensor([0.0, 128.0, 128.0], dtype=ycc.dtype, device=ycc.device).view(1, 3, 1, 1)
    return torch.einsum("ij,bjhw->bihw", YCBCR_TO_RGB.to(ycc), ycc - offset)


def block_dct(x: torch.Tensor) -> torch.Tensor:
    """(B,C,H,W) level-shifted samples, H and W multiples of 8 -> (B,C,64,H/8,W/8)."""
    b, c, h, w = x.shape
    weight = _BASIS.to(x).view(64, 1, 8, 8)
    coef = F.conv2d(x.reshape(b * c, 1, h, w), weight, stride=8)
    return coef.reshape(b, c, 64, h // 8, w // 8)


def block_idct(coef: torch.Tensor) -> torch.Tensor:
    """(B,C,64,h,w) -> (B,C,8h,8w); inverse of `block_dct` (orthonormal, so the transpose)."""
    b, c, k, h, w = coef.shape
    weight = _BASIS.to(coef).view(64, 64).t().reshape(64, 64, 1, 1)  # out: pixel (i*8+j), in: freq
    pixels = F.conv2d(coef.reshape(b * c, 64, h, w), weight)
    return F.pixel_shuffle(pixels, 8).reshape(b, c, h * 8, w * 8)


@full_precision
def image_to_coefficients(rgb01: torch.Tensor) -> torch.Tensor:
    """RGB in [0,1] -> unquantized JPEG DCT coefficients (B,3,64,h,w) (x255, level shift -128)."""
    return block_dct(rgb_to_ycbcr(rgb01 * 255.0) - 128.0)


@full_precision
def coefficients_to_image(coef: torch.Tensor) -> torch.Tensor:
    """Dequantized coefficients -> RGB in [0,1] (not clamped: the caller decides)."""
    return ycbcr_to_rgb(block_idct(coef) + 128.0) / 255.0
