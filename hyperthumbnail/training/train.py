"""The training loop: resumable, time-boxed, logged to CSV, validated on real .jpg bytes."""
from __future__ import annotations

import csv
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..model import DECODER_BODY_SHAPE, HyperThumbnail, ModelConfig
from ..weights import load_checkpoint
from .amp import autocast_dtype
from .calibration import real_scan_bits
from .checkpoint import save_checkpoint
from .data import ImageBank
from .objective import ObjectiveConfig, RateDistortionObjective


@dataclass
class TrainConfig:
    data: str = "../shared/datasets/train"
    run_dir: str = "runs/x4"
    val_data: str | None = "../shared/datasets/kodak"  # the declared validation set
    val_limit: int | None = 6
    scale: int = 4
    steps: int = 20000
    max_minutes: float | None = None
    batch: int = 8
    crop: int = 128
    warmup_crop: int | None = None  # smaller crops for the first `warmup_crop_frac` of training
    warmup_crop_frac: float = 0.3
    lr: float = 5e-4
    rate_model_lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_steps: int = 200
    grad_clip: float = 5.0
    ema_decay: float = 0.999
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    amp: bool = True                 # bf16 autocast where the device runs bf16 natively (training/amp.py)
    channels_last: bool = True       # NHWC convolutions (faster under CPU bf16 autocast)
    checkpoint_minutes: float = 3.0
    checkpoint_every: int | None = None  # also checkpoint every N steps (tests, short runs)
    val_every: int = 1000
    calib_every: int = 50
    log_every: int = 20
    select_max_bpp: float | None = None  # default: the objective's target + 1/15 (0.32 at 0.30)
    select_min_thumbnail_psnr: float = 31.0
    select_min_thumbnail_worst: float | None = None  # best.pt also needs the worst image's thumbnail this high
    keep_validated: bool = False     # also keep every validated step's EMA weights (RUN_DIR/validated/step_N.pt)
    # Steer the training targets from validation on real files (None: leave them fixed):
    val_target_bpp: float | None = None             # mean whole-file bpp the run should land on
    # Fraction of the log bpp ratio applied per validation: the bpp answers a move ~750 steps
    # later, so the full step (1.0) overshoots and swings; 0.5 moves half way (docs/training.md).
    val_bpp_gain: float = 1.0
    val_min_thumbnail_psnr: float | None = None     # mean thumbnail PSNR the run must hold
    val_min_thumbnail_worst: float | None = None    # worst image's thumbnail PSNR it must hold
    init_weights: str | None = None  # start a NEW run from these weights (ignored when resuming)
    rate_prefit_steps: int = 200     # warm start: fit the fresh rate model to the loaded encoder first
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    model: ModelConfig = field(default_factory=ModelConfig)


def run_architecture(cfg: TrainConfig) -> ModelConfig:
    """The model a run trains: the config's, with the decoder body's shape of the run's checkpoint
    when resuming, else of --init-weights (a decoder reshaped by `training/reshape.py`)."""
    from ..weights import weights_config

    checkpoint = Path(cfg.run_dir) / "last.pt"
    if checkpoint.exists():  # read whole here and again by resume(): 40 MB, once per start
        source = load_checkpoint(checkpoint).get("model_config", {})
    elif cfg.init_weights and Path(cfg.init_weights).suffix == ".safetensors":
        source = weights_config(cfg.init_weights)
    else:
        source = {}
    shape = {k: source[k] for k in DECODER_BODY_SHAPE if k in source}
    return ModelConfig(**{**asdict(cfg.model), **shape, "scale": cfg.scale})


class Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda":
            # TF32 would perturb the DCT (see model/precision.py); speed comes from bf16 autocast.
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(cfg.seed)
        self.model = HyperThumbnail(run_architecture(cfg)).to(self.device)
        self.ema = HyperThumbnail(self.model.config).to(self.device).eval()
        self.ema.load_state_dict(self.model.state_dict())
        self.amp_dtype = autocast_dtype(self.device, cfg.amp)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.objective = RateDistortionObjective(cfg.objective).to(self.device)
        # The rate model learns the coefficients' density from its own loss (bits of detached
        # symbols), so its fit does not depend on the rate multiplier (as CompressAI's aux loss).
        rate_params = set(self.model.rate_model.parameters())
        self.opt = torch.optim.Adam([p for p in self.model.parameters() if p not in rate_params], lr=cfg.lr)
        self.rate_opt = torch.optim.Adam(self.model.rate_model.parameters(), lr=cfg.rate_model_lr)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.skipped = 0
        self.loss_ema: float | None = None
        self.best_score = -math.inf
        self.calibrated = False
        self.elapsed = 0.0  # training seconds across resumes
        self.run_dir = Path(cfg.run_dir)
        self.ckpt_path = self.run_dir / "last.pt"
        self.best_path = self.run_dir / "best.pt"
        self.log_path = self.run_dir / "log.csv"
        self.val_path = self.run_dir / "val.csv"

    # --- schedule -------------------------------------------------------------------------
    def progress(self) -> float:
        p = self.step / self.cfg.steps
        if self.cfg.max_minutes:
            p = max(p, self.elapsed / (60 * self.cfg.max_minutes))
        return min(p, 1.0)

    def lr_now(self) -> float:
        cfg = self.cfg
        warm = min(1.0, (self.step + 1) / cfg.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * self.progress()))
        return warm * (cfg.min_lr + (cfg.lr - cfg.min_lr) * cosine)

    def crop_now(self) -> int:
        cfg = self.cfg
        if cfg.warmup_crop and self.progress() < cfg.warmup_crop_frac:
            return cfg.warmup_crop
        return cfg.crop

    # --- state ----------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "model": self.model.state_dict(), "ema": self.ema.state_dict(),
            "optimizer": self.opt.state_dict(), "rate_optimizer": self.rate_opt.state_dict(),
            "objective": self.objective.state_dict(),
            "step": self.step, "elapsed": self.elapsed, "best_score": self.best_score,
            "rng_torch": torch.get_rng_state(), "rng_sampler": self.generator.get_state(),
            "rng_cuda": torch.cuda.get_rng_state() if self.device.type == "cuda" else torch.empty(0, dtype=torch.uint8),
            "model_config": self.model.config.to_dict(), "objective_config": asdict(self.cfg.objective),
            "train_config": {k: v for k, v in asdict(self.cfg).items() if not isinstance(v, dict)},
        }

    def resume(self, path: Path | None = None) -> bool:
        path = path or self.ckpt_path
        if not path.exists():
            return False
        s = load_checkpoint(path, map_location=self.device)
        self.model.load_state_dict(s["model"])
        self.ema.load_state_dict(s["ema"])
        self.opt.load_state_dict(s["optimizer"])
        self.rate_opt.load_state_dict(s["rate_optimizer"])
        self._load_objective(s)
        self.step, self.elapsed = int(s["step"]), float(s["elapsed"])
        self.best_score = float(s.get("best_score", -math.inf))
        self.calibrated = True
        torch.set_rng_state(s["rng_torch"].cpu())
        self.generator.set_state(s["rng_sampler"].cpu())
        if self.device.type == "cuda" and s["rng_cuda"].numel():
            torch.cuda.set_rng_state(s["rng_cuda"].cpu())
        return True

    def _load_objective(self, s: dict) -> None:
        """Multipliers, calibration and steered targets from a checkpoint; a target given anew on
        the command line (differing from the one the checkpoint was started with) wins."""
        saved = s["objective"]
        missing = self.objective.load_state_dict(saved, strict=False).missing_keys
        started = s.get("objective_config", {})
        for name in ("target_bpp", "min_thumbnail_psnr"):
            value = getattr(self.cfg.objective, name)
            if name in missing or started.get(name, value) != value:
                getattr(self.objective, name).fill_(value)

    def _init_from(self, weights: str) -> None:
        """Warm start (e.g. from the shipped fp16 weights on a fresh machine): model and EMA only;
        the rate model, optimizers and multipliers start fresh.

        Weights of the other scale work too: every tensor whose name and shape match is loaded
        (for 4x -> 2x all but the encoder's first conv and the decoder's last one). In a module
        loaded only in part, the zero-initialised output layers stay zero, so the 2x encoder still
        starts as the bicubic thumbnail and the decoder as bicubic upscaling.
        """
        from ..weights import load_model

        source = {k: v for k, v in load_model(weights).state_dict().items() if not k.startswith("rate_model.")}
        target = self.model.state_dict()
        fresh = [k for k in target if not k.startswith("rate_model.") and
                 (k not in source or source[k].shape != target[k].shape)]
        partial = {k.split(".")[0] for k in fresh}
        keep_zero = [k for k, v in target.items() if k.split(".")[0] in partial and k not in fresh
                     and v.is_floating_point() and v.numel() > 1 and not v.any()]
        loaded = {k: v for k, v in source.items() if k in target and k not in fresh and k not in keep_zero}
        self.model.load_state_dict(loaded, strict=False)
        self.ema.load_state_dict({k: v.contiguous() for k, v in self.model.state_dict().items()})
        note = f"; kept fresh: {', '.join(fresh + keep_zero)}" if fresh else ""
        print(f"initialised {len(loaded)} of {len(target) - len(self.model.rate_model.state_dict())} "
              f"tensors from {weights}{note}")

    def _prefit_rate_model(self, bank: ImageBank, steps: int) -> None:
        """Shipped weights carry no rate model, so a warm start begins with a random density that
        misjudges the bits (its calibration against real bytes then lags for hundreds of steps and
        the bitrate swings: 0.33 bpp on Kodak after 600 steps of an A/B arm). Fit the density to
        the loaded encoder's coefficients first (encoder forward only; at 10x the rate model's
        learning rate the real/proxy ratio settles within ~150 steps, at 1x it was still at 0.54
        after 600), then calibrate it."""
        from ..model.dct import image_to_coefficients
        from ..model.qpm import expand_tables

        cfg = self.cfg
        autocast = torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16,
                                  enabled=self.amp_dtype is not None)
        for g in self.rate_opt.param_groups:
            g["lr"] = 10 * cfg.rate_model_lr
        for _ in tqdm(range(steps), desc="fitting the rate model", leave=False):
            hr = bank.sample(cfg.batch, self.crop_now(), self.generator)
            with torch.no_grad(), autocast:
                coef = image_to_coefficients(self.model.encoder(hr))
                scaled = coef / expand_tables(self.model.qpm(coef))
            symbols = scaled + torch.empty_like(scaled).uniform_(-0.5, 0.5)
            self.rate_opt.zero_grad(set_to_none=True)
            (self.model.rate_model.bits(symbols).sum() / (hr.numel() / 3)).backward()
            self.rate_opt.step()
        for g in self.rate_opt.param_groups:
            g["lr"] = cfg.rate_model_lr
        with torch.no_grad(), autocast:
            out = self.model(bank.sample(cfg.batch, self.crop_now(), self.generator))
        ratio = self.calibrate(out)["calib_ratio"]
        print(f"fitted the rate model for {steps} steps; real/proxy bits {ratio:.3f}")

    def prepare(self, resumed: bool) -> ImageBank:
        """The training data in memory (and, on a warm start, the rate model fitted to it)."""
        cfg = self.cfg
        bank = ImageBank(cfg.data, self.device, min_side=max(cfg.crop, cfg.warmup_crop or 0))
        if not resumed and cfg.init_weights and cfg.rate_prefit_steps:
            self._prefit_rate_model(bank, cfg.rate_prefit_steps)
        return bank

    def save(self) -> None:
        save_checkpoint(self.ckpt_path, self.state())

    # --- loop -----------------------------------------------------------------------------
    def train_step(self, bank: ImageBank) -> dict[str, float]:
        cfg = self.cfg
        hr = bank.sample(cfg.batch, self.crop_now(), self.generator)
        if cfg.channels_last:
            hr = hr.contiguous(memory_format=torch.channels_last)
        for g in self.opt.param_groups:
            g["lr"] = self.lr_now()
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None):
            out = self.model(hr)
        loss, stats = self.objective(out, hr)
        extra = self.extra_loss()
        if extra is not None:
            stats["extra_loss"] = extra.item()
            loss = loss + extra
            stats["loss"] = loss.item()
        if self._is_spike(loss.item()):
            # One bad batch at a high learning rate once wrecked a run; skip such steps.
            self.skipped += 1
            return {**stats, "skipped": 1.0, "lr": self.lr_now()}
        self.objective.dual_step(stats)
        self.opt.zero_grad(set_to_none=True)
        self.rate_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.opt.param_groups[0]["params"], cfg.grad_clip)
        self.opt.step()
        self.rate_opt.zero_grad(set_to_none=True)
        density_bpp = self.model.rate_model.bits(out["symbols"].detach()).sum() / (hr.numel() / 3)
        density_bpp.backward()
        self.rate_opt.step()
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), self.model.parameters()):
                e.lerp_(p, 1 - cfg.ema_decay)
        if self.step % cfg.calib_every == 0:
            stats.update(self.calibrate(out))
        stats["lr"] = self.lr_now()
        return stats

    def extra_loss(self) -> torch.Tensor | None:
        """A term added to every step's loss by a subclass (older encoders' thumbnails); none here."""
        return None

    def _is_spike(self, loss: float) -> bool:
        if not math.isfinite(loss):
            return True
        if self.loss_ema is None or self.step < self.cfg.warmup_steps:
            self.loss_ema = loss if self.loss_ema is None else 0.98 * self.loss_ema + 0.02 * loss
            return False
        if loss > 4.0 * self.loss_ema:
            return True
        self.loss_ema = 0.98 * self.loss_ema + 0.02 * loss
        return False

    @torch.no_grad()
    def calibrate(self, out: dict[str, torch.Tensor]) -> dict[str, float]:
        """Update the real-bytes / proxy ratio from this batch's actual Huffman-coded scans."""
        real = real_scan_bits(out["q"], out["tables"], self.cfg.scale).sum()
        proxy = float(out["bits"].sum())
        ratio = real / max(proxy, 1.0)
        cal = self.objective.rate_calibration
        if not self.calibrated:
            cal.fill_(ratio)  # first measurement: trust it fully
            self.calibrated = True
        else:
            cal.mul_(0.8).add_(0.2 * ratio)
        return {"calib_ratio": ratio}

    def validate(self) -> dict[str, float] | None:
        if not self.cfg.val_data:
            return None
        from ..evaluation import evaluate_folder

        return evaluate_folder(self.ema, self.cfg.val_data, self.device, self.cfg.val_limit)

    def run(self) -> None:
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        resumed = self.resume()
        if not resumed and cfg.init_weights:
            self._init_from(cfg.init_weights)
        bank = self.prepare(resumed)
        fields = ["step", "elapsed_s", "lr", "crop", "loss", "l1", "hr_psnr", "thumb_psnr", "thumb_worst", "bpp_est",
                  "w_rate", "w_guide", "target_bpp", "thumb_floor", "calib_ratio", "rate_calibration", "skipped",
                  "extra_loss"]
        log_new = not self.log_path.exists()
        logf = open(self.log_path, "a", newline="")
        log = csv.DictWriter(logf, fieldnames=fields, extrasaction="ignore")
        if log_new:
            log.writeheader()
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", dynamic_ncols=True)
        if resumed:
            bar.write(f"resumed from {self.ckpt_path} at step {self.step} ({self.elapsed / 60:.1f} min trained)")
        bar.write(f"precision: {'bf16 autocast' if self.amp_dtype else 'float32'}"
                  f"{' (bf16 requested, not native here)' if cfg.amp and not self.amp_dtype else ''}, "
                  f"{'channels-last' if cfg.channels_last else 'NCHW'}, {torch.get_num_threads()} thread(s)")
        last_ckpt = time.monotonic()
        t0 = time.monotonic() - self.elapsed
        acc: dict[str, list[float]] = {}
        try:
            while self.step < cfg.steps and (not cfg.max_minutes or self.elapsed < 60 * cfg.max_minutes):
                stats = self.train_step(bank)
                self.step += 1
                self.elapsed = time.monotonic() - t0
                for k, v in stats.items():
                    acc.setdefault(k, []).append(v)
                if self.step % cfg.log_every == 0:
                    row = {k: float(np.mean(v)) for k, v in acc.items()}
                    row.update(step=self.step, elapsed_s=round(self.elapsed, 1), crop=self.crop_now(),
                               rate_calibration=float(self.objective.rate_calibration))
                    log.writerow(row)
                    logf.flush()
                    shown = {"loss": ".4f", "hr_psnr": ".2f", "thumb_psnr": ".1f", "bpp_est": ".3f"}
                    bar.set_postfix({k: format(row[k], f) for k, f in shown.items() if k in row})
                    acc = {}
                bar.update(1)
                if self.step % cfg.val_every == 0:
                    self._log_validation(bar)
                due = cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0
                if due or time.monotonic() - last_ckpt > 60 * cfg.checkpoint_minutes:
                    self.save()
                    last_ckpt = time.monotonic()
        finally:
            self.save()
            logf.close()
            bar.close()
        self._log_validation(None)

    def _log_validation(self, bar: tqdm | None) -> None:
        val = self.validate()
        if val is None:
            return
        new = not self.val_path.exists()
        with open(self.val_path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["step", "elapsed_s", *val])
            if new:
                w.writeheader()
            w.writerow({"step": self.step, "elapsed_s": round(self.elapsed, 1), **val})
        # best.pt: highest HR PSNR among validations that meet the product's constraints
        # (Kodak, the declared validation set, is the only set used to pick a checkpoint).
        cfg = self.cfg
        max_bpp = cfg.select_max_bpp or (cfg.val_target_bpp or cfg.objective.target_bpp) * 16 / 15
        ok = val["bpp"] <= max_bpp and val["lr_psnr"] >= cfg.select_min_thumbnail_psnr
        if cfg.select_min_thumbnail_worst is not None:
            ok = ok and val["lr_psnr_worst"] >= cfg.select_min_thumbnail_worst
        if ok and val["psnr"] > self.best_score:
            self.best_score = val["psnr"]
            save_checkpoint(self.best_path, self.state())
        if cfg.keep_validated:  # what `release export --fit-bpp` can still bring under the bpp bar
            ema = self.ema.state_dict()
            save_checkpoint(self.run_dir / "validated" / f"step_{self.step:06d}.pt",
                            {"model_config": self.model.config.to_dict(), "ema": ema, "model": ema, "step": self.step,
                             "validation": val})
        steer = self._steer_targets(val) if bar is not None else ""
        msg = (f"step {self.step}: val bpp {val['bpp']:.4f}  HR {val['psnr']:.2f} dB  thumb {val['lr_psnr']:.2f} dB "
               f"(worst {val['lr_psnr_worst']:.2f}){steer}")
        (bar.write if bar else print)(msg)

    @torch.no_grad()
    def _steer_targets(self, val: dict[str, float]) -> str:
        """Move the training bpp target and thumbnail floor so that real validation files land on
        the product's numbers: training crops carry more bits per pixel than whole photos, and a
        crop's thumbnail PSNR is not a photo's, so the offsets are measured, not guessed."""
        cfg, obj = self.cfg, self.objective
        notes = []
        if cfg.val_target_bpp:
            ratio = min(max((cfg.val_target_bpp / val["bpp"]) ** cfg.val_bpp_gain, 0.9), 1.1)  # <= 10% a time
            obj.target_bpp.mul_(ratio)
            notes.append(f"train target {float(obj.target_bpp):.4f} bpp")
        gaps = []
        if cfg.val_min_thumbnail_psnr is not None:
            gaps.append(cfg.val_min_thumbnail_psnr - val["lr_psnr"])
        if cfg.val_min_thumbnail_worst is not None:
            gaps.append(cfg.val_min_thumbnail_worst - val["lr_psnr_worst"])
        if gaps:
            # The most violated of the two sets the move; half the gap, at most 1 dB per validation.
            obj.min_thumbnail_psnr.add_(min(max(0.5 * max(gaps), -1.0), 1.0))
            notes.append(f"thumbnail floor {float(obj.min_thumbnail_psnr):.2f} dB")
        return f"  -> {', '.join(notes)}" if notes else ""
