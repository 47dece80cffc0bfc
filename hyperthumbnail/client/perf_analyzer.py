"""NVIDIA's real perf_analyzer as a second engine for `hyperthumbnail perf`.

Builds the perf_analyzer command from the same settings as our own load generator
(`hyperthumbnail.client.perf`), runs it once per concurrency level, and parses its CSV (`-f`,
`--verbose-csv`) and its verbose report (`-v`: the per-window "Pass" lines and the per-step
server statistics) into the same `LevelResult` our engine returns.

What differs from our engine, and why (perf_analyzer 2.48, concurrency mode, time windows):
* a window counts the requests that *completed* in it, as ours does, but its length is fixed:
  a window in which nothing completed ends the run ("No valid requests recorded within time
  interval"; ours extends such a window until a request completes), so its windows must be
  longer than one request;
* no warm-up: the first window starts with the first requests;
* the first failed request stops the worker thread that sent it and the whole run (exit 99,
  "Thread [i] had error: ..."), so `errors` counts failing threads, not all failed requests;
* a level that does not stabilise within `--max-trials` windows ends the run (exit 2) without a
  CSV row and prints only each window's throughput and p95. Such a level is then measured once
  more for a fixed count of requests (`--request-count`: as many as its last 3 windows held, no
  stability rule), and reported with those latencies, `stable: false` and a `note` saying so: a
  busy machine gives numbers marked unstable, never NaN.
"""
from __future__ import annotations

import csv
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from .perf import LevelResult, PerfSettings

__all__ = ["ENGINE", "PerfAnalyzerError", "PerfAnalyzerJob", "find_binary", "binary_version", "run_levels"]

ENGINE = "perf_analyzer"
EXIT_UNSTABLE = 2  # "Failed to obtain stable measurement"
EXIT_FAILED = 99  # a failed request ("Thread [i] had error: ...") or a failed set-up

_VERSION = re.compile(r"Perf Analyzer Version (\S+)")
_PASS = re.compile(r"Pass \[(\d+)\] throughput: ([\d.eE+-]+) infer/sec\. p\d+ latency: (\d+) usec")
_THREAD_ERROR = re.compile(r"Thread \[\d+\] had error: (.*)")
_CLIENT_AVG = re.compile(r"Avg (?:HTTP|gRPC) time: (\d+) usec")
_STEP = re.compile(r"^\s{2}(\S+), version: \S+$")
_COUNT = re.compile(r"^\s+(Inference|Execution|Successful request) count: (\d+)$")
_REQUEST = re.compile(r"Avg request latency: (\d+) usec \((.*)\)")
_PART = re.compile(r"([a-z ]+?) (\d+) usec")


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer is missing, or a run failed for a reason other than a failed request."""


def find_binary() -> Path | None:
    """The venv's perf_analyzer (`make setup` installs it beside our Python), else one on the PATH."""
    beside = Path(sys.executable).parent / "perf_analyzer"
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("perf_analyzer")
    return Path(found) if found else None


def binary_version(binary: Path) -> str:
    """'2.48.0' (perf_analyzer prints its version on stderr)."""
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PerfAnalyzerError(f"{binary} --version failed: {exc}") from exc
    match = _VERSION.search(out.stdout + out.stderr)
    if out.returncode != 0 or not match:
        raise PerfAnalyzerError(f"{binary} --version failed (exit {out.returncode}): "
                                f"{(out.stderr or out.stdout).strip()[-500:]}")
    return match.group(1)


