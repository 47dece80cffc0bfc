"""PNG plots of the benchmark results (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = {"hyperthumbnail": "tab:red", "bicubic_jpeg": "tab:blue", "bicubic_jpeg_420": "tab:cyan",
          "sr_baseline": "tab:green"}


def _datasets(results: dict) -> list[str]:
    return [d for d in results if d != "meta"]


def _scatter(results: dict, rows: list[dict], metric: str, ylabel: str, title: str, path: Path) -> None:
    """One panel per dataset: every image as a faint dot, the dataset mean as a large marker."""
    datasets = _datasets(results)
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 4), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        for m, vals in results[d].items():
            sel = [r for r in rows if r["dataset"] == d and r["method"] == m]
            color = COLORS.get(m)
            ax.scatter([r["bpp"] for r in sel], [r[metric] for r in sel], s=8, alpha=0.25, color=color)
            ax.scatter([vals["bpp"]], [vals[metric]], s=90, color=color, edgecolor="black", label=m, zorder=3)
        ax.set_title(f"{d} ({len({r['image'] for r in rows if r['dataset'] == d})} images)")
        ax.set_xlabel("bpp (whole .jpg, HR pixels)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bars(results: dict, path: Path) -> None:
    """HR PSNR and thumbnail PSNR per dataset, one bar per method, mean bpp printed on each bar."""
    datasets = _datasets(results)
    methods = list(dict.fromkeys(m for d in datasets for m in results[d]))
    x = np.arange(len(datasets))
    width = 0.8 / max(len(methods), 1)
    fig, axes = plt.subplots(1, 2, figsize=(2 * max(6.0, 1.8 * len(datasets)), 4.5))
    for ax, metric, label in ((axes[0], "psnr", "HR PSNR (dB, RGB)"), (axes[1], "lr_psnr", "thumbnail PSNR vs bicubic (dB)")):
        for i, m in enumerate(methods):
            vals = [results[d].get(m, {}) for d in datasets]
            heights = [v.get(metric, np.nan) for v in vals]
            bars = ax.bar(x + (i - (len(methods) - 1) / 2) * width, heights, width, label=m, color=COLORS.get(m))
            for bar, v in zip(bars, vals):
                if v:
                    ax.annotate(f"{v['bpp']:.2f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                                ha="center", va="bottom", fontsize=6, rotation=90)
        finite = [results[d][m][metric] for d in datasets for m in results[d] if np.isfinite(results[d][m][metric])]
        if finite:
            ax.set_ylim(min(finite) - 3, max(finite) + 2)
        ax.set_xticks(x, datasets)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Mean over each dataset (numbers on bars: mean bpp)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_rd(results: dict, rows: list[dict], out: Path, stem: str = "rd") -> None:
    """{stem}_psnr.png, {stem}_thumbnail.png, {stem}_bars.png in `out`."""
    scale = f" ({results['meta']['scale']}x)" if "meta" in results else ""
    _scatter(results, rows, "psnr", "HR PSNR (dB, RGB)", f"Rate vs HR reconstruction{scale}", out / f"{stem}_psnr.png")
    _scatter(results, rows, "lr_psnr", "thumbnail PSNR vs bicubic (dB)", f"Rate vs thumbnail fidelity{scale}",
             out / f"{stem}_thumbnail.png")
    _bars(results, out / f"{stem}_bars.png")


VARIANT_COLORS = {"onnx": "tab:blue", "openvino-f32": "tab:orange", "openvino": "tab:red",
                  "edsr_baseline": "tab:gray"}
PATH_HATCHES = {"inprocess": "", "triton_http": "//", "triton_grpc": "..", "triton_shm": "xx"}


def plot_speed(results: dict, path: Path) -> None:
    """One panel per direction: per resolution a group of bars (variant x path, log scale), the
    median total printed on each; a black line over each variant's bars marks its compute floor."""
    speed = results["speed"]
    keys = list(speed)
    variants = list(dict.fromkeys(v for per_variant in speed.values() for v in per_variant))
    paths = [p for p in PATH_HATCHES if any(p in speed[k][v] for k in keys for v in speed[k])]
    edsr = results.get("edsr_baseline")
    slots = len(variants) * len(paths) + (1 if edsr else 0)
    width = 0.85 / slots
    fig, axes = plt.subplots(2, 1, figsize=(min(22.0, max(10.0, 0.45 * slots * len(keys))), 9), squeeze=False)
    for ax, direction in zip(axes[:, 0], ("encode", "decode")):
        for g, key in enumerate(keys):
            bars = sum(1 for v in variants for p in paths if speed[key].get(v, {}).get(p, {}).get(direction))
            with_edsr = bool(edsr and direction == "decode" and edsr["resolution"] == key)
            left = g - (bars + with_edsr) * width / 2  # the group centred on its tick
            for v in variants:
                start = left
                for p in paths:
                    r = speed[key].get(v, {}).get(p, {}).get(direction)
                    if not r:
                        continue
                    ax.bar(left + width / 2, r["total_ms"] / 1e3, width, color=VARIANT_COLORS.get(v),
                           hatch=PATH_HATCHES[p], edgecolor="white", linewidth=0.3)
                    ax.annotate(f"{r['total_ms'] / 1e3:.3g}", (left + width / 2, r["total_ms"] / 1e3),
                                ha="center", va="bottom", fontsize=6, rotation=90)
                    left += width
                floor = results["floor_ms"][key].get(v, {}).get(direction)
                if floor:
                    ax.hlines(floor / 1e3, start, left, colors="black", linewidth=1.6)
            if with_edsr:
                total = edsr["decode"]["total_ms"] / 1e3
                ax.bar(left + width / 2, total, width, color=VARIANT_COLORS["edsr_baseline"])
                ax.annotate(f"{total:.3g}", (left + width / 2, total), ha="center", va="bottom", fontsize=6, rotation=90)
        ax.set_yscale("log")
        ax.set_xticks(range(len(keys)), keys)
        ax.set_ylabel("seconds (median total, log scale)")
        ax.set_title(direction)
        ax.grid(axis="y", alpha=0.3, which="both")
        ax.margins(y=0.15)
    handles = [plt.Rectangle((0, 0), 1, 1, color=VARIANT_COLORS.get(v)) for v in variants]
    labels = list(variants)
    handles += [plt.Rectangle((0, 0), 1, 1, facecolor="darkgray", hatch=PATH_HATCHES[p], edgecolor="white")
                for p in paths]
    labels += paths
    if edsr:
        handles.append(plt.Rectangle((0, 0), 1, 1, color=VARIANT_COLORS["edsr_baseline"]))
        labels.append(f"EDSR baseline ({edsr['model']['runtime']})")
    handles.append(plt.Line2D([0], [0], color="black", linewidth=1.6))
    labels.append("compute floor (GMACs / measured peak rate)")
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8)
    meta = results["meta"]
    fig.suptitle(f"encode / decode per resolution, runtime variant and path on {meta['machine']['cpu_model']} "
                 f"({meta['machine']['usable_cores']} cores, load average {meta['machine']['load_average_1_5_15'][0]} "
                 f"at the start; {meta['date'][:10]})", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
