"""Decoder-only training: the encoder and QPM frozen, the decoder trained on cached thumbnails.

The thumbnail (what users store and see) stays exactly the frozen model's while the rebuilt photo
improves, and a step costs the decoder's forward and backward only (no encoder, no rate model).
The loop, schedule, checkpoints, CSV logs and Kodak validation are `Trainer`'s.

A decoder can also be trained on the thumbnails of older encoders (`also_decode`): users keep the
thumbnails earlier weights made, and the shipped decoder must keep rebuilding them. Each encoder's
thumbnails are cached apart; a crop draws one encoder's thumbnail of the same photo and orientation.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..evaluation import evaluate_folder
from ..weights import load_model, model_id, served_model_ids
from .objective import reconstruction_loss
from .thumbnail_cache import build_cache, orient
from .train import TrainConfig, Trainer


class CachedThumbnailBank:
    """Training photos with their cached thumbnails, sampled as block-aligned crops.

    Photos are drawn in proportion to their area, so the many small (481x321) photos of the
    training folder do not outweigh the large ones; each crop also draws one of the cached
    orientations and, with several caches (one per frozen encoder, same photos), one encoder.
    """

    def __init__(self, caches: str | Path | Sequence[str | Path], block: int, min_side: int, device: torch.device):
        caches = [Path(caches)] if isinstance(caches, (str, Path)) else [Path(c) for c in caches]
        self.block, self.device = block, device
        self.items: list[dict] = []  # {"hr": (H, W, 3) uint8, "thumbs": [encoder][orientation] -> (q, tables)}
        for path in tqdm(sorted(caches[0].glob("*.npz")), desc=f"loading {caches[0]}", leave=False):
            thumbs, hr = [], None
            for cache in caches:
                with np.load(cache / path.name) as z:
                    hr = z["hr"] if hr is None else hr
                    thumbs.append([(z[f"q{k}"], z[f"tables{k}"]) for k in range(sum(f.startswith("q") for f in z.files))])
            if min(hr.shape[:2]) >= min_side:
                self.items.append({"hr": hr, "thumbs": thumbs})
        if not self.items:
            raise ValueError(f"no cached thumbnail in {caches[0]} has both sides >= {min_side} px")
        self.encoders = len(caches)
        self.orientations = min(len(t) for t in self.items[0]["thumbs"])
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
            # one encoder draws nothing, so a single-cache run keeps its random stream
            e = int(torch.randint(self.encoders, (1,), generator=generator)) if self.encoders > 1 else 0
            k = int(torch.randint(self.orientations, (1,), generator=generator))
            q, table = item["thumbs"][e][k]
            h, w = q.shape[-2:]
            size = min(cb, h, w)
            y = int(torch.randint(h - size + 1, (1,), generator=generator))
            x = int(torch.randint(w - size + 1, (1,), generator=generator))
            b = self.block
            hrs.append(torch.from_numpy(np.ascontiguousarray(orient(item["hr"], k)[y * b:(y + size) * b, x * b:(x + size) * b])))
            qs.append(torch.from_numpy(np.ascontiguousarray(q[:, :, y:y + size, x:x + size])))
            tables.append(torch.from_numpy(table))
        hr = torch.stack(hrs).permute(0, 3, 1, 2).float().div_(255.0)
        return hr.to(self.device), torch.stack(qs).float().to(self.device), torch.stack(tables).float().to(self.device)


def also_cache_dir(cache_dir: str | Path, weights: str | Path) -> Path:
    """Where an older encoder's thumbnails are cached: beside the main cache, named by its model id."""
    return Path(f"{cache_dir}-{model_id(weights)}")


class DecoderTrainer(Trainer):
    def __init__(self, cfg: TrainConfig, cache_dir: str, orientations: int, also_decode: Sequence[str] = ()):
        super().__init__(cfg)
        if not cfg.init_weights:
            raise ValueError("decoder-only training needs --init-weights: the frozen encoder that made the cache")
        self.cache_dir, self.orientations = cache_dir, orientations
        own = model_id(cfg.init_weights)
        self.also_decode = tuple(w for w in dict.fromkeys(also_decode) if model_id(w) != own)
        self.also_encoders = [load_model(w).to(self.device) for w in self.also_decode]  # frozen, for validation
        for w, m in zip(self.also_decode, self.also_encoders):
            if m.config != self.model.config:
                raise ValueError(f"{w}: another architecture than --init-weights ({m.config} vs {self.model.config}); "
                                 "one decoder serves encoders of one shape")
        # every model id these weights' thumbnails were made by, older ones' own `also_decodes` included
        self.also_decodes = tuple(i for i in dict.fromkeys(i for w in self.also_decode for i in served_model_ids(w))
                                  if i != own)
        for name, module in self.model.named_children():
            module.requires_grad_(name == "decoder")
        self.opt = torch.optim.Adam(self.model.decoder.parameters(), lr=cfg.lr)

    def prepare(self, resumed: bool) -> CachedThumbnailBank:
        cfg = self.cfg
        # resumable (photos already cached are skipped); refuses a cache of another encoder (manifest)
        caches = [Path(self.cache_dir), *(also_cache_dir(self.cache_dir, w) for w in self.also_decode)]
        for weights, cache in zip((cfg.init_weights, *self.also_decode), caches):
            build_cache(weights, cfg.data, cache, cfg.scale, self.orientations, threads=cfg.threads or 0)
        return CachedThumbnailBank(caches, self.model.block, max(cfg.crop, cfg.warmup_crop or 0), self.device)

    def validate(self) -> dict[str, float] | None:
        """The frozen encoder's thumbnails as `Trainer` measures them, plus `psnr_ID`: the photo this
        decoder rebuilds from each older encoder's thumbnails of the same images."""
        val = super().validate()
        if val is None:
            return None
        for weights, encoder in zip(self.also_decode, self.also_encoders):
            older = evaluate_folder(self.ema, self.cfg.val_data, self.device, self.cfg.val_limit, encoder=encoder)
            val[f"psnr_{model_id(weights)}"] = older["psnr"]
        return val

    def train_step(self, bank: CachedThumbnailBank) -> dict[str, float]:
        cfg = self.cfg
        hr, q, tables = bank.sample(cfg.batch, self.crop_now(), self.generator)
        for g in self.opt.param_groups:
            g["lr"] = self.lr_now()
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None):
            hr_hat = self.model.decoder(q, tables).float()
        loss = reconstruction_loss(hr_hat, hr, cfg.objective.mse_weight)
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
        return {"loss": loss.item(), "l1": F.l1_loss(hr_hat.detach(), hr).item(), "hr_psnr": float(hr_psnr), "lr": self.lr_now()}