@dataclass
class PerfAnalyzerJob:
    """One model + input under load; the windows/stability settings are our engine's PerfSettings."""

    binary: Path
    model: str
    url: str  # HOST:PORT
    protocol: str  # http | grpc
    input_data: Path  # perf_analyzer --input-data JSON (perf_inputs.write_input_data)
    settings: PerfSettings
    percentile: int = 95  # stability and reporting percentile, as our engine's p95 rule
    shm: bool = False  # --shared-memory system
    output_shm_bytes: int | None = None  # per output tensor; needed for variable-size outputs
    headers: list[str] = field(default_factory=list)  # "Name:Value", HTTP only (perf_analyzer -H)

    def command(self, concurrency: int, csv_path: Path, request_count: int | None = None) -> list[str]:
        """Time windows until stable; with `request_count`, one measurement of that many requests."""
        cmd = [str(self.binary), "-m", self.model, "-u", self.url, "-i", self.protocol,
               "--input-data", str(self.input_data), "--concurrency-range", f"{concurrency}:{concurrency}"]
        if request_count:
            cmd += ["--request-count", str(request_count)]
        else:
            cmd += ["-p", str(round(self.settings.measurement_interval_s * 1000)),
                    "-s", f"{self.settings.stability_pct:g}", "-r", str(self.settings.max_windows)]
        cmd += ["--percentile", str(self.percentile), "-f", str(csv_path), "--verbose-csv", "-v"]
        for header in self.headers:
            cmd += ["-H", header]
        if self.shm:
            cmd += ["--shared-memory", "system"]
            if self.output_shm_bytes:
                cmd += ["--output-shared-memory-size", str(self.output_shm_bytes)]
        return cmd


def _csv_row(path: Path, concurrency: int) -> dict[str, str] | None:
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if int(row["Concurrency"]) == concurrency:
                return row
    return None


def _server_split(report: str, model: str) -> dict:
    """The 'Server:' and 'Composing models:' sections of a verbose report, in our engine's layout."""
    sections: dict[str, dict] = {}
    current: dict | None = None
    for line in report.splitlines():
        if line.strip() == "Server:":
            current = sections.setdefault(model, {})
        elif (step := _STEP.match(line)) and "Composing models" in report:
            current = sections.setdefault(step.group(1), {})
        elif current is not None and (count := _COUNT.match(line)):
            current[count.group(1)] = int(count.group(2))
        elif current is not None and (request := _REQUEST.search(line)):
            current["request_us"] = int(request.group(1))
            current.update({name.strip(): int(us) for name, us in _PART.findall(request.group(2))})
            current = None

    def row(stats: dict) -> dict:
        def ms(key: str) -> float | None:
            return stats[key] / 1e3 if key in stats else None

        executions = stats.get("Execution")
        return {"requests": stats.get("Successful request"), "request_ms": ms("request_us"),
                "queue_ms": ms("queue"), "compute_input_ms": ms("compute input"),
                "compute_infer_ms": ms("compute infer"), "compute_output_ms": ms("compute output"),
                "avg_batch": stats["Inference"] / executions if executions else None}

    if model not in sections:
        return {}
    composing = {name: row(stats) for name, stats in sections.items() if name != model}
    ensemble = row(sections[model])
    if composing:  # an ensemble reports one "compute" total: split it as its steps do
        for key in ("compute_input_ms", "compute_infer_ms", "compute_output_ms"):
            ensemble[key] = round(sum(step[key] or 0.0 for step in composing.values()), 3)
    return {"model": {"name": model, **ensemble}, "composing": composing}


def job_window_hint(report: str) -> str:
    match = re.search(r"Measurement window: (\d+) msec", report)
    return f"{match.group(1)} ms " if match else ""


