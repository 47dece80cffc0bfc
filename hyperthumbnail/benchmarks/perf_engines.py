"""Our load generator checked against NVIDIA's perf_analyzer: both engines, one after the other,
against one server, on the same payloads (`hyperthumbnail perf --engine builtin|perf_analyzer`).

Each case (model, resolution, protocol, concurrency, windows) runs under both engines; each run
writes its own `hyperthumbnail perf` JSON + CSV into `<out>/perf_engines/`, and the comparison
goes into `<out>/perf_engines.json`, `.csv` and `.png` (p50 and throughput side by side, with
the p50 ratio perf_analyzer / builtin). Run as `hyperthumbnail bench perf-engines`; without
--url it builds the model repository and starts its own server (free ports).
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..interface import DECODE_MODEL, ENCODE_MODEL
from .machine import machine_info, utc_now

ENGINES = ("builtin", "perf_analyzer")


@dataclass(frozen=True)
class Case:
    model: str  # hyperthumbnail_encode | hyperthumbnail_decode
    resolution: str
    protocol: str
    concurrency: str = "1"
    interval_ms: int = 10_000
    stability_pct: float = 30.0
    max_windows: int = 5
    warmup: int = 1

    @property
    def name(self) -> str:
        direction = self.model.removeprefix("hyperthumbnail_")
        return f"{direction}_{self.resolution}_{self.protocol}_c{self.concurrency.replace(':', '-')}"


# Windows hold several requests: 1080p takes ~0.3-1 s a request and 6K ~3-8 s with the default
# (OpenVINO) repository on 2 idle cores (speed.json), so a window holds 5-30 requests and its
# throughput moves in steps of 3-20 %; perf_analyzer ends a run on a window with no completed
# request, hence 6K's longer windows.
CASES = (
    Case(DECODE_MODEL, "1080p", "http"),
    Case(DECODE_MODEL, "1080p", "grpc"),
    Case(ENCODE_MODEL, "1080p", "http"),
    Case(ENCODE_MODEL, "1080p", "grpc"),
    Case(DECODE_MODEL, "6k", "http", interval_ms=40_000, stability_pct=30, max_windows=4),
    Case(DECODE_MODEL, "6k", "grpc", interval_ms=40_000, stability_pct=30, max_windows=4),
    Case(ENCODE_MODEL, "6k", "http", interval_ms=40_000, stability_pct=30, max_windows=4),
    Case(ENCODE_MODEL, "6k", "grpc", interval_ms=40_000, stability_pct=30, max_windows=4),
)
QUICK = (Case(DECODE_MODEL, "256x192", "http", interval_ms=1000, stability_pct=1000, max_windows=3),)


def run_case(case: Case, engine: str, url: str, folder: Path) -> dict:
    """One `hyperthumbnail perf` run, as its own process (benchmarks sit below the CLI); its JSON report."""
    out = folder / f"{case.name}_{engine}.json"
    out.unlink(missing_ok=True)
    args = ["perf", "--engine", engine, "--url", url, "--protocol", case.protocol, "--model", case.model,
            "--resolution", case.resolution, "--concurrency", case.concurrency,
            "--measurement-interval-ms", str(case.interval_ms), "--stability", f"{case.stability_pct:g}",
            "--max-windows", str(case.max_windows), "--warmup", str(case.warmup), "--output", str(out)]
    started = time.monotonic()
    code = subprocess.run([sys.executable, "-m", "hyperthumbnail", *args]).returncode
    report = json.loads(out.read_text()) if out.is_file() else {"config": {}, "results": []}
    report["exit_code"], report["elapsed_s"] = code, round(time.monotonic() - started, 1)
    report["command"] = "hyperthumbnail " + " ".join(args)
    return report


def compare(case: Case, reports: dict[str, dict]) -> list[dict]:
    """One row per engine and level, with the p50 / throughput ratio of perf_analyzer to builtin."""
    rows = []
    for engine, report in reports.items():
        for r in report["results"]:
            rows.append({"case": case.name, "model": case.model, "resolution": case.resolution,
                         "protocol": case.protocol, "engine": engine,
                         "engine_version": report["config"].get("perf_analyzer_version") or "hyperthumbnail",
                         **{k: r[k] for k in ("concurrency", "throughput", "p50_ms", "p95_ms", "mean_ms", "errors",
                                              "windows", "stable")},
                         "server_request_ms": (r.get("server") or {}).get("model", {}).get("request_ms"),
                         "elapsed_s": report["elapsed_s"], "exit_code": report["exit_code"]})
    by_level: dict[int, dict[str, dict]] = {}
    for row in rows:
        by_level.setdefault(row["concurrency"], {})[row["engine"]] = row
    for pair in by_level.values():
        if len(pair) == 2:
            ours, theirs = pair["builtin"], pair["perf_analyzer"]
            for key in ("p50_ms", "throughput"):
                ratio = theirs[key] / ours[key] if ours[key] and math.isfinite(ours[key]) else math.nan
                for row in pair.values():
                    row[f"{key.split('_')[0]}_ratio_pa_over_builtin"] = round(ratio, 3)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cases = list(dict.fromkeys(f"{r['case']}" for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.6 * len(cases) * 2), 4.8))
    x = np.arange(len(cases))
    for ax, key, label in ((axes[0], "p50_ms", "p50 latency (ms, client side)"),
                           (axes[1], "throughput", "throughput (inferences/s)")):
        for i, engine in enumerate(ENGINES):
            values = [next((r[key] for r in rows if r["case"] == c and r["engine"] == engine), np.nan) for c in cases]
            bars = ax.bar(x + (i - 0.5) * 0.38, values, 0.38, label=engine,
                          color="tab:blue" if engine == "builtin" else "tab:orange")
            for bar, c in zip(bars, cases):
                row = next((r for r in rows if r["case"] == c and r["engine"] == engine), None)
                if row is None:
                    continue
                middle = bar.get_x() + bar.get_width() / 2
                if key == "p50_ms" and row["server_request_ms"]:  # where the time went: the server's mean
                    ax.plot([middle], [row["server_request_ms"]], marker="_", markersize=14, color="black",
                            label="server request (mean)" if i == 0 and c == cases[0] else None)
                if not row["stable"]:  # perf_analyzer reports no p50 for an unstable level
                    note = "unstable" if math.isfinite(bar.get_height()) else "unstable:\nno value"
                    ax.annotate(note, (middle, 0.02), xycoords=("data", "axes fraction"), ha="center",
                                va="bottom", fontsize=6)
        if key == "p50_ms":
            for j, c in enumerate(cases):
                ratio = next((r.get("p50_ratio_pa_over_builtin") for r in rows if r["case"] == c), None)
                if ratio is not None and math.isfinite(ratio):
                    top = max((r["p50_ms"] for r in rows if r["case"] == c and math.isfinite(r["p50_ms"])), default=1)
                    ax.annotate(f"x{ratio:.2f}", (j, top * 1.08), ha="center", fontsize=7)
        ax.set_xticks(x, cases, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    fig.suptitle("hyperthumbnail perf: builtin engine vs NVIDIA perf_analyzer, same server, one after the other "
                 "(xN: p50 of perf_analyzer / builtin)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(results: dict, out: Path) -> None:
    import csv

    out.mkdir(parents=True, exist_ok=True)
    (out / "perf_engines.json").write_text(json.dumps(results, indent=2) + "\n")
    rows = results["rows"]
    with (out / "perf_engines.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
        writer.writeheader()
        writer.writerows(rows)
    if rows:
        plot(rows, out / "perf_engines.png")


def run_cases(cases: tuple[Case, ...], out: Path, url: str | None = None, grpc_url: str | None = None,
              keep_others: bool = False) -> dict:
    """Run `cases`; with keep_others, the other cases already in <out>/perf_engines.json stay in it."""
    server = None
    if url is None:
        from ..serving.repository import build_repository
        from ..serving.server_process import TritonServer, free_port

        repo = build_repository(Path(tempfile.mkdtemp(prefix="perf-engines-")) / "model_repository")
        server = TritonServer(repo, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())
        server.start(timeout=300)
        url, grpc_url = server.http_url, server.grpc_url
    folder = out / "perf_engines"
    folder.mkdir(parents=True, exist_ok=True)
    results: dict = {"meta": {"machine": machine_info(), "started": utc_now(), "http_url": url, "grpc_url": grpc_url},
                     "cases": {}, "rows": []}
    previous = out / "perf_engines.json"
    if keep_others and previous.is_file():
        old = json.loads(previous.read_text())
        rerun = {case.name for case in cases}
        results["cases"] = {name: c for name, c in old["cases"].items() if name not in rerun}
        results["rows"] = [row for row in old["rows"] if row["case"] not in rerun]
        results["meta"]["earlier_runs"] = old["meta"].get("earlier_runs", []) + [
            {k: old["meta"].get(k) for k in ("started", "finished", "machine")}]
    try:
        for case in cases:
            reports = {engine: run_case(case, engine, url if case.protocol == "http" else grpc_url, folder)
                       for engine in ENGINES}
            results["cases"][case.name] = {e: {k: r[k] for k in ("command", "exit_code", "elapsed_s")}
                                           for e, r in reports.items()}
            results["rows"] += compare(case, reports)
            write_outputs(results, out)  # keep what is done if a later case is interrupted
    finally:
        if server is not None:
            server.stop()
    results["meta"]["finished"] = utc_now()
    write_outputs(results, out)
    return results


def run(args) -> int:
    """`hyperthumbnail bench perf-engines` (options in cli/bench.py)."""
    if (args.url is None) != (args.grpc_url is None):
        raise ValueError("--url and --grpc-url go together")
    cases = QUICK if args.quick else CASES
    if args.cases:
        unknown = sorted(set(args.cases) - {c.name for c in cases})
        if unknown:
            raise ValueError(f"unknown cases {unknown}; known: {[c.name for c in cases]}")
        cases = tuple(c for c in cases if c.name in args.cases)
    overrides = {k: v for k, v in (("interval_ms", args.interval_ms), ("max_windows", args.max_windows)) if v}
    cases = tuple(replace(c, **overrides) for c in cases)
    results = run_cases(cases, Path(args.out), args.url, args.grpc_url, keep_others=bool(args.cases))
    for row in results["rows"]:
        print(f"{row['case']:<28} {row['engine']:<14} p50 {row['p50_ms']:>9.0f} ms  {row['throughput']:.3f}/s  "
              f"errors {row['errors']}  stable {row['stable']}")
    print(f"wrote {Path(args.out) / 'perf_engines.json'} (+ .csv, .png, perf_engines/)")
    return 0
