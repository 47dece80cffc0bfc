"""Factorized density per DCT frequency (Balle et al. 2018), the training-time rate proxy.

Written here rather than taken from CompressAI because CompressAI requires torchvision, which does
not import beside the CPU torch build this project pins. Only `likelihood` is needed: the product's
real bitstream is the JPEG file, coded by libjpeg's optimized Huffman tables.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .precision import full_precision

LIKELIHOOD_BOUND = 1e-9


class FactorizedDensity(nn.Module):
    """Cumulative c(x) per channel = sigmoid of a monotone 1->3->3->3->1 MLP (per channel)."""

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0):
        super().__init__()
        dims = (1, *filters, 1)
        scale = init_scale ** (1 / (len(dims) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(dims) - 1):
            init = np.log(np.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), float(init))))
            self.biases.append(nn.Parameter(torch.rand(channels, dims[i + 1], 1) - 0.5))
            if i < len(dims) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))

    def _logits_cumulative(self, x: torch.Tensor) -> torch.Tensor:
        """x: (C, 1, N) -> (C, 1, N)."""
        for i, (m, b) in enumerate(zip(self.matrices, self.biases)):
            x = torch.matmul(F.softplus(m), x) + b
            if i < len(self.factors):
                x = x + torch.tanh(self.factors[i]) * torch.tanh(x)
        return x

    def likelihood(self, values: torch.Tensor) -> torch.Tensor:
        """values: (C, N) quantized (or noisy) symbols -> P(bin of width 1 around each value)."""
        x = values.unsqueeze(1)
        lower = self._logits_cumulative(x - 0.5)
        upper = self._logits_cumulative(x + 0.5)
        sign = -torch.sign(lower + upper).detach()  # evaluate in the tail where sigmoid is accurate
        p = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        return p.squeeze(1).clamp_min(LIKELIHOOD_BOUND)


class DCTRateModel(nn.Module):
    """Bits of quantized JPEG coefficients: one density for Y, one shared by Cb and Cr."""

    def __init__(self):
        super().__init__()
        self.luma = FactorizedDensity(64)
        self.chroma = FactorizedDensity(64)

    @full_precision
    def bits(self, q: torch.Tensor) -> torch.Tensor:
        """q: (B,3,64,h,w) -> total bits per image, shape (B,)."""
        b = q.shape[0]
        y = q[:, 0].permute(1, 0, 2, 3).reshape(64, -1)
        c = q[:, 1:].permute(2, 0, 1, 3, 4).reshape(64, -1)
        bits_y = -torch.log2(self.luma.likelihood(y)).reshape(64, b, -1).sum(dim=(0, 2))
        bits_c = -torch.log2(self.chroma.likelihood(c)).reshape(64, b, -1).sum(dim=(0, 2))
        return bits_y + bits_c
