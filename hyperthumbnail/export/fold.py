"""The decoder body for export, with its bicubic skip folded into the low-resolution tail.

The trained decoder adds a bicubic upsample of the thumbnail to the body's output at full
resolution (`Decoder.body_from_features`: readable, and the form training uses). A bicubic x`s`
upsample (PyTorch, `align_corners=False`, borders clamped) is a fixed linear filter: each of the
s*s output phases is a separable kernel over a 5x5 window of LR pixels (4 taps per axis), i.e. a
fixed 3 -> 3*s*s convolution at LR over the replicate-padded thumbnail, followed by the same
pixel shuffle the body's tail already does. Added to the tail conv's output before that shuffle,
the only full-resolution work left is the shuffle itself and the uint8 conversion (a 6K decode
spent more time on the full-resolution skip than on the whole network: issue #28).

The weights come from the bicubic kernel's impulse responses at export time, so every checkpoint
gets the folded graph for free; `tests/test_export.py` holds it equal to the unfolded body.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model.decoder import HEAD_FEATURES_THUMBNAIL_CHANNELS, Decoder

RADIUS = 2  # LR pixels each side: bicubic x s (s = 2, 4) reads 4 taps within +-2 of an output's source


def bicubic_phase_weights(scale: int, channels: int = 3) -> torch.Tensor:
    """(channels * s * s, 1, 5, 5) float32: grouped-conv weights (groups=channels: output channel
    c*s*s + phase reads input channel c only, the order pixel shuffle expects) whose output,
    pixel-shuffled by `scale`, is `F.interpolate(x, scale_factor=scale, mode="bicubic",
    align_corners=False)` of x replicate-padded by `RADIUS` (read off impulse responses in float64)."""
    size = 4 * RADIUS + 1  # an impulse far enough from the borders that no clamping touches it
    centre = size // 2
    impulse = torch.zeros(1, 1, size, size, dtype=torch.float64)
    impulse[0, 0, centre, centre] = 1.0
    response = F.interpolate(impulse, scale_factor=scale, mode="bicubic", align_corners=False)[0, 0]
    k = 2 * RADIUS + 1
    weights = torch.zeros(channels * scale * scale, 1, k, k, dtype=torch.float64)
    for py in range(scale):
        for px in range(scale):
            for ky in range(k):
                for kx in range(k):
                    # output (i, j) at phase (py, px) reads LR (i + ky - RADIUS, j + kx - RADIUS): the
                    # impulse at `centre` is read by the output whose i = centre - ky + RADIUS
                    i, j = centre - ky + RADIUS, centre - kx + RADIUS
                    value = response[scale * i + py, scale * j + px]
                    for c in range(channels):
                        weights[c * scale * scale + py * scale + px, 0, ky, kx] = value
    return weights.float()


class FoldedDecoderBody(nn.Module):
    """LR head features (`Decoder.head_features`) -> HR image (not clamped), equal to
    `decoder.body_from_head_features` within float rounding: body tail conv + the bicubic skip as
    3 -> 3*s*s grouped convs at LR (the thumbnail and the kernel in two parts each), one pixel shuffle."""

    def __init__(self, decoder: Decoder):
        super().__init__()
        self.decoder = decoder
        self.scale = decoder.scale
        weight = bicubic_phase_weights(decoder.scale)
        # in two parts too (the first exact in bf16, as the thumbnail's): a bf16 graph would round
        # the kernel to 8 significant bits (Kodak, v4.5: +0.0007 dB on top of the thumbnail's split)
        coarse = weight.to(torch.bfloat16).float()
        self.register_buffer("skip_weight_coarse", coarse, persistent=False)
        self.register_buffer("skip_weight_rest", weight - coarse, persistent=False)

    def phases(self, features: torch.Tensor) -> torch.Tensor:
        """(B, 3*s*s, h, w): the HR image before its pixel shuffle (body tail + folded skip)."""
        body = self.decoder.body
        h = features[:, HEAD_FEATURES_THUMBNAIL_CHANNELS:]  # the head conv ran in the features graph
        tail = body.tail[0](h + body.body(h))  # the tail conv, before its pixel shuffle
        coarse, rest = (F.pad(features[:, i:i + 3], (RADIUS,) * 4, mode="replicate") for i in (0, 3))
        weight, weight_rest = self.skip_weight_coarse.to(coarse.dtype), self.skip_weight_rest.to(coarse.dtype)
        # the bicubic skip of (coarse + rest) with (weight + weight_rest), less rest x weight_rest (~2^-17)
        skip = F.conv2d(coarse, weight, groups=3) + F.conv2d(coarse, weight_rest, groups=3) + F.conv2d(rest, weight, groups=3)
        return tail + skip

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.phases(features), self.scale)

    def uint8_hwc(self, features: torch.Tensor) -> torch.Tensor:
        """(B, h*s, w*s, 3) uint8: `to_uint8_hwc(forward(features).clamp(0, 1))` pixel for pixel,
        with the conversion done before the one transpose (pixel shuffle and HWC layout in a
        single reorder), so that the full-resolution reorder moves 1 byte a value instead of 4."""
        u8 = torch.round(self.phases(features).clamp(0.0, 1.0) * 255.0).to(torch.uint8)
        b, _, h, w = u8.shape
        s = self.scale
        return u8.reshape(b, 3, s, s, h, w).permute(0, 4, 2, 5, 3, 1).reshape(b, h * s, w * s, 3)
