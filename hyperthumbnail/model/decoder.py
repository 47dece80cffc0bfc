"""Frequency-aware decoder: quantized DCT coefficients + tables -> HR RGB.

Two paths meet at LR resolution: the JPEG-decoded thumbnail (dequantize -> IDCT -> RGB, what any
viewer shows) and a coefficient branch that reads the 192 raw dequantized coefficients per block
(EDSR, pixel-shuffle x8, output / 10). Their concatenation (27 ch) goes through an EDSR-lite
that upsamples by the scale. A bicubic upsample of the thumbnail is added as a global skip, so
the network learns only the detail bicubic misses (faster to train, same cost at inference);
its last conv starts at zero, so an untrained decoder is exactly bicubic upscaling.

Training reads the body's input as `features`; the served graphs split one conv later
(`head_features`), so that a bf16 body never rounds the thumbnail's float pixels to its 8
significant bits: the body's head conv runs in the f32 features graph, and the thumbnail the body's
bicubic skip reads comes in two parts that bf16 holds exactly (Kodak, v4.5, OpenVINO bf16 body:
28.4927 -> 28.4967 -> 28.5011 dB; f32 28.5016).
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
# The served body's input: [thumbnail to 1/256 steps (3 ch), the rest of it (3 ch), head conv (feats)].
# k/256 for k <= 256 has at most 8 significant bits, so bf16 holds the first part exactly, and the
# rest (|x| <= 1/512) loses only bf16's relative 2^-9 of itself.
THUMBNAIL_STEPS = 256
HEAD_FEATURES_THUMBNAIL_CHANNELS = 6


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
        return self._rebuild(features[:, :3], self.body.head(features))

    def head_features(self, q: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
        """What the served decoder_features graph hands the body, at LR: the JPEG thumbnail in two
        parts (`THUMBNAIL_STEPS`) and the body's head conv of the exact `features`."""
        features = self.features(q, tables)
        lr = features[:, :3]
        coarse = torch.round(lr * THUMBNAIL_STEPS) / THUMBNAIL_STEPS
        return torch.cat([coarse, lr - coarse, self.body.head(features)], dim=1)

    def body_from_head_features(self, x: torch.Tensor) -> torch.Tensor:
        """`head_features` (or any crop of them) -> HR RGB: `body_from_features` one conv later."""
        return self._rebuild(x[:, :3] + x[:, 3:HEAD_FEATURES_THUMBNAIL_CHANNELS], x[:, HEAD_FEATURES_THUMBNAIL_CHANNELS:])

    def _rebuild(self, lr: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The thumbnail `lr` upsampled bicubic plus the body's detail from its head conv's output `h`."""
        up = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return up + self.body.from_head(h)

    def forward(self, q: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
        """q: (B,3,64,h,w) quantized coefficients (float), tables: (B,2,64) -> (B,3,8hs,8ws)."""
        return self.body_from_features(self.features(q, tables))
