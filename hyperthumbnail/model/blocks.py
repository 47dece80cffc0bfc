"""Building blocks shared by the encoder and decoder (ESRGAN/EDSR style)."""
from __future__ import annotations

import torch
from torch import nn


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


class ResidualDenseBlock(nn.Module):
    """Dense connections inside, scaled local residual outside (ESRGAN's RDB)."""

    def __init__(self, feats: int = 64, growth: int = 32, layers: int = 4, res_scale: float = 0.2):
        super().__init__()
        self.convs = nn.ModuleList(conv3x3(feats + i * growth, growth) for i in range(layers))
        self.fuse = conv3x3(feats + layers * growth, feats)
        self.act = nn.LeakyReLU(0.2, inplace=True)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in self.convs:
            feats.append(self.act(conv(torch.cat(feats, 1))))
        return x + self.res_scale * self.fuse(torch.cat(feats, 1))


class ResBlock(nn.Module):
    """EDSR residual block: conv-ReLU-conv, no batch norm."""

    def __init__(self, feats: int, res_scale: float = 1.0):
        super().__init__()
        self.body = nn.Sequential(conv3x3(feats, feats), nn.ReLU(inplace=True), conv3x3(feats, feats))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.body(x)


class EDSRLite(nn.Module):
    """head conv -> N residual blocks (+ global skip) -> conv to out_ch * r^2 -> pixel shuffle."""

    def __init__(self, in_ch: int, out_ch: int, feats: int, blocks: int, upscale: int, zero_tail: bool = False):
        super().__init__()
        self.head = conv3x3(in_ch, feats)
        self.body = nn.Sequential(*[ResBlock(feats) for _ in range(blocks)], conv3x3(feats, feats))
        self.tail = nn.Sequential(conv3x3(feats, out_ch * upscale * upscale), nn.PixelShuffle(upscale))
        if zero_tail:  # start as an identity residual: the caller's skip path alone
            nn.init.zeros_(self.tail[0].weight)
            nn.init.zeros_(self.tail[0].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_head(self.head(x))

    def from_head(self, h: torch.Tensor) -> torch.Tensor:
        """Everything after the head conv (the served decoder splits its graphs there)."""
        return self.tail(h + self.body(h))
