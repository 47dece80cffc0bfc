"""Train the SR baseline's decoder: HR crop -> Pillow-matched bicubic /scale -> 8-bit -> JPEG DCT
quantized with the IJG tables at a fixed quality -> decoder -> L1 against HR (Adam, cosine LR).

Training on the quantized coefficients computed in PyTorch is numerically libjpeg's encoding at
that quality (float vs integer DCT aside), so no files are written per step. The quality is fixed
once, on the first run: the one whose 4:4:4 files hit `--target-bpp` (HR pixels) on average over
the training images. Resumable: RUN_DIR/last.pt (atomic) holds everything, and re-running the
same command continues; `--max-minutes` counts training time across resumes. On exit the weights
are written as fp16 safetensors + a JSON card.

    python -m hyperthumbnail.benchmarks.sr_train --max-minutes 20 --threads 1
"""
from __future__ import annotations

import argparse
import csv
import math
import shlex
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..codec.images import bicubic_resize
from ..metrics import bpp as bits_per_pixel
from ..model.dct import image_to_coefficients
from ..model.downscale import BicubicDownscale
from ..training.checkpoint import save_checkpoint
from ..training.data import ImageBank
from ..weights import load_checkpoint
from .jpeg import closest_quality, encode_jpeg
from .sr_baseline import DEFAULT_SR_WEIGHTS, SRBaselineConfig, quantize, save_sr_weights


def quality_for_bpp(bank: ImageBank, target_bpp: float, scale: int) -> tuple[int, float]:
    """(quality, mean HR bpp at it) of whole training images made into baseline thumbnails."""
    thumbs = []
    for img in bank.images:
        hr = img.permute(1, 2, 0).cpu().numpy()
        h, w = hr.shape[:2]
        thumbs.append((bicubic_resize(hr, (math.ceil(w / scale), math.ceil(h / scale))), w, h))
    cache: dict[int, float] = {}

    def mean_bpp(q: int) -> float:
        if q not in cache:
            cache[q] = float(np.mean([bits_per_pixel(len(encode_jpeg(lr, q)), w, h) for lr, w, h in thumbs]))
        return cache[q]

    quality = closest_quality(mean_bpp, target_bpp)
    return quality, mean_bpp(quality)


