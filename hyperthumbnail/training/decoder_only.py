"""Decoder-only training: the encoder and QPM frozen, the decoder trained on cached thumbnails.

The thumbnail (what users store and see) stays exactly the frozen model's while the rebuilt photo
improves, and a step costs the decoder's forward and backward only (no encoder, no rate model).
The loop, schedule, checkpoints, CSV logs and Kodak validation are `Trainer`'s.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .thumbnail_cache import build_cache, orient
from .train import TrainConfig, Trainer


class CachedThumbnailBank:
    """Training photos with their cached thumbnails, sampled as block-aligned crops.

    Photos are drawn in proportion to their area, so the many small (481x321) photos of the
    training folder do not outweigh the large ones; each crop also draws one of the cached
    orientations.
    """

    def __init__(self, cache: str | Path, block: int, min_side: int, device: torch.device):
        self.block, self.device = block, device
        self.items: list[dict[str, np.ndarray]] = []
        for path in tqdm(sorted(Path(cache).glob("*.npz")), desc=f"loading {cache}", leave=False):
            with np.load(path) as z:
                item = {k: z[k] for k in z.files}
            if min(item["hr"].shape[:2]) >= min_side:
                self.items.append(item)
        if not self.items:
            raise ValueError(f"no cached thumbnail in {cache} has both sides >= {min_side} px")
        self.orientations = sum(k.startswith("q") for k in self.items[0])
        area = torch.tensor([float(i["hr"].shape[0] * i["hr"].shape[1]) for i in self.items])
        self.weights = area / area.sum()

    def __len__(self) -> int:
        return len(self.items)

    def sample(self, batch: int, crop: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """(HR (B,3,c,c) float in [0,1], q (B,3,64,c/block,c/block) float, tables (B,2,64) float)."""
        cb = crop // self.block
        hrs, qs, tables = [], [], []
        for i in torch.multinomial(self.weights, batch, replacement=True, generator=generator).tolist():
            item = self.items[i]
            k = int(torch.randint(self.orientations, (1,), generator=generator))
            q = item[f"q{k}"]
            h, w = q.shape[-2:]
            size = min(cb, h, w)
            y = int(torch.randint(h - size + 1, (1,), generator=generator))
            x = int(torch.randint(w - size + 1, (1,), generator=generator))
            b = self.block
            hrs.append(torch.from_numpy(np.ascontiguousarray(orient(item["hr"], k)[y * b:(y + size) * b, x * b:(x + size) * b])))
            qs.append(torch.from_numpy(np.ascontiguousarray(q[:, :, y:y + size, x:x + size])))
            tables.append(torch.from_numpy(item[f"tables{k}"]))
        hr = torch.stack(hrs).permute(0, 3, 1, 2).float().div_(255.0)
        return hr.to(self.device), torch.stack(qs).float().to(self.device), torch.stack(tables).float().to(self.device)


class DecoderTrainer(Trainer):
    def __init__(self, cfg: TrainConfig, cache_dir: str, orientations: int, mse_weight: float = 0.0):
        super().__init__(cfg)
        if not cfg.init_weights:
            raise ValueError("decoder-only training needs --init-weights: the frozen encoder that made the cache")
        self.cache_dir, self.orientations, self.mse_weight = cache_dir, orientations, mse_weight
        for name, module in self.model.named_children():
            module.requires_grad_(name == "decoder")
        self.opt = torch.optim.Adam(self.model.decoder.parameters(), lr=cfg.lr)

    def prepare(self, resumed: bool) -> CachedThumbnailBank:
        cfg = self.cfg
        # resumable (photos already cached are skipped); refuses a cache of another encoder (manifest)
        build_cache(cfg.init_weights, cfg.data, self.cache_dir, cfg.scale, self.orientations, threads=cfg.threads or 0)
        return CachedThumbnailBank(self.cache_dir, self.model.block, max(cfg.crop, cfg.warmup_crop or 0), self.device)

    def train_step(self, bank: CachedThumbnailBank) -> dict[str, float]:
        cfg = self.cfg
        hr, q, tables = bank.sample(cfg.batch, self.crop_now(), self.generator)
        for g in self.opt.param_groups:
            g["lr"] = self.lr_now()
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None):
            hr_hat = self.model.decoder(q, tables).float()
        l1 = F.l1_loss(hr_hat, hr)
        mse = F.mse_loss(hr_hat, hr)
        loss = l1 + self.mse_weight * mse
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
