"""perf_analyzer-style load generator for the HyperThumbnail ensembles.

Semantics follow perf_analyzer's concurrency mode (time windows):
* at concurrency N, N worker threads (each with its own client) keep one request in flight each;
* each level starts with a warm-up (`warmup` completed requests), then measurement windows of
  `measurement_interval_s` are taken until the last 3 windows are stable: max/min of their
  throughput and of their p95 latency both within `stability_pct` % (perf_analyzer's rule; it
  uses the mean latency unless `--percentile` is given). After `max_windows` the level is
  reported as unstable;
* a request counts in the window in which it completes. A window that ends with no completed
  request is extended until one completes (requests longer than the interval, e.g. 6K on a CPU);
* the reported numbers cover the last (up to) 3 windows; `errors` counts failed requests in all
  windows of the level;
* the server-side split comes from Triton's statistics extension: deltas over those windows of
  the ensemble's and each composing model's cumulative queue / compute_input / compute_infer /
  compute_output times, per request.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from .errors import HyperThumbnailError
from .sync import HyperThumbnailClient

__all__ = ["PerfSettings", "LevelResult", "LoadGenerator", "ServerStatistics", "parse_concurrency", "run_levels"]

Call = Callable[[HyperThumbnailClient], object]


def parse_concurrency(spec: str) -> list[int]:
    """'START[:END[:STEP]]' -> the levels, like perf_analyzer's --concurrency-range."""
    try:
        parts = [int(p) for p in spec.split(":")]
    except ValueError:
        raise ValueError(f"concurrency must be START[:END[:STEP]] integers, got {spec!r}") from None
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"concurrency must be START[:END[:STEP]], got {spec!r}")
    start, end, step = parts[0], parts[1] if len(parts) > 1 else parts[0], parts[2] if len(parts) > 2 else 1
    if start < 1 or end < start or step < 1:
        raise ValueError(f"concurrency needs 1 <= START <= END and STEP >= 1, got {spec!r}")
    return list(range(start, end + 1, step))


@dataclass
class PerfSettings:
    measurement_interval_s: float = 5.0
    stability_pct: float = 10.0
    max_windows: int = 10
    warmup: int = 2  # completed requests discarded at the start of each level


@dataclass
class Record:
    start: float
    end: float
    error: str | None  # None: success


@dataclass
class Window:
    start: float
    end: float
    latencies: list[float]  # seconds, successful requests completed in the window
    errors: int

    @property
    def throughput(self) -> float:
        return len(self.latencies) / (self.end - self.start)

    @property
    def p95(self) -> float:
        return float(np.percentile(self.latencies, 95)) if self.latencies else float("nan")


@dataclass
class LevelResult:
    concurrency: int
    throughput: float  # successful inferences per second
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    errors: int
    windows: int
    stable: bool
    server: dict = field(default_factory=dict)
    first_error: str | None = None
    note: str | None = None  # where the latencies come from when not from stable windows

    def to_json(self) -> dict:
        return asdict(self)