def parse_level(concurrency: int, returncode: int, report: str, csv_path: Path, model: str) -> LevelResult:
    """One level's LevelResult from perf_analyzer's exit code, verbose report and CSV."""
    passes = [(float(t), int(us) / 1e3) for _, t, us in _PASS.findall(report)]
    thread_errors = _THREAD_ERROR.findall(report)
    row = _csv_row(csv_path, concurrency) if returncode == 0 else None
    nan = math.nan
    if row is not None:
        avg = _CLIENT_AVG.search(report)
        parts = ("Client Send", "Network+Server Send/Recv", "Server Queue", "Server Compute Input",
                 "Server Compute Infer", "Server Compute Output", "Client Recv")
        mean_us = int(avg.group(1)) if avg else sum(float(row[p]) for p in parts)  # the CSV's parts sum to it
        return LevelResult(
            concurrency=concurrency, throughput=float(row["Inferences/Second"]),
            p50_ms=float(row["p50 latency"]) / 1e3, p90_ms=float(row["p90 latency"]) / 1e3,
            p95_ms=float(row["p95 latency"]) / 1e3, p99_ms=float(row["p99 latency"]) / 1e3,
            mean_ms=mean_us / 1e3, errors=0, windows=len(passes), stable=True,
            server=_server_split(report, model))
    if thread_errors:  # exit 99 without them is a set-up failure (no server, unknown model): raised below
        return LevelResult(concurrency=concurrency, throughput=nan, p50_ms=nan, p90_ms=nan, p95_ms=nan,
                           p99_ms=nan, mean_ms=nan, errors=len(thread_errors), windows=len(passes),
                           stable=False, first_error=thread_errors[0])
    if returncode == EXIT_UNSTABLE and "stable measurement" in report:
        last = passes[-3:]
        return LevelResult(concurrency=concurrency,
                           throughput=sum(t for t, _ in last) / len(last) if last else nan,
                           p50_ms=nan, p90_ms=nan, p95_ms=sum(p for _, p in last) / len(last) if last else nan,
                           p99_ms=nan, mean_ms=nan, errors=0, windows=len(passes), stable=False)
    if "No valid requests recorded" in report:
        raise PerfAnalyzerError(f"perf_analyzer: a {job_window_hint(report)}measurement window ended with no "
                                "completed request (its windows are not extended): use a measurement interval "
                                "longer than one request, or the builtin engine (it extends such windows)")
    raise PerfAnalyzerError(f"perf_analyzer exited {returncode} at concurrency {concurrency}:\n"
                            f"{report.strip()[-2000:]}")


def recount(report: str, settings: PerfSettings, concurrency: int) -> int:
    """Requests for the count-based rerun of an unstable level: as many as its last 3 windows
    completed (throughput x window length), at least 3 per concurrent request."""
    seen = sum(float(t) * settings.measurement_interval_s for _, t, _ in _PASS.findall(report)[-3:])
    return max(round(seen), 3 * concurrency)


def run_level(job: PerfAnalyzerJob, concurrency: int, timeout_s: float | None = None) -> tuple[LevelResult, str]:
    """Run perf_analyzer for one level: (the result, its full report); an unstable level is
    measured once more by request count (see the module docstring)."""
    result, report = _run_once(job, concurrency, timeout_s)
    if result.stable or result.errors:
        return result, report
    count = recount(report, job.settings, concurrency)
    counted, count_report = _run_once(job, concurrency, timeout_s, request_count=count)
    note = (f"unstable: {result.windows} windows did not agree within {job.settings.stability_pct:g} %; "
            f"latencies of {count} requests measured right after them (--request-count)")
    return replace(counted, stable=False, windows=result.windows, note=note), report + count_report


def _run_once(job: PerfAnalyzerJob, concurrency: int, timeout_s: float | None,
              request_count: int | None = None) -> tuple[LevelResult, str]:
    with tempfile.TemporaryDirectory(prefix="perf_analyzer-") as tmp:
        csv_path = Path(tmp) / "perf_analyzer.csv"
        cmd = job.command(concurrency, csv_path, request_count)
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise PerfAnalyzerError(f"perf_analyzer did not finish concurrency {concurrency} within "
                                    f"{timeout_s:.0f} s: {' '.join(cmd)}") from exc
        except OSError as exc:
            raise PerfAnalyzerError(f"cannot run {job.binary}: {exc}") from exc
        report = out.stdout + out.stderr
        return parse_level(concurrency, out.returncode, report, csv_path, job.model), report


def level_timeout_s(settings: PerfSettings, request_timeout_s: float) -> float:
    """Upper bound for one perf_analyzer run: every window plus one slow request at each end
    (the count-based rerun of an unstable level holds at most as many requests as 3 windows)."""
    return settings.max_windows * settings.measurement_interval_s + 2 * request_timeout_s + 60


def run_levels(job: PerfAnalyzerJob, levels: list[int], request_timeout_s: float = 600.0,
               on_level=None) -> list[LevelResult]:
    """The concurrency sweep, one perf_analyzer run per level (an unstable level does not end the sweep)."""
    results = []
    for level in levels:
        result, _ = run_level(job, level, level_timeout_s(job.settings, request_timeout_s))
        results.append(result)
        if on_level:
            on_level(result)
    return results
