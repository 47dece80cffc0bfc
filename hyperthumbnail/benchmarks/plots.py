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


STAGE_COLORS = {"pixels": "tab:gray", "neural": "tab:red", "jpeg coding": "tab:blue",
                "server queue/scheduling": "tab:orange", "network/serialization": "tab:purple"}


def plot_speed(results: dict, rows: list[dict], path: Path) -> None:
    """Encode and decode panels; one stacked bar per path (stage categories), total ms at the end."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for ax, direction in zip(axes, ("encode", "decode")):
        paths = list(dict.fromkeys(r["path"] for r in rows if r["direction"] == direction))
        for y, name in enumerate(paths):
            left = 0.0
            for category, color in STAGE_COLORS.items():
                ms = sum(r["ms"] for r in rows if r["path"] == name and r["direction"] == direction
                         and r["category"] == category)
                if ms > 0:
                    ax.barh(y, ms, left=left, color=color, label=category)
                    left += ms
            total = next(r["ms"] for r in rows if r["path"] == name and r["direction"] == direction
                         and r["stage"] == "total")
            ax.annotate(f" {total:.0f} ms", (left, y), va="center", fontsize=8)
        ax.set_yticks(range(len(paths)), paths)
        ax.invert_yaxis()
        ax.set_xlabel("ms (median total; stacked: per-stage breakdown)")
        ax.set_title(direction)
        ax.grid(axis="x", alpha=0.3)
        ax.margins(x=0.15)
    handles = {h.get_label(): h for ax in axes for h in ax.get_legend_handles_labels()[0]}
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=len(handles), fontsize=8)
    meta = results["meta"]
    fig.suptitle(f"{meta['resolution']} on {meta['machine']['cpu_model']} ({meta['machine']['usable_cores']} cores)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
