"""Step time and loss-curve parity of the training precisions on this machine.

`python -m hyperthumbnail.training.precision_check --steps 40 --threads 1 --out FILE.json` trains
the full-size model for the same steps from the same warm start and seed in each mode (float32
NCHW, float32 channels-last, bf16 autocast + channels-last) and records the mean step time (after
warm-up steps; wall and process CPU time, which a shared machine's other load does not inflate)
and the per-step losses, so the bf16 curve can be compared with float32's.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .data import ImageBank
from .train import TrainConfig, Trainer

MODES = {"fp32": (False, False), "fp32_channels_last": (False, True), "bf16_channels_last": (True, True)}


def measure(mode: str, data: str, init_weights: str | None, steps: int, warmup: int, threads: int,
            batch: int, crop: int) -> dict:
    amp, channels_last = MODES[mode]
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = TrainConfig(data=data, run_dir=run_dir, val_data=None, steps=steps + warmup, batch=batch, crop=crop,
                          threads=threads, amp=amp, channels_last=channels_last, init_weights=init_weights,
                          warmup_steps=1)
        trainer = Trainer(cfg)
        if init_weights:
            trainer._init_from(init_weights)
        bank = ImageBank(data, trainer.device, min_side=crop)
        losses, times, cpu_times = [], [], []
        for i in range(steps + warmup):
            t, c = time.perf_counter(), time.process_time()
            stats = trainer.train_step(bank)
            trainer.step += 1
            if i >= warmup:
                times.append(time.perf_counter() - t)
                cpu_times.append(time.process_time() - c)
            losses.append(stats["loss"])
            if stats.get("skipped"):
                raise RuntimeError(f"{mode}: step {i} skipped as a loss spike")
    return {"mode": mode, "autocast": str(trainer.amp_dtype), "step_s_mean": float(np.mean(times)),
            "step_s_median": float(np.median(times)),
            "step_cpu_s_mean": float(np.mean(cpu_times)), "timed_steps": len(times), "losses": losses}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/datasets/train")
    p.add_argument("--init-weights", default="hyperthumbnail/weights/hyperthumbnail_x4.safetensors")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    results = [measure(m, args.data, args.init_weights or None, args.steps, args.warmup, args.threads,
                       args.batch, args.crop) for m in args.modes]
    ref = np.asarray(results[0]["losses"])
    for r in results:
        diff = np.asarray(r["losses"]) - ref
        r["loss_mean"] = float(np.mean(r["losses"]))
        r["loss_rel_diff_vs_first"] = float(np.mean(np.abs(diff)) / np.mean(ref))
        print(f"{r['mode']:>20}: {r['step_s_mean']:.3f} s/step (median {r['step_s_median']:.3f}, "
              f"CPU {r['step_cpu_s_mean']:.3f} s), "
              f"mean loss {r['loss_mean']:.5f}, mean |loss diff| vs {results[0]['mode']} "
              f"{100 * r['loss_rel_diff_vs_first']:.2f}%")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                                    "torch": torch.__version__, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
