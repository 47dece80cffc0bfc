"""Fixed anti-aliased bicubic downscaler that matches Pillow's `Image.resize(..., BICUBIC)`.

It makes the thumbnail guide target y_ref, and the encoder predicts a residual on top of it
(so an untrained encoder already emits a good thumbnail). A strided depthwise convolution with
Pillow's per-pixel weight renormalisation at the borders; exports to ONNX as Conv/Div.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .precision import full_precision


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    return np.where(
        x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
        np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0),
    )


def pil_bicubic_taps(scale: int) -> np.ndarray:
    """The 4*scale taps Pillow uses for one output pixel when shrinking by an integer factor."""
    offsets = np.arange(-2 * scale + 1, 2 * scale + 1) - 0.5  # input centres relative to output centre
    w = _cubic(offsets / scale)
    return (w / w.sum()).astype(np.float32)


class BicubicDownscale(nn.Module):
    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale
        taps = torch.from_numpy(pil_bicubic_taps(scale))
        self.register_buffer("taps", taps, persistent=False)
        self.pad = (len(taps) - scale) // 2

    def _pass(self, x: torch.Tensor, horizontal: bool) -> torch.Tensor:
        c = x.shape[1]
        k = self.taps.to(x)
        weight = (k.view(1, 1, 1, -1) if horizontal else k.view(1, 1, -1, 1)).repeat(c, 1, 1, 1)
        stride = (1, self.scale) if horizontal else (self.scale, 1)
        padding = (0, self.pad) if horizontal else (self.pad, 0)
        num = F.conv2d(x, weight, stride=stride, padding=padding, groups=c)
        # Pillow renormalises the taps that fall inside the image; dividing by the convolved
        # ones-mask does exactly that at the borders.
        ones = torch.ones_like(x[:, :1])
        den = F.conv2d(ones, weight[:1], stride=stride, padding=padding)
        return num / den

    @full_precision
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._pass(self._pass(x, horizontal=True), horizontal=False)
