"""Encoder: HR RGB -> LR thumbnail image (before JPEG).

Space-to-depth by the scale, then a residual-dense U-Net at LR resolution (2 down / 2 up levels).
It predicts a residual over the Pillow-bicubic downscale; the last conv starts at zero so an
untrained encoder already produces the bicubic thumbnail (learning then only has to add the
information the decoder needs, which is much faster to learn on a CPU).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ResidualDenseBlock, conv3x3
from .downscale import BicubicDownscale


class Encoder(nn.Module):
    def __init__(self, scale: int = 4, feats: int = 64):
        super().__init__()
        self.scale = scale
        self.downscale = BicubicDownscale(scale)
        self.unshuffle = nn.PixelUnshuffle(scale)
        self.head = conv3x3(3 * scale * scale, feats)
        self.enc0 = ResidualDenseBlock(feats)
        self.down1 = conv3x3(feats, feats, stride=2)
        self.enc1 = ResidualDenseBlock(feats)
        self.down2 = conv3x3(feats, feats, stride=2)
        self.mid = ResidualDenseBlock(feats)
        self.up2 = conv3x3(feats, feats * 4)
        self.dec1 = ResidualDenseBlock(feats)
        self.up1 = conv3x3(feats, feats * 4)
        self.dec0 = ResidualDenseBlock(feats)
        self.tail = conv3x3(feats, 3)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, hr: torch.Tensor) -> torch.Tensor:
        """hr: (B,3,H,W) in [0,1], H and W multiples of 32*scale/8... see `pad_multiple`."""
        base = self.downscale(hr)
        f0 = self.enc0(self.head(self.unshuffle(hr)))
        f1 = self.enc1(self.down1(f0))
        f2 = self.mid(self.down2(f1))
        u1 = self.dec1(F.pixel_shuffle(self.up2(f2), 2) + f1)
        u0 = self.dec0(F.pixel_shuffle(self.up1(u1), 2) + f0)
        return clamp_ste(base + self.tail(u0))


class _ClampInward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        # A descent step moves x by -grad: keep the gradient inside [0, 1] and wherever it
        # points back into the range; drop it where it would push x further out.
        outward = ((x > 1.0) & (grad < 0)) | ((x < 0.0) & (grad > 0))
        return grad.masked_fill(outward, 0.0)


def clamp_ste(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [0,1]; gradients pass where they pull x back into the range.

    A hard clamp gives zero gradient outside the range, so an encoder pushed out by one bad step
    never recovers (a GPU run at step ~4.5k). A plain straight-through clamp lets the loss push
    values ever further out with no visible effect, until the whole thumbnail sits far outside
    [0, 1] (a 2x CPU run: pre-clamp values reached -73000 at step 5.1k and both PSNRs fell to
    ~8-10 dB). Passing only inward gradients keeps the recovery and removes the drift.
    """
    if torch.onnx.is_in_onnx_export() or not x.requires_grad:
        return x.clamp(0.0, 1.0)
    return _ClampInward.apply(x)
