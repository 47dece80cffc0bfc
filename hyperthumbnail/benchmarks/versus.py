"""`hyperthumbnail bench versus REV PHOTO`: this checkout's CLI against a git revision's, side by side.

REV is checked out into a temporary git worktree and run by this checkout's interpreter (same
venv, same packages: only the project's code differs). PHOTO is encoded once by REV's CLI (so
both versions can read the thumbnail); then `hyperthumbnail decode` of that thumbnail runs from
the two checkouts in turn, `--rounds` times, each in a fresh process and timed as a user sees it
(wall clock from the command's start to its file written, `cli_runtimes.run_cli`), after one
untimed round that fills both versions' graph caches. The two rebuilt photos are compared (PSNR
between them). Writes versus.json and versus.png.

    git show c31f025:hyperthumbnail/weights/hyperthumbnail_x4.safetensors > build/v3_x4.safetensors
    hyperthumbnail bench versus c92aa8b ../shared/datasets/highres/Kleiber_by_Lukas_Baubkus.jpg \\
        --weights build/v3_x4.safetensors --out benchmarks/results
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ..codec.images import load_image
from ..metrics import psnr
from ..weights import file_sha256
from .cli_runtimes import run_cli
from .machine import machine_info, utc_now

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = ("base", "this")


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    if done.returncode:  # e.g. an unknown revision: git's own words, on one line
        raise ValueError(f"git {' '.join(args)}: {done.stderr.strip().splitlines()[0] if done.stderr.strip() else 'failed'}")
    return done.stdout.strip()


@contextmanager
def worktree(revision: str):
    """REV checked out (detached) in a temporary folder, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="hyperthumbnail-versus-") as tmp:
        path = Path(tmp) / "checkout"
        _git("worktree", "add", "--detach", str(path), revision)
        try:
            yield path
        finally:
            _git("worktree", "remove", "--force", str(path))


def checkout_env(checkout: Path | None) -> dict[str, str] | None:
    """The environment that makes the `hyperthumbnail` command import `checkout`'s package (None: this one's)."""
    if checkout is None:
        return None
    env = dict(os.environ, PYTHONPATH=str(checkout))
    # -P: no script folder or cwd on sys.path, as the `hyperthumbnail` console script runs
    imported = subprocess.run([sys.executable, "-P", "-c", "import hyperthumbnail; print(hyperthumbnail.__file__)"],
                              env=env, capture_output=True, text=True, check=True).stdout.strip()
    if not Path(imported).resolve().is_relative_to(checkout.resolve()):  # e.g. an editable install's finder
        raise ValueError(f"PYTHONPATH={checkout} still imports {imported}: cannot run the other revision")
    return env


def run(args: argparse.Namespace) -> int:
    if args.rounds < 1:
        raise ValueError("--rounds must be at least 1")
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    weights = [] if args.weights is None else ["--weights", str(Path(args.weights).resolve())]
    dirty = " (+ uncommitted changes)" if _git("status", "--porcelain", "--untracked-files=no") else ""
    record: dict = {"meta": {
        "created": utc_now(), "command": shlex.join(["hyperthumbnail", *sys.argv[1:]]), "machine": machine_info(),
        "photo": Path(args.photo).name, "weights": None if args.weights is None else Path(args.weights).name,
        "weights_sha256": None if args.weights is None else file_sha256(Path(args.weights)),
        "revisions": {"base": _git("rev-parse", args.revision), "this": _git("rev-parse", "HEAD") + dirty},
    }, "runs": []}
    with worktree(args.revision) as base:
        envs = {"base": checkout_env(base), "this": None}
        thumbnail = work / "thumbnail.jpg"
        run_cli(["encode", str(Path(args.photo).resolve()), "-o", str(thumbnail), *weights], env=envs["base"])
        outputs = {v: work / f"{v}.png" for v in VERSIONS}
        for round_ in range(args.rounds + 1):  # round 0: untimed, fills each version's graph cache
            for version in VERSIONS:
                result = run_cli(["decode", str(thumbnail), "-o", str(outputs[version]), *weights], env=envs[version])
                if round_:
                    record["runs"].append({"round": round_, "version": version, **result})
                    print(json.dumps(record["runs"][-1]), flush=True)
    wall = {v: [r["wall_s"] for r in record["runs"] if r["version"] == v] for v in VERSIONS}
    record["median_wall_s"] = {v: round(statistics.median(t), 2) for v, t in wall.items()}
    record["speedup_per_round"] = [round(b / t, 3) for b, t in zip(wall["base"], wall["this"])]
    record["speedup_median"] = round(record["median_wall_s"]["base"] / record["median_wall_s"]["this"], 3)
    images = [load_image(outputs[v], max_pixels=None) for v in VERSIONS]
    record["size"] = list(images[0].shape[1::-1])
    between = psnr(*images)
    record["psnr_between_outputs_db"] = None if math.isinf(between) else round(between, 2)  # None: identical
    record["meta"]["load_average_after"] = machine_info()["load_average_1_5_15"]
    print(json.dumps({k: record[k] for k in ("median_wall_s", "speedup_per_round", "speedup_median",
                                             "psnr_between_outputs_db")}), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "versus.json").write_text(json.dumps(record, indent=1) + "\n")
    _plot(record, out / "versus.png")
    return 0


def _plot(record: dict, path: Path) -> None:
    from .plots import plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    revisions = record["meta"]["revisions"]
    labels = {"base": f"base {revisions['base'][:7]}", "this": f"this {revisions['this'][:7]}"}
    for i, version in enumerate(VERSIONS):
        times = [r["wall_s"] for r in record["runs"] if r["version"] == version]
        ax.barh(i, statistics.median(times), color=("tab:gray", "tab:red")[i], alpha=0.7)
        ax.scatter(times, [i] * len(times), color="black", s=14, zorder=3)
        ax.text(max(times), i, f"  median {statistics.median(times):.2f} s", va="center")
    ax.set_yticks(range(len(VERSIONS)), [labels[v] for v in VERSIONS])
    ax.set_xlabel("hyperthumbnail decode, wall clock (s); dots: each round")
    width, height = record["size"]
    apart = "identical" if record["psnr_between_outputs_db"] is None else f"{record['psnr_between_outputs_db']} dB apart"
    ax.set_title(f"{width}x{height}: {record['speedup_median']}x faster, outputs {apart}", fontsize=10)
    ax.set_xlim(0, max(r["wall_s"] for r in record["runs"]) * 1.4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