class SRTrainer:
    def __init__(self, args: argparse.Namespace, argv: list[str]):
        self.args = args
        self.argv = argv  # recorded in the weights card
        self.run_dir = Path(args.run_dir)
        self.ckpt_path = self.run_dir / "last.pt"
        torch.manual_seed(args.seed)
        self.generator = torch.Generator().manual_seed(args.seed)
        self.step, self.elapsed, self.train_bpp = 0, 0.0, float("nan")
        self.config: SRBaselineConfig | None = None
        self.decoder = None
        self.opt = None
        self.downscale = BicubicDownscale(args.scale)

    def _build(self, config: SRBaselineConfig) -> None:
        self.config = config
        self.decoder = config.decoder()
        self.opt = torch.optim.Adam(self.decoder.parameters(), lr=self.args.lr)

    def resume(self) -> bool:
        if not self.ckpt_path.exists():
            return False
        s = load_checkpoint(self.ckpt_path)
        self._build(SRBaselineConfig(**s["config"]))
        self.decoder.load_state_dict(s["decoder"])
        self.opt.load_state_dict(s["optimizer"])
        self.step, self.elapsed, self.train_bpp = int(s["step"]), float(s["elapsed"]), float(s["train_bpp"])
        torch.set_rng_state(s["rng_torch"])
        self.generator.set_state(s["rng_sampler"])
        return True

    def save(self) -> None:
        save_checkpoint(self.ckpt_path, {
            "config": asdict(self.config), "decoder": self.decoder.state_dict(),
            "optimizer": self.opt.state_dict(), "step": self.step, "elapsed": self.elapsed,
            "train_bpp": self.train_bpp, "rng_torch": torch.get_rng_state(),
            "rng_sampler": self.generator.get_state(),
        })

    def lr_now(self) -> float:
        a = self.args
        progress = self.step / a.steps
        if a.max_minutes:
            progress = max(progress, self.elapsed / (60 * a.max_minutes))
        return a.min_lr + (a.lr - a.min_lr) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    def train_step(self, bank: ImageBank) -> tuple[float, float]:
        hr = bank.sample(self.args.batch, self.args.crop, self.generator)
        with torch.no_grad():  # the thumbnail as an 8-bit bicubic image, then libjpeg's quantization
            lr = (self.downscale(hr).clamp(0, 1) * 255).round() / 255
            q, tables = quantize(image_to_coefficients(lr), self.config.quality)
        out = self.decoder(q, tables)
        loss = F.l1_loss(out, hr)
        for group in self.opt.param_groups:
            group["lr"] = self.lr_now()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.decoder.parameters(), self.args.grad_clip)
        self.opt.step()
        mse = F.mse_loss(out.detach().clamp(0, 1), hr).item()
        return loss.item(), 10 * math.log10(1 / max(mse, 1e-10))

    def done(self) -> bool:
        a = self.args
        return self.step >= a.steps or bool(a.max_minutes and self.elapsed >= 60 * a.max_minutes)

    def run(self) -> None:
        a = self.args
        self.run_dir.mkdir(parents=True, exist_ok=True)
        bank = ImageBank(a.data, min_side=a.crop)
        resumed = self.resume()
        if not resumed:
            if a.quality:
                quality, self.train_bpp = a.quality, float("nan")
            else:
                quality, self.train_bpp = quality_for_bpp(bank, a.target_bpp, a.scale)
            self._build(SRBaselineConfig(quality=quality, scale=a.scale))
        log_path = self.run_dir / "log.csv"
        new_log = not log_path.exists()
        with open(log_path, "a", newline="") as logf, \
                tqdm(total=a.steps, initial=self.step, desc="sr_baseline", dynamic_ncols=True) as bar:
            log = csv.writer(logf)
            if new_log:
                log.writerow(["step", "elapsed_s", "lr", "l1", "psnr"])
            bar.write(f"{'resumed at step ' + str(self.step) if resumed else 'new run'}: JPEG quality "
                      f"{self.config.quality} (train bpp {self.train_bpp:.3f}), {len(bank)} images")
            t0, last_ckpt, acc = time.monotonic() - self.elapsed, time.monotonic(), []
            try:
                while not self.done():
                    acc.append(self.train_step(bank))
                    self.step += 1
                    self.elapsed = time.monotonic() - t0
                    bar.update(1)
                    if self.step % a.log_every == 0:
                        l1, psnr = np.mean(acc, axis=0)
                        log.writerow([self.step, round(self.elapsed, 1), f"{self.lr_now():.3g}", f"{l1:.5f}", f"{psnr:.3f}"])
                        logf.flush()
                        bar.set_postfix(l1=f"{l1:.4f}", psnr=f"{psnr:.2f}")
                        acc = []
                    if time.monotonic() - last_ckpt > 60 * a.checkpoint_minutes:
                        self.save()
                        last_ckpt = time.monotonic()
            finally:
                self.save()
        if a.export:
            self.export(Path(a.export))

    def export(self, path: Path) -> None:
        a = self.args
        save_sr_weights(self.decoder, self.config, path, {
            "what": "SR baseline for `hyperthumbnail bench rd`: our decoder trained on bicubic-downscaled "
                    f"thumbnails stored as standard 4:4:4 JPEG at quality {self.config.quality} (IJG tables); "
                    "no encoder, no QPM.",
            "command": shlex.join(["python", "-m", "hyperthumbnail.benchmarks.sr_train", *self.argv]),
            "data": a.data, "steps": self.step, "minutes": round(self.elapsed / 60, 1),
            "batch": a.batch, "crop": a.crop, "lr": a.lr, "loss": "L1", "optimizer": "Adam",
            "target_bpp": a.target_bpp, "train_bpp_at_quality": None if math.isnan(self.train_bpp) else round(self.train_bpp, 4),
            "threads": torch.get_num_threads(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        print(f"wrote {path} (step {self.step}, {self.elapsed / 60:.1f} min)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hyperthumbnail.benchmarks.sr_train",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default="../shared/datasets/train", help="training images (train/ only)")
    p.add_argument("--run-dir", default="runs/sr_baseline", help="checkpoint and log (git-ignored)")
    p.add_argument("--export", default=str(DEFAULT_SR_WEIGHTS), help="weights written on exit ('' = none)")
    p.add_argument("--scale", type=int, choices=(2, 4), default=4)
    p.add_argument("--target-bpp", type=float, default=0.3, help="pick the JPEG quality giving this HR bpp on train/")
    p.add_argument("--quality", type=int, default=None, help="fix the JPEG quality instead (1-100)")
    p.add_argument("--steps", type=int, default=200_000)
    p.add_argument("--max-minutes", type=float, default=None, help="total training time across resumes")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=128, help="HR crop side (a multiple of 8*scale)")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--min-lr", type=float, default=1e-5)
    p.add_argument("--grad-clip", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--checkpoint-minutes", type=float, default=2.0)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.crop % (8 * args.scale):
        raise SystemExit(f"--crop must be a multiple of {8 * args.scale}")
    if args.quality is not None and not 1 <= args.quality <= 100:
        raise SystemExit("--quality must be in 1..100")
    if args.threads:
        torch.set_num_threads(args.threads)
    SRTrainer(args, argv).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
