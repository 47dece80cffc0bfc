"""`hyperthumbnail train`: train (or resume) a model on a folder of images."""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CLIError

if TYPE_CHECKING:
    from ..training.train import TrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train or resume a model (resumes from RUN_DIR/last.pt if present)",
        description="Train HyperThumbnail on a folder of photos. Checkpoints go to RUN_DIR/last.pt "
        "(atomic, every --checkpoint-minutes); the CSV logs are RUN_DIR/log.csv and RUN_DIR/val.csv. "
        "Re-running the same command resumes. Validation uses real .jpg bytes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", default="../shared/datasets/train", help="training images (only train/ may be used)")
    p.add_argument("--val-data", default="../shared/datasets/kodak", help="validation folder ('' to skip)")
    p.add_argument("--val-limit", type=int, default=6, help="validate on the first N images (0 = all)")
    p.add_argument("--run-dir", default="runs/x4", help="checkpoints and logs (git-ignored)")
    p.add_argument("--scale", type=int, choices=(2, 4), default=4)
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--max-minutes", type=float, default=None, help="stop cleanly after this much training time")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--warmup-crop", type=int, default=None,
                   help="another crop size for the first --warmup-crop-frac of training (smaller early, or "
                   "smaller than --crop to make the crops larger late)")
    p.add_argument("--warmup-crop-frac", type=float, default=0.3, help="share of training that uses --warmup-crop")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--min-lr", type=float, default=1e-5, help="end of the cosine schedule")
    p.add_argument("--target-bpp", type=float, default=0.30, help="whole-file bpp the rate multiplier aims at")
    p.add_argument("--min-thumbnail-psnr", type=float, default=32.0,
                   help="thumbnail floor on training crops (dB vs bicubic) the guide multiplier holds")
    p.add_argument("--min-guide-weight", type=float, default=0.0,
                   help="floor on the thumbnail guide multiplier (0: none); it never decays below this")
    p.add_argument("--init-guide-weight", type=float, default=2.0, help="starting thumbnail guide multiplier")
    p.add_argument("--init-rate-weight", type=float, default=0.05,
                   help="starting rate multiplier (a warm start from weights; a resumed run keeps its own). "
                        "With --mse-weight the photo loss is larger, so the multipliers must be too: "
                        "docs/training.md")
    p.add_argument("--guide-power", type=float, default=1.0,
                   help="power mean over a batch's images of their thumbnail MSE (> 1 weights the worst more)")
    p.add_argument("--chroma-weight", type=float, default=0.0,
                   help="extra weight on the thumbnail's Cb/Cr error (colour speckle)")
    p.add_argument("--val-target-bpp", type=float, default=None,
                   help="steer the training bpp target so validation's real files land here")
    p.add_argument("--val-bpp-gain", type=float, default=1.0,
                   help="fraction of the log(target/validation bpp) applied to the training target per "
                        "validation (1: the whole ratio; 0.5 damps the swing of a bpp that answers late)")
    p.add_argument("--val-min-thumbnail-psnr", type=float, default=None,
                   help="steer the training thumbnail floor so validation's mean thumbnail holds this")
    p.add_argument("--val-min-thumbnail-worst", type=float, default=None,
                   help="... and so validation's worst thumbnail holds this")
    p.add_argument("--select-max-bpp", type=float, default=None,
                   help="best.pt: only validations at or below this real-file bpp count (default: target * 16/15)")
    p.add_argument("--select-min-thumbnail-psnr", type=float, default=31.0,
                   help="best.pt: only validations whose mean thumbnail PSNR reaches this count")
    p.add_argument("--select-min-thumbnail-worst", type=float, default=None,
                   help="best.pt: ... and whose worst image's thumbnail reaches this")
    p.add_argument("--keep-validated", action="store_true",
                   help="also keep each validated step's EMA weights as RUN_DIR/validated/step_N.pt (~10 MB each): "
                   "a step over the bpp bar can still ship through `release export --fit-bpp`")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="bf16 autocast for the convolutions where the device runs bf16 natively (CUDA, or a "
                   "CPU with AVX512-BF16/AMX; else float32); DCT, QPM and rate model stay float32")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="channels-last (NHWC) convolutions")
    p.add_argument("--val-every", type=int, default=1000)
    p.add_argument("--checkpoint-minutes", type=float, default=3.0)
    p.add_argument("--init-weights", default=None, metavar="PATH",
                   help="start a new run from these weights (e.g. the shipped ones); ignored when resuming")
    p.add_argument("--rate-prefit-steps", type=int, default=200,
                   help="with --init-weights: fit the fresh rate model to the loaded encoder for N steps first")
    p.add_argument("--decoder-only", action="store_true",
                   help="freeze the encoder and QPM of --init-weights and train the decoder alone on their "
                   "thumbnails of the training photos, made once into --cache-dir (the thumbnail stays exactly theirs)")
    p.add_argument("--cache-dir", default=None,
                   help="where the training thumbnails are cached (--decoder-only; --also-decode's caches go beside it as "
                   "CACHE_DIR-MODELID) (default: RUN_DIR/../cache-xSCALE)")
    p.add_argument("--orientations", type=int, choices=range(1, 9), default=8, metavar="{1..8}",
                   help="orientations of each photo encoded into a cache (rotations x mirror)")
    p.add_argument("--also-decode", action="append", default=[], metavar="WEIGHTS",
                   help="also train the decoder on the thumbnails these older weights' encoder makes (cached in "
                   "CACHE_DIR-MODELID; repeatable), so thumbnails users already store keep decoding: decoder-only runs "
                   "mix them into the crops, joint runs add a half batch of them to every step; validation adds "
                   "psnr_MODELID and the export lists their model ids as served")
    p.add_argument("--mse-weight", type=float, default=0.0,
                   help="loss on the rebuilt photo = L1 + this * MSE (joint and decoder-only runs)")
    p.add_argument("--export-weights", default=None, metavar="PATH",
                   help="after training, write the EMA weights of best.pt (else last.pt) as fp16 safetensors + JSON card")
    p.set_defaults(func=run)


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The run's configuration from the command line."""
    from ..training.objective import ObjectiveConfig
    from ..training.train import TrainConfig

    return TrainConfig(
        data=args.data, run_dir=args.run_dir, val_data=args.val_data or None,
        val_limit=args.val_limit or None, scale=args.scale, steps=args.steps, max_minutes=args.max_minutes,
        batch=args.batch, crop=args.crop, warmup_crop=args.warmup_crop, warmup_crop_frac=args.warmup_crop_frac,
        lr=args.lr, min_lr=args.min_lr, seed=args.seed,
        device=args.device, threads=args.threads, amp=args.amp, channels_last=args.channels_last,
        val_every=args.val_every, checkpoint_minutes=args.checkpoint_minutes, init_weights=args.init_weights,
        rate_prefit_steps=args.rate_prefit_steps, select_max_bpp=args.select_max_bpp,
        select_min_thumbnail_psnr=args.select_min_thumbnail_psnr,
        select_min_thumbnail_worst=args.select_min_thumbnail_worst, keep_validated=args.keep_validated,
        val_target_bpp=args.val_target_bpp,
        val_bpp_gain=args.val_bpp_gain,
        val_min_thumbnail_psnr=args.val_min_thumbnail_psnr, val_min_thumbnail_worst=args.val_min_thumbnail_worst,
        objective=replace(ObjectiveConfig(), target_bpp=args.target_bpp, min_thumbnail_psnr=args.min_thumbnail_psnr,
                          min_guide_weight=args.min_guide_weight, init_guide_weight=args.init_guide_weight,
                          init_rate_weight=args.init_rate_weight, guide_power=args.guide_power,
                          chroma_weight=args.chroma_weight, mse_weight=args.mse_weight),
    )


