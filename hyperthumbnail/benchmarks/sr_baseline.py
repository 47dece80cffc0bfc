"""The super-resolution baseline: a plain bicubic thumbnail, a standard JPEG at one fixed quality,
and OUR decoder architecture trained to rebuild HR from that JPEG's coefficients.

It isolates what the encoder and QPM buy: same decoder, same bits of information (DCT
coefficients at LR), but a thumbnail nobody optimised. Thumbnails are made like ours: the HR
image is edge-padded to a multiple of 8*scale, bicubic-downscaled by exactly `scale` (Pillow),
written by Pillow/libjpeg at 4:4:4 with optimized Huffman tables, and read back at DCT level.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..codec.images import bicubic_resize, crop_to, pad_to_multiple
from ..interface import COEF_LIMIT
from ..model.decoder import Decoder
from ..weights import WEIGHTS_DIR, card_path
from .jpeg import encode_jpeg, ijg_tables, read_coefficients

DEFAULT_SR_WEIGHTS = WEIGHTS_DIR / "sr_baseline_x4.safetensors"


@dataclass(frozen=True)
class SRBaselineConfig:
    """The decoder's shape (ours by default) and the JPEG quality its thumbnails are made at."""

    quality: int
    scale: int = 4
    feats: int = 24
    blocks: int = 16
    coef_feats: int = 24
    coef_blocks: int = 16

    def decoder(self) -> Decoder:
        return Decoder(self.scale, self.feats, self.blocks, self.coef_feats, self.coef_blocks)


def quantize(coefficients: torch.Tensor, quality: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unquantized coefficients (B,3,64,h,w) -> (integer-valued q, IJG tables (B,2,64)), as libjpeg."""
    tables = torch.from_numpy(ijg_tables(quality)).float().to(coefficients.device)
    t = torch.stack([tables[0], tables[1], tables[1]])[None, :, :, None, None]
    q = torch.round(coefficients / t).clamp(-COEF_LIMIT, COEF_LIMIT)
    return q, tables.expand(coefficients.shape[0], 2, 64)


def save_sr_weights(decoder: Decoder, config: SRBaselineConfig, path: Path, card: dict) -> None:
    """fp16 safetensors (config in the metadata) + a JSON card beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().half().contiguous() for k, v in decoder.state_dict().items()}
    save_file(state, str(path), metadata={"sr_baseline_config": json.dumps(asdict(config))})
    card_path(path).write_text(json.dumps({"config": asdict(config), **card}, indent=2) + "\n")


class SRBaseline:
    """Bicubic thumbnail -> JPEG at a fixed quality -> our decoder (PyTorch, CPU)."""

    def __init__(self, weights: str | Path = DEFAULT_SR_WEIGHTS):
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"SR baseline weights not found: {path} (train them with "
                                    "`python -m hyperthumbnail.benchmarks.sr_train`)")
        with safe_open(str(path), framework="pt") as f:
            self.config = SRBaselineConfig(**json.loads(f.metadata()["sr_baseline_config"]))
        self.decoder = self.config.decoder()
        self.decoder.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
        self.decoder.eval()
        self.weights = path

    @property
    def scale(self) -> int:
        return self.config.scale

    def thumbnail(self, image: np.ndarray) -> bytes:
        """HxWx3 uint8 -> the baseline's .jpg (padded like ours, so LR blocks align with HR)."""
        padded = pad_to_multiple(image, 8 * self.scale)
        h, w = padded.shape[:2]
        return encode_jpeg(bicubic_resize(padded, (w // self.scale, h // self.scale)), self.config.quality)

    @torch.no_grad()
    def reconstruct(self, data: bytes, hr_size: tuple[int, int]) -> np.ndarray:
        """The baseline's .jpg + the original (W, H) -> HxWx3 uint8."""
        q, tables = read_coefficients(data)
        out = self.decoder(torch.from_numpy(q.astype(np.float32))[None],
                           torch.from_numpy(tables.astype(np.float32))[None])[0]
        pixels = (out.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
        return crop_to(pixels, *hr_size)
