"""Quantization prediction module: one luma and one chroma table per image.

An MLP (64-192-192-192-64) runs on every block's 64 zig-zag coefficients, its outputs are
averaged over all blocks of the image, +1.49 and rounded (straight-through), then clamped to the
baseline-JPEG range [1, 255]. Applied as 1x1 convolutions so it exports to ONNX as Conv ops.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .dct import zigzag_order
from .precision import full_precision

# Annex K tables (natural order) used to initialise the MLP's output bias at ~quality 50.
JPEG_LUMA_Q50 = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float32)
JPEG_CHROMA_Q50 = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32, dtype=np.float32)

# Coefficients reach about +-1024*8; this keeps the MLP's inputs near unit scale.
COEF_INPUT_SCALE = 1.0 / 64.0


class RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity gradient in the backward pass."""
    if torch.onnx.is_in_onnx_export() or not x.requires_grad:
        return torch.round(x)
    return RoundSTE.apply(x)


class TableMLP(nn.Module):
    def __init__(self, init_table: np.ndarray, init_quality: int = 75):
        super().__init__()
        zz = zigzag_order()
        self.register_buffer("zz", torch.from_numpy(zz), persistent=False)
        self.register_buffer("unzz", torch.from_numpy(np.argsort(zz)), persistent=False)
        self.net = nn.Sequential(
            nn.Conv2d(64, 192, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(192, 192, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(192, 192, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(192, 64, 1), nn.ReLU(),
        )
        # Start from the IJG table at `init_quality` so early training sees sane quantisation.
        s = 5000 / init_quality if init_quality < 50 else 200 - 2 * init_quality
        table = np.clip(np.floor((init_table * s + 50) / 100), 1, 255)
        last = self.net[-2]
        nn.init.normal_(last.weight, std=1e-4)
        with torch.no_grad():
            last.bias.copy_(torch.from_numpy(table[zz] - 1.49))

    @torch.no_grad()
    def fold_table_scale(self, scale: float) -> None:
        """Make the learned part of the table `scale` times coarser (> 1: smaller files). The last
        conv feeds a ReLU, which is positively homogeneous, so scaling its weight and bias scales
        every block's prediction and their mean; the +1.49 rounding offset stays."""
        if not scale > 0:
            raise ValueError(f"a table scale must be positive, got {scale}")
        last = self.net[-2]
        last.weight.mul_(scale)
        last.bias.mul_(scale)

    def forward(self, coef: torch.Tensor) -> torch.Tensor:
        """coef: (B, N, 64, h, w) for N components sharing the table -> (B, 64) natural order."""
        b, n, k, h, w = coef.shape
        x = coef[:, :, self.zz].reshape(b * n, 64, h, w) * COEF_INPUT_SCALE
        per_block = self.net(x).reshape(b, n, 64, h * w)
        table_zz = per_block.mean(dim=(1, 3)) + 1.49
        table = round_ste(table_zz).clamp(1.0, 255.0)
        return table[:, self.unzz]


class QPM(nn.Module):
    """Predicts (B, 2, 64) tables: [:,0] luma, [:,1] chroma (shared by Cb and Cr)."""

    def __init__(self, init_quality: int = 75):
        super().__init__()
        self.luma = TableMLP(JPEG_LUMA_Q50, init_quality)
        self.chroma = TableMLP(JPEG_CHROMA_Q50, init_quality)

    def fold_table_scale(self, scale: float) -> None:
        """Both tables' learned parts `scale` times coarser, in the weights (`training/release.py
        export --fit-bpp` calibrates a model's file size this way; `table_scale` does it per call)."""
        self.luma.fold_table_scale(scale)
        self.chroma.fold_table_scale(scale)

    @full_precision
    def forward(self, coef: torch.Tensor, table_scale: torch.Tensor | float = 1.0) -> torch.Tensor:
        """coef (B,3,64,h,w); `table_scale` multiplies the tables (rate control at inference)."""
        tables = torch.stack([self.luma(coef[:, :1]), self.chroma(coef[:, 1:])], dim=1)
        if not isinstance(table_scale, float) or table_scale != 1.0:
            scale = torch.as_tensor(table_scale, dtype=tables.dtype, device=tables.device)
            tables = round_ste(tables * scale.reshape(-1, 1, 1)).clamp(1.0, 255.0)
        return tables


def expand_tables(tables: torch.Tensor) -> torch.Tensor:
    """(B,2,64) -> (B,3,64,1,1): the table each component's coefficients are divided by."""
    return torch.stack([tables[:, 0], tables[:, 1], tables[:, 1]], dim=1)[..., None, None]
