"""What a training step costs, joint vs decoder-only, measured side by side in one process.

    python -m hyperthumbnail.benchmarks.step_cost --cache runs/cache-x4 --out docs/training_logs/v4_step_cost.json

Both trainers start from the same weights with the same batch, crop and thread count; rounds
alternate (joint, decoder-only, joint, ...) so that a neighbour's load falls on both. Wall time
and this process's CPU time per step are recorded (CPU time is the steadier figure on a shared
machine); the first steps of each trainer are discarded (allocations, kernel selection).
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ..training.data import ImageBank
from ..training.decoder_only import DecoderTrainer
from ..training.thumbnail_cache import CachedThumbnailBank
from ..training.train import TrainConfig, Trainer
from ..weights import default_weights_path
from .machine import machine_info, utc_now


def _time_steps(trainer: Trainer, bank, steps: int) -> tuple[list[float], list[float]]:
    wall, cpu = [], []
    for _ in range(steps):
        w0, c0 = time.perf_counter(), time.process_time()
        trainer.train_step(bank)
        trainer.step += 1
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/datasets/train")
    parser.add_argument("--cache", required=True, help="a decoder-only run's thumbnail cache (train --decoder-only)")
    parser.add_argument("--weights", default=str(default_weights_path(4)))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=192)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before the first round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        def config(name: str) -> TrainConfig:
            return TrainConfig(data=args.data, run_dir=f"{tmp}/{name}", val_data=None, batch=args.batch, crop=args.crop,
                               threads=args.threads, init_weights=args.weights, rate_prefit_steps=0, warmup_steps=1)

        joint = Trainer(config("joint"))
        joint._init_from(args.weights)
        decoder = DecoderTrainer(config("decoder"), args.cache, orientations=8)
        decoder._init_from(args.weights)
        banks = {"joint": ImageBank(args.data, min_side=args.crop),
                 "decoder_only": CachedThumbnailBank(args.cache, decoder.model.block, args.crop, torch.device("cpu"))}
        trainers = {"joint": joint, "decoder_only": decoder}
        samples: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in trainers}
        for name, trainer in trainers.items():
            _time_steps(trainer, banks[name], args.warmup)
        for _ in range(args.rounds):
            for name, trainer in trainers.items():
                wall, cpu = _time_steps(trainer, banks[name], args.steps)
                samples[name]["wall"] += wall
                samples[name]["cpu"] += cpu

    result = {name: {"median_wall_s": statistics.median(s["wall"]), "median_cpu_s": statistics.median(s["cpu"]),
                     "steps_per_cpu_hour": 3600 / statistics.median(s["cpu"]), "timed_steps": len(s["wall"])}
              for name, s in samples.items()}
    ratio = result["joint"]["median_cpu_s"] / result["decoder_only"]["median_cpu_s"]
    record = {"meta": {"date": utc_now(), "machine": machine_info(), "weights": Path(args.weights).name,
                       "batch": args.batch, "crop": args.crop, "threads": args.threads, "rounds": args.rounds},
              "result": result, "joint_over_decoder_only_cpu": ratio}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    for name, r in result.items():
        print(f"{name}: {r['median_wall_s']:.3f} s/step wall, {r['median_cpu_s']:.3f} s CPU, "
              f"{r['steps_per_cpu_hour']:.0f} steps per CPU-hour")
    print(f"a joint step costs {ratio:.2f}x a decoder-only step -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
