"""soak.png: the serving tree's memory and every request's latency over the run, faults marked."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

GIB = 2**30
FAULT_COLORS = {"kill_replica": "tab:red", "disconnects": "tab:orange", "malformed_burst": "tab:purple"}


def plot_soak(record: dict, path: Path) -> None:
    fig, (mem, lat) = plt.subplots(2, 1, figsize=(14, 7.5), sharex=True)
    minutes = lambda series: [t / 60 for t, _ in series]  # noqa: E731
    if record["memory_samples"]:
        mem.plot(minutes(record["memory_samples"]), [v / GIB for _, v in record["memory_samples"]],
                 label="server tree PSS (all replicas), most in each sample's interval", color="black")
        mem.plot(minutes(record["rss_samples"]), [v / GIB for _, v in record["rss_samples"]],
                 label="server tree RSS (shared pages counted per process)", color="gray", lw=0.8)
        mem.plot(minutes(record["shm_samples"]), [v / GIB for _, v in record["shm_samples"]],
                 label="/dev/shm of the replicas", color="tab:blue", lw=0.8)
        for port in sorted({r[0] for _, rs in record["replica_samples"] for r in rs}):
            series = [(t, r[2]) for t, rs in record["replica_samples"] for r in rs if r[0] == port]
            mem.plot(minutes(series), [v / GIB for _, v in series], lw=0.8, ls="--",
                     label=f"replica on metrics :{port} PSS")
        m = record["memory"]
        if m.get("bound_bytes"):
            mem.axhline(m["bound_bytes"] / GIB, color="tab:green", ls=":", label="acceptance bound (last third)")
        for x in (record["duration_s"] / 3, 2 * record["duration_s"] / 3):
            mem.axvline(x / 60, color="lightgray", lw=0.8)
    mem.set_ylabel("GiB")
    mem.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    mem.grid(alpha=0.3)
    classes = sorted({row[3] for row in record["requests_log"]})
    cmap = plt.get_cmap("viridis", max(2, len(classes)))
    for i, name in enumerate(classes):
        for op, marker in (("encode", "o"), ("decode", "^")):
            rows = [r for r in record["requests_log"] if r[3] == name and r[1] == op and not r[5]]
            lat.scatter([(r[0] + r[4]) / 60 for r in rows], [r[4] for r in rows], s=10, marker=marker,
                        color=cmap(i), label=f"{name} {op}")
    errors = [r for r in record["requests_log"] if r[5]]
    if errors:
        lat.scatter([(r[0] + r[4]) / 60 for r in errors], [r[4] for r in errors], s=40, marker="x", color="red",
                    label="error")
    queue = record.get("queue_seconds_per_request_by_minute")
    if queue is None:  # a record written before the field existed: the same from its samples
        from .soak_probe import queue_by_minute

        queue = queue_by_minute([[t, [[r[0], r[1], r[6], r[7]] for r in rs]] for t, rs in record["replica_samples"]])
    if queue:
        lat.step([(m + 1) for m, _ in queue], [max(v, 1e-3) for _, v in queue], where="pre", color="black",
                 lw=1, label="mean queue time per request (Triton metrics, per minute)")
    lat.set_yscale("log")
    lat.set_ylabel("latency (s, at completion)")
    lat.set_xlabel("minutes")
    lat.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    lat.grid(alpha=0.3)
    for fault in record["faults"]:
        for ax in (mem, lat):
            ax.axvline(fault["t"] / 60, color=FAULT_COLORS.get(fault["fault"], "red"), lw=1.2)
        mem.annotate(fault["fault"], (fault["t"] / 60, mem.get_ylim()[1]), rotation=90, va="top", ha="right",
                     fontsize=7, color=FAULT_COLORS.get(fault["fault"], "red"))
    machine = record["machine"]
    fig.suptitle(f"soak: {record['requests']} requests, {record['errors']} errors, {record['mismatches']} mismatches; "
                 f"{record['replicas']} replicas, concurrency {record['concurrency']}; {machine['cpu_model']}, "
                 f"{machine['logical_cores']} cores (shared)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
