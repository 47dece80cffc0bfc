"""Frequency-aware decoder: quantized DCT coefficients + tables -> HR RGB.

Two paths meet at LR resolution: the JPEG-decoded thumbnail (dequantize -> IDCT -> RGB, what any
viewer shows) and a coefficient branch that reads the 192 raw dequantized coefficients per block
(EDSR, pixel-shuffle x8, output / 10). Their concatenation (27 ch) goes through an EDSR-lite
that upsamples by the scale. A bicubic upsample of the thumbnail is added as a global skip, so
the network learns only the detail bicubic misses (faster to train, same cost at inference);
its last conv starts at zero, so an untrained decoder is exactly bicubic upscaling.

Training reads the body's input as `features`; the served graphs split one conv later
(`head_features`): the body's head conv runs in the f32 features graph, because rounding the
thumbnail's float pixels to bf16 (8 significant bits) at the body's input cost 0.006 dB on Kodak.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import EDSRLite
from .dct import coefficients_to_image
from .qpm import expand_tables

# Dequantized coefficients span about +-1024*8; bring them near unit scale for the conv branch.
COEF_BRANCH_INPUT_SCALE = 1.0 / 128.0


class Decoder(nn.Module):
    def __init__(self, scale: int = 4, feats: int = 24, blocks: int = 16, coef_feats: int = 24, coef_blocks: int = 16):
        super().__init__()
        self.scale = scale
        self.coef_branch = EDSRLite(192, coef_feats, coef_feats, coef_blocks, upscale=8)
        self.body = EDSRLite(3 + coef_feats, 3, feats, blocks, upscale=scale, zero_tail=True)

    def thumbnail(self, q: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
        """What a JPEG viewer shows (before clamping): (B,3,8h,8w) in ~[0,1]."""
        return coefficients_to_image(q * expand_tables(tables))

    def features(self, q: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
        """The body's input at LR: [JPEG thumbnail clamped to [0,1] (3 ch), coefficient branch]."""
        coef = q * expand_tables(tables)
        b, _, _, h, w = coef.shape
        lr = coefficients_to_image(coef).clamp(0.0, 1.0)  # a JPEG decoder clamps too
        freq = self.coef_branch(coef.reshape(b, 192, h, w) * COEF_BRANCH_INPUT_SCALE) / 10.0
        return torch.cat([lr, freq], dim=1)

    def body_from_features(self, features: torch.Tensor) -> torch.Tensor:
        """`features` (or any crop of them) -> HR RGB (not clamped). Each output pixel depends
        on features within ~36 LR pixels only, so crops with that margin tile exactly."""
        up = F.interpolate(features[:, :3], scale_factor=self.scale, mode="bicubic", align_corners=False)
        return up + self.body(features)

    def head_features(self, q: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
        """What the served decoder_features graph hands the body: [JPEG thumbnail (3 ch), the body's
        head conv of `features` (feats ch)], at LR. The head reads the exact float features."""
        features = self.features(q, tables)
        return torch.cat([features[:, :3], self.body.head(features)], dim=1)

    def body_from_head_features(self, x: torch.Tensor) -> torch.Tensor:
        """`head_features` (or any crop of them) -> HR RGB: `body_from_features` one conv later."""
        up = F.interpolate(x[:, :3], scale_factor=self.scale, mode="bicubic", align_corners=False)
        return up + self.body.from_head(x[:, 3:])

    def forward(self, q: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
        """q: (B,3,64,h,w) quantized coefficients (float), tables: (B,2,64) -> (B,3,8hs,8ws)."""
        return self.body_from_features(self.features(q, tables))
