"""Decoder-only training: the encoder and QPM frozen, the decoder trained on cached thumbnails.

The thumbnail (what users store and see) stays exactly the frozen model's while the rebuilt photo
improves, and a step costs the decoder's forward and backward only (no encoder, no rate model).
The loop, schedule, checkpoints, CSV logs and Kodak validation are `Trainer`'s.

A decoder can also be trained on the thumbnails of older encoders (`also_decode`,
`older_encoders.py`): each encoder's thumbnails are cached apart, and a crop draws one encoder's
thumbnail of the same photo and orientation.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..weights import model_id
from .objective import reconstruction_loss
from .older_encoders import OlderEncoders
from .thumbnail_cache import CachedThumbnailBank, build_cache
from .train import TrainConfig, Trainer


class DecoderTrainer(Trainer):
    def __init__(self, cfg: TrainConfig, cache_dir: str, orientations: int, also_decode: Sequence[str] = ()):
        super().__init__(cfg)
        if not cfg.init_weights:
            raise ValueError("decoder-only training needs --init-weights: the frozen encoder that made the cache")
        self.cache_dir, self.orientations = cache_dir, orientations
        self.older = OlderEncoders(also_decode, model_id(cfg.init_weights), self.model.config, self.device)
        self.also_decodes = self.older.served_ids
        for name, module in self.model.named_children():
            module.requires_grad_(name == "decoder")
        self.opt = torch.optim.Adam(self.model.decoder.parameters(), lr=cfg.lr)

    def prepare(self, resumed: bool) -> CachedThumbnailBank:
        cfg = self.cfg
        # resumable (photos already cached are skipped); refuses a cache of another encoder (manifest)
        main = build_cache(cfg.init_weights, cfg.data, self.cache_dir, cfg.scale, self.orientations, threads=cfg.threads or 0)
        caches = [main, *self.older.caches(self.cache_dir, cfg, self.orientations)]
        return CachedThumbnailBank(caches, self.model.block, max(cfg.crop, cfg.warmup_crop or 0), self.device)

    def validate(self) -> dict[str, float] | None:
        """The frozen encoder's thumbnails as `Trainer` measures them, plus `psnr_ID`: the photo this
        decoder rebuilds from each older encoder's thumbnails of the same images."""
        val = super().validate()
        return None if val is None else {**val, **self.older.validate(self.ema, self.cfg, self.device)}

    def train_step(self, bank: CachedThumbnailBank) -> dict[str, float]:
        cfg = self.cfg
        hr, q, tables = bank.sample(cfg.batch, self.crop_now(), self.generator)
        for g in self.opt.param_groups:
            g["lr"] = self.lr_now()
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None):
            hr_hat = self.model.decoder(q, tables).float()
        loss, l1 = reconstruction_loss(hr_hat, hr, cfg.objective.mse_weight)
        if self._is_spike(loss.item()):
            self.skipped += 1
            return {"loss": loss.item(), "skipped": 1.0, "lr": self.lr_now()}
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.decoder.parameters(), cfg.grad_clip)
        self.opt.step()
        with torch.no_grad():
            for e, p in zip(self.ema.decoder.parameters(), self.model.decoder.parameters()):
                e.lerp_(p, 1 - cfg.ema_decay)
            hr_psnr = -10 * torch.log10(F.mse_loss(hr_hat.detach().clamp(0, 1), hr).clamp_min(1e-10))
        return {"loss": loss.item(), "l1": l1.item(), "hr_psnr": float(hr_psnr), "lr": self.lr_now()}
