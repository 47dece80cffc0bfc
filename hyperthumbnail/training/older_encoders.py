"""Thumbnails users already store: older encoders whose thumbnails a new decoder must keep rebuilding.

When the encoder moves (a new model id), every thumbnail the older weights made stays in users'
hands and names its model. A new decoder serves those ids only if it was trained on their
thumbnails too: the older encoders (frozen) encode the training photos once into caches beside
the main one (`CACHE_DIR-MODELID`, `thumbnail_cache.build_cache`), and validation measures the
photo this decoder rebuilds from each older encoder's thumbnails (`psnr_MODELID` in val.csv).

`DecoderTrainer` mixes these caches into its crops; `JointTrainer` adds a decoder loss on a
batch of them to every joint step, so one run moves the encoder and keeps the old ids decoding.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..evaluation import evaluate_folder
from ..model import HyperThumbnail, ModelConfig
from ..weights import load_model, model_id, served_model_ids
from .data import ImageBank
from .objective import reconstruction_loss
from .thumbnail_cache import CachedThumbnailBank, build_cache
from .train import TrainConfig, Trainer


def also_cache_dir(cache_dir: str | Path, weights: str | Path) -> Path:
    """Where an older encoder's thumbnails are cached: beside the main cache, named by its model id."""
    return Path(f"{cache_dir}-{model_id(weights)}")


class OlderEncoders:
    """The frozen older weights (`--also-decode`), their caches and the model ids they add."""

    def __init__(self, weights: Sequence[str], own_id: str | None, config: ModelConfig, device: torch.device):
        """`own_id`: the frozen encoder's id in a decoder-only run (its thumbnails are the main cache);
        None in a joint run, whose encoder moves away from every given one."""
        self.weights = tuple(w for w in dict.fromkeys(weights) if model_id(w) != own_id)
        self.models = [load_model(w).to(device) for w in self.weights]  # frozen, for validation
        for w, m in zip(self.weights, self.models):
            if not config.same_encoder_side(m.config):
                raise ValueError(f"{w}: another architecture than --init-weights ({m.config} vs {config}); "
                                 "one decoder serves encoders of one shape")
        # every model id their thumbnails were made by, the older files' own `also_decodes` included
        self.served_ids = tuple(i for i in dict.fromkeys(i for w in self.weights for i in served_model_ids(w))
                                if i != own_id)

    def caches(self, cache_dir: str | Path, cfg: TrainConfig, orientations: int) -> list[Path]:
        """Build (resumably) and return each older encoder's cache of the training photos."""
        out = [also_cache_dir(cache_dir, w) for w in self.weights]
        for weights, cache in zip(self.weights, out):
            build_cache(weights, cfg.data, cache, cfg.scale, orientations, threads=cfg.threads or 0)
        return out

    @torch.no_grad()
    def validate(self, decoder_model: HyperThumbnail, cfg: TrainConfig, device: torch.device) -> dict[str, float]:
        """`psnr_ID`: the photo `decoder_model` rebuilds from each older encoder's validation thumbnails."""
        return {f"psnr_{model_id(w)}": evaluate_folder(decoder_model, cfg.val_data, device, cfg.val_limit, encoder=m)["psnr"]
                for w, m in zip(self.weights, self.models)}


class JointTrainer(Trainer):
    """A joint run (encoder, QPM and decoder) whose decoder also keeps rebuilding older encoders'
    thumbnails: each step adds the photo loss of a half batch of cached older thumbnails."""

    def __init__(self, cfg: TrainConfig, cache_dir: str, orientations: int, also_decode: Sequence[str]):
        super().__init__(cfg)
        self.cache_dir, self.orientations = cache_dir, orientations
        self.older = OlderEncoders(also_decode, None, self.model.config, self.device)
        self.also_decodes = self.older.served_ids

    def prepare(self, resumed: bool) -> ImageBank:
        self.older_bank = CachedThumbnailBank(self.older.caches(self.cache_dir, self.cfg, self.orientations),
                                              self.model.block, max(self.cfg.crop, self.cfg.warmup_crop or 0), self.device)
        return super().prepare(resumed)

    def extra_loss(self) -> torch.Tensor:
        cfg = self.cfg
        hr, q, tables = self.older_bank.sample(max(1, cfg.batch // 2), self.crop_now(), self.generator)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None):
            hr_hat = self.model.decoder(q, tables).float()
        return reconstruction_loss(hr_hat, hr, cfg.objective.mse_weight)[0]

    def validate(self) -> dict[str, float] | None:
        val = super().validate()
        return None if val is None else {**val, **self.older.validate(self.ema, self.cfg, self.device)}