class LoadGenerator:
    """Worker threads, each with its own client, each keeping one request in flight."""

    def __init__(self, make_client: Callable[[], HyperThumbnailClient], call: Call):
        self._make_client = make_client
        self._call = call
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.records: list[Record] = []
        self.failure: BaseException | None = None  # a worker's unexpected exception (a bug, not a failed request)

    @property
    def concurrency(self) -> int:
        return len(self._threads)

    def set_concurrency(self, n: int) -> None:
        """Add workers up to n (levels only go up, as in a perf_analyzer sweep)."""
        while len(self._threads) < n:
            thread = threading.Thread(target=self._work, name=f"perf-worker-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _work(self) -> None:
        try:
            with self._make_client() as client:
                while not self._stop.is_set():
                    start = time.perf_counter()
                    error = None
                    try:
                        self._call(client)
                    except HyperThumbnailError as exc:
                        error = f"{type(exc).__name__}: {exc}"
                    with self._lock:
                        self.records.append(Record(start, time.perf_counter(), error))
        except BaseException as exc:
            self.failure = exc

    def completed_since(self, t: float) -> list[Record]:
        """Requests that completed after `t`; raises if a worker died (so no wait can hang)."""
        if self.failure is not None:
            raise RuntimeError(f"a load worker failed: {self.failure!r}") from self.failure
        with self._lock:
            return [r for r in self.records if r.end > t]

    def stop(self, timeout: float | None = None) -> None:
        """Let every in-flight request finish, then end the workers."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)


class ServerStatistics:
    """Cumulative statistics of a model and its ensemble steps, via Triton's statistics extension."""

    FIELDS = ("queue", "compute_input", "compute_infer", "compute_output")

    def __init__(self, client: HyperThumbnailClient, model: str):
        self.client, self.model = client, model
        config = self._call(client.triton.get_model_config, model)
        config = config.get("config", config)  # gRPC's JSON wraps it
        steps = config.get("ensemble_scheduling", {}).get("step", [])
        self.composing = list(dict.fromkeys(step["model_name"] for step in steps))

    def _call(self, method, model: str) -> dict:
        if self.client.options.protocol == "grpc":
            return method(model, as_json=True, **self.client.options.call_kwargs)
        return method(model)

    def snapshot(self) -> dict[str, dict[str, int]]:
        """{model: {"requests", "request_ns", "<field>_ns", "inferences", "executions"}} (cumulative)."""
        out = {}
        for name in [self.model, *self.composing]:
            totals = dict.fromkeys(["requests", "request_ns", "inferences", "executions",
                                    *(f"{f}_ns" for f in self.FIELDS)], 0)
            for stats in self._call(self.client.triton.get_inference_statistics, name).get("model_stats", []):
                inference = stats.get("inference_stats", {})
                success = inference.get("success", {})
                totals["requests"] += int(success.get("count", 0))
                totals["request_ns"] += int(success.get("ns", 0))
                totals["inferences"] += int(stats.get("inference_count", 0))
                totals["executions"] += int(stats.get("execution_count", 0))
                for f in self.FIELDS:
                    totals[f"{f}_ns"] += int(inference.get(f, {}).get("ns", 0))  # gRPC JSON: uint64 as text
            out[name] = totals
        return out

    def split(self, before: dict, after: dict) -> dict:
        """Per-request milliseconds between two snapshots: {"model": {...}, "composing": {step: {...}}}."""
        def per_request(name: str) -> dict:
            delta = {k: after[name][k] - before[name][k] for k in after[name]}
            n = delta["requests"]
            row = {"requests": n, "request_ms": delta["request_ns"] / n / 1e6 if n else None}
            for f in self.FIELDS:
                row[f"{f}_ms"] = delta[f"{f}_ns"] / n / 1e6 if n else None
            row["avg_batch"] = delta["inferences"] / delta["executions"] if delta["executions"] else None
            return row

        return {"model": {"name": self.model, **per_request(self.model)},
                "composing": {name: per_request(name) for name in self.composing}}


def _stable(windows: list[Window], pct: float) -> bool:
    if len(windows) < 3 or any(not w.latencies for w in windows[-3:]):
        return False
    limit = 1.0 + pct / 100.0
    for values in ([w.throughput for w in windows[-3:]], [w.p95 for w in windows[-3:]]):
        if min(values) <= 0 or max(values) / min(values) > limit:
            return False
    return True


def measure_level(generator: LoadGenerator, concurrency: int, settings: PerfSettings,
                  stats: ServerStatistics | None = None,
                  on_window: Callable[[int, Window], None] | None = None) -> LevelResult:
    """Warm up at `concurrency`, then take windows until stable or `max_windows` (see module docstring)."""
    level_start = time.perf_counter()
    generator.set_concurrency(concurrency)
    while len(generator.completed_since(level_start)) < settings.warmup:
        time.sleep(0.01)

    windows: list[Window] = []
    snapshots = [stats.snapshot()] if stats else []
    while len(windows) < settings.max_windows:
        start = time.perf_counter()
        time.sleep(settings.measurement_interval_s)
        while not generator.completed_since(start):
            time.sleep(0.01)  # extend: no request finished in this window yet
        end = time.perf_counter()
        done = [r for r in generator.completed_since(start) if r.end <= end]
        windows.append(Window(start, end, [r.end - r.start for r in done if r.error is None],
                              sum(r.error is not None for r in done)))
        if stats:
            snapshots.append(stats.snapshot())
        if on_window:
            on_window(concurrency, windows[-1])
        if _stable(windows, settings.stability_pct):
            break

    reported = windows[-3:]
    latencies = np.array([x for w in reported for x in w.latencies]) * 1e3
    duration = sum(w.end - w.start for w in reported)
    errors = [r.error for r in generator.completed_since(windows[0].start)
              if r.error is not None and r.end <= windows[-1].end]

    def pct(q: float) -> float:
        return float(np.percentile(latencies, q)) if latencies.size else float("nan")

    return LevelResult(
        concurrency=concurrency,
        throughput=latencies.size / duration,
        p50_ms=pct(50), p90_ms=pct(90), p95_ms=pct(95), p99_ms=pct(99),
        mean_ms=float(latencies.mean()) if latencies.size else float("nan"),
        errors=len(errors), windows=len(windows), stable=_stable(windows, settings.stability_pct),
        server=stats.split(snapshots[-len(reported) - 1], snapshots[-1]) if stats else {},
        first_error=errors[0] if errors else None,
    )


def run_levels(make_client: Callable[[], HyperThumbnailClient], call: Call, levels: list[int],
               settings: PerfSettings, stats: ServerStatistics | None = None,
               on_window: Callable[[int, Window], None] | None = None,
               on_level: Callable[[LevelResult], None] | None = None) -> list[LevelResult]:
    """The concurrency sweep: one LevelResult per level, workers shared across levels."""
    generator = LoadGenerator(make_client, call)
    results = []
    try:
        for level in levels:
            results.append(measure_level(generator, level, settings, stats, on_window))
            if on_level:
                on_level(results[-1])
    finally:
        generator.stop()
    return results