def run(args: argparse.Namespace) -> int:
    from ..training.train import Trainer

    if args.device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            raise CLIError("--device cuda requested but no CUDA GPU is visible to PyTorch")
    cfg = train_config(args)
    cache = args.cache_dir or str(Path(args.run_dir).parent / f"cache-x{args.scale}")
    if args.decoder_only:
        from ..training.decoder_only import DecoderTrainer
        if not args.init_weights:
            raise CLIError("--decoder-only needs --init-weights (the frozen encoder, e.g. the shipped weights)")
        trainer = DecoderTrainer(cfg, cache, args.orientations, args.also_decode)
    elif args.also_decode:
        from ..training.older_encoders import JointTrainer
        trainer = JointTrainer(cfg, cache, args.orientations, args.also_decode)
    else:
        trainer = Trainer(cfg)
    trainer.run()
    if args.export_weights:
        from ..weights import load_checkpoint_model, save_weights
        best = trainer.best_path if trainer.best_path.exists() else trainer.ckpt_path
        save_weights(load_checkpoint_model(best), Path(args.export_weights), {
            "checkpoint": best.name,
            "steps": trainer.step, "train_minutes": round(trainer.elapsed / 60, 1), "data": args.data,
        }, also_decodes=getattr(trainer, "also_decodes", ()))
        print(f"wrote {args.export_weights}")
    return 0
