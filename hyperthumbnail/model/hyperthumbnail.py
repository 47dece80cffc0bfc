"""The whole HyperThumbnail model, in CompressAI's shape: `forward` for training (reconstruction,
thumbnail, rate estimate), `encode`/`decode` for inference on real quantized coefficients."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from ..interface import COEF_LIMIT  # baseline JPEG codes AC magnitudes in at most 10 bits
from .dct import coefficients_to_image, image_to_coefficients
from .decoder import Decoder
from .downscale import BicubicDownscale
from .encoder import Encoder
from .entropy import DCTRateModel
from .qpm import QPM, expand_tables, round_ste


@dataclass(frozen=True)
class ModelConfig:
    scale: int = 4
    encoder_feats: int = 64
    decoder_feats: int = 24
    decoder_blocks: int = 16
    coef_feats: int = 24
    coef_blocks: int = 16
    qpm_init_quality: int = 75

    def to_dict(self) -> dict:
        return asdict(self)

    def same_encoder_side(self, other: ModelConfig) -> bool:
        """Whether `other` differs at most in the decoder body's shape (a reshaped decoder,
        `training/reshape.py`, still decodes the thumbnails of encoders of this shape)."""
        return replace(other, **{k: getattr(self, k) for k in DECODER_BODY_SHAPE}) == self


# The fields a decoder reshape changes; every other field shapes the encoder, QPM or coefficient branch.
DECODER_BODY_SHAPE = ("decoder_feats", "decoder_blocks")


class HyperThumbnail(nn.Module):
    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        self.config = config
        self.scale = config.scale
        self.encoder = Encoder(config.scale, config.encoder_feats)
        self.qpm = QPM(config.qpm_init_quality)
        self.rate_model = DCTRateModel()
        self.decoder = Decoder(config.scale, config.decoder_feats, config.decoder_blocks,
                               config.coef_feats, config.coef_blocks)
        self.reference_downscale = BicubicDownscale(config.scale)

    @property
    def block(self) -> int:
        """HR sizes must be multiples of this (8x8 JPEG blocks at LR resolution)."""
        return 8 * self.scale

    def forward(self, hr: torch.Tensor, noise_rate: bool = True) -> dict[str, torch.Tensor]:
        lr_pre = self.encoder(hr)
        coef = image_to_coefficients(lr_pre)
        tables = self.qpm(coef)
        t = expand_tables(tables)
        scaled = coef / t
        q = round_ste(scaled)
        # Rate on noisy symbols (smooth gradient), decoder on rounded ones (what the file holds).
        symbols = scaled + torch.empty_like(scaled).uniform_(-0.5, 0.5) if noise_rate else q
        bits = self.rate_model.bits(symbols)
        return {
            "hr_hat": self.decoder(q, tables),
            "lr_jpeg": coefficients_to_image(q * t),
            "lr_ref": self.reference_downscale(hr),
            "bits": bits,
            "bpp": bits / (hr.shape[-1] * hr.shape[-2]),
            "tables": tables,
            "q": q,
            "symbols": symbols,
        }

    def quantize(self, coef: torch.Tensor, table_scale: torch.Tensor | float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Unquantized coefficients -> (integer-valued q, tables), both float; inference rounding."""
        tables = self.qpm(coef, table_scale)
        q = torch.round(coef / expand_tables(tables)).clamp(-COEF_LIMIT, COEF_LIMIT)
        return q, tables

    @torch.no_grad()
    def encode(self, hr: torch.Tensor, table_scale: torch.Tensor | float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """hr (B,3,H,W) in [0,1], H,W multiples of `block` -> (q int16 (B,3,64,h,w), tables uint8 (B,2,64))."""
        q, tables = self.quantize(image_to_coefficients(self.encoder(hr)), table_scale)
        return q.to(torch.int16), tables.to(torch.uint8)

    @torch.no_grad()
    def decode(self, q: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
        """-> HR RGB in [0,1], (B,3,8h*scale,8w*scale)."""
        return self.decoder(q.float(), tables.float()).clamp(0.0, 1.0)
