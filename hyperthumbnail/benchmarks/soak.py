"""Soak: a long, bounded stream of mixed photo traffic through `hyperthumbnail serve --replicas N`
(nginx in front), with faults at stated times, every response checked, and the serving tree's
memory sampled all along: does it level off, is anything lost, is anything left behind?

    hyperthumbnail bench soak --minutes 60 --replicas 2 --out benchmarks/results

writes DIR/soak.json and DIR/soak.png (docs/benchmarks.md, "Soak"). Exit code 1 when the
acceptance checks of issue #26 fail (they are in soak.json's `acceptance`).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

from .machine import machine_info, utc_now
from .soak_mix import Job, Photo, build_pool, largest, parse_mix, schedule, source_photos

__all__ = ["run", "FAULT_AT", "ACCEPT_GROWTH_FACTOR", "ACCEPT_GROWTH_SLACK_BYTES"]

FAULT_AT = {"kill_replica": 0.25, "disconnects": 0.5, "malformed_burst": 0.7}  # fractions of the run
ACCEPT_GROWTH_FACTOR = 1.05                 # max PSS of the last third <= 1.05 x the first third's ...
ACCEPT_GROWTH_SLACK_BYTES = 64 * 2**20      # ... + 64 MiB (issue #26)
ACCEPT_MIN_REQUESTS = 50
REQUEST_TIMEOUT_S = 900.0                   # a 50 MP encode on one contended core takes a minute or more
SERVE_START_TIMEOUT_S = 600.0
SERVE_STOP_TIMEOUT_S = 120.0
SERVE_LOGS = Path("build/soak_logs")  # the `serve` output of each run (not a result)
REFERENCE_CACHE = Path("build/soak_references")  # in-process results by photo and code (add_references)


@dataclass
class Outcome:
    job: Job
    start: float
    seconds: float
    error: str = ""
    compared: bool = False
    mismatch: bool = False


# ---------------------------------------------------------------------------------------- references
def _digest(image: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(image).data).digest()


def _bytes_key() -> str:
    """Hash of what decides the in-process bytes: the shipped weights and the core's code (model,
    codec, export, runtime, pipeline, weights loading); not serving/, whose bytes are the ones tested."""
    from ..weights import default_weights_path

    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(default_weights_path(4).read_bytes())
    files = [package / "pipeline.py", package / "weights.py", package / "interface.py", package / "cpu.py"]
    for folder in ("model", "codec", "export", "runtime"):
        files += sorted((package / folder).glob("*.py"))
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def add_references(pool: list[Photo], progress, cache: Path | None = REFERENCE_CACHE) -> None:
    """Each photo's thumbnail and decoded digest from `Pipeline` in this process (the server's runtime),
    kept in `cache` by photo and `_bytes_key()` (a 50 MP photo takes minutes on a busy core)."""
    from ..pipeline import Pipeline

    key = _bytes_key()
    pipeline = None
    try:
        for photo in progress(pool, desc="in-process references", unit="photo"):
            path = cache / f"{key}_{_digest(photo.image).hex()[:24]}.npz" if cache else None
            if path is not None and path.is_file():
                saved = np.load(path)
                photo.thumbnail, photo.decoded_digest = saved["thumbnail"].tobytes(), saved["decoded"].tobytes()
                continue
            pipeline = pipeline or Pipeline()
            photo.thumbnail = pipeline.encode(photo.image)
            photo.decoded_digest = _digest(pipeline.decode(photo.thumbnail))
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez(path, thumbnail=np.frombuffer(photo.thumbnail, np.uint8),
                         decoded=np.frombuffer(photo.decoded_digest, np.uint8))
    finally:
        if pipeline is not None:
            pipeline.close()


# ---------------------------------------------------------------------------------------- checks
def check_encode(photo: Photo, jpeg: bytes) -> str:
    """'' when `jpeg` is a readable thumbnail of the photo's size at the marker's scale, else why not."""
    import io

    from PIL import Image

    from ..codec.thumbnail import read_thumbnail, thumbnail_size

    height, width = photo.image.shape[:2]
    try:
        thumb = read_thumbnail(jpeg)
        with Image.open(io.BytesIO(jpeg)) as im:
            im.load()
            shown = im.size
    except Exception as exc:  # noqa: BLE001 - any failure to read it is the finding
        return f"not a readable thumbnail: {type(exc).__name__}: {exc}"
    if thumb.hr_size != (width, height):
        return f"marker says {thumb.hr_size}, photo is {(width, height)}"
    if shown != thumbnail_size((width, height), thumb.scale):
        return f"JPEG is {shown}, expected {thumbnail_size((width, height), thumb.scale)}"
    return ""


def check_decode(photo: Photo, image: np.ndarray) -> str:
    height, width = photo.image.shape[:2]
    if image.shape != (height, width, 3) or image.dtype != np.uint8:
        return f"decoded {image.shape} {image.dtype}, expected ({height}, {width}, 3) uint8"
    return ""


# ---------------------------------------------------------------------------------------- the stream
class Stream:
    """`concurrency` workers sending the scheduled jobs until the deadline (or the jobs run out)."""

    def __init__(self, pool: list[Photo], jobs, urls: dict[str, str], concurrency: int, deadline: float,
                 compare_fraction: float, seed: int):
        self.pool, self.urls, self.deadline = pool, urls, deadline
        self._jobs = iter(jobs)
        self._lock = threading.Lock()
        self._rng = random.Random(seed + 2)
        self.compare_fraction = compare_fraction
        self.outcomes: list[Outcome] = []
        self.in_flight = 0
        self.started = False
        self._threads = [threading.Thread(target=self._work, name=f"soak-{i}", daemon=True) for i in range(concurrency)]

    def _next(self) -> tuple[Job, bool] | None:
        with self._lock:
            if time.monotonic() >= self.deadline:
                return None
            job = next(self._jobs, None)
            if job is None:
                return None
            self.in_flight += 1
            return job, self._rng.random() < self.compare_fraction

    def _work(self) -> None:
        from ..client import HyperThumbnailClient

        clients = {p: HyperThumbnailClient(self.urls[p], protocol=p, timeout_s=REQUEST_TIMEOUT_S)  # type: ignore[arg-type]
                   for p in ("http", "grpc")}
        try:
            while (taken := self._next()) is not None:
                job, compare = taken
                outcome = self._one(clients[job.protocol], job, compare)
                with self._lock:
                    self.outcomes.append(outcome)
                    self.in_flight -= 1
        finally:
            for client in clients.values():
                client.close()

    def _one(self, client, job: Job, compare: bool) -> Outcome:
        photo = self.pool[job.photo]
        start = time.monotonic()
        try:
            if job.op == "encode":
                jpeg = client.encode(photo.image)
                seconds = time.monotonic() - start
                error = check_encode(photo, jpeg)
                mismatch = compare and not error and jpeg != photo.thumbnail
            else:
                image = client.decode(photo.thumbnail)
                seconds = time.monotonic() - start
                error = check_decode(photo, image)
                mismatch = compare and not error and _digest(image) != photo.decoded_digest
        except Exception as exc:  # noqa: BLE001 - a lost request, whatever the reason, is the finding
            return Outcome(job, start, time.monotonic() - start, error=f"{type(exc).__name__}: {str(exc)[:300]}")
        return Outcome(job, start, seconds, error=error, compared=compare and not error, mismatch=mismatch)

    def opening(self, targets: list[str], photo: int) -> None:
        """The largest photo's encode and decode sent to every target (each replica's own HTTP port)
        at once: every replica holds its worst case at concurrency 2 before the stream starts, so
        memory after it can be judged against it. Counted and checked like the stream's requests."""
        from ..client import HyperThumbnailClient

        def one(job: Job, url: str) -> None:
            with HyperThumbnailClient(url, protocol="http", timeout_s=REQUEST_TIMEOUT_S) as client:
                outcome = self._one(client, job, True)
            with self._lock:
                self.outcomes.append(outcome)

        jobs = [(Job(-1 - len(targets) * k - i, op, "http", photo), url)
                for i, url in enumerate(targets) for k, op in enumerate(("encode", "decode"))]
        threads = [threading.Thread(target=one, args=pair, daemon=True) for pair in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def start(self) -> Stream:
        self.started = True
        for thread in self._threads:
            thread.start()
        return self

    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def join(self) -> None:
        for thread in self._threads:
            thread.join()


# ---------------------------------------------------------------------------------------- serve
def start_serve(args: argparse.Namespace, log: Path) -> tuple[subprocess.Popen, dict[str, str], int]:
    """`hyperthumbnail serve --replicas N` as a user runs it; its output goes to `log`."""
    from ..serving.server_process import free_port

    http, grpc, metrics = free_port(), free_port(), free_port()
    command = [sys.executable, "-m", "hyperthumbnail", "serve", "--replicas", str(args.replicas), "--quiet",
               "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    handle = open(log, "w")
    serve = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    handle.close()
    deadline = time.monotonic() + SERVE_START_TIMEOUT_S
    while "Ctrl+C to stop" not in log.read_text(errors="replace"):
        if serve.poll() is not None or time.monotonic() > deadline:
            stop_serve(serve)
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise RuntimeError(f"`serve --replicas {args.replicas}` did not start:\n{tail}")
        time.sleep(0.5)
    return serve, {"http": f"127.0.0.1:{http}", "grpc": f"127.0.0.1:{grpc}"}, metrics


def stop_serve(serve: subprocess.Popen) -> int | None:
    if serve.poll() is None:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(SERVE_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait(10)
    return serve.returncode


def leftovers(sampler) -> dict:
    """After stop: our /dev/shm regions and processes still there (pids checked with their start time)."""
    from .soak_probe import shm_bytes

    alive = []
    for pid, created in sampler.seen_pids.items():
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.Error:
            continue
    return {"shm_leftover_bytes": shm_bytes(sampler.prefixes) if sampler.prefixes else 0,
            "shm_leftover_files": sorted(p.name for p in Path("/dev/shm").iterdir()
                                         if any(p.name.startswith(x) for x in sampler.prefixes if x)),
            "processes_left": alive}


# ---------------------------------------------------------------------------------------- the run
def _faults(args, serve_pid: int | None, urls: dict[str, str], pool: list[Photo], t0: float, duration: float,
            stop: threading.Event, record: list[dict], opened: threading.Event) -> None:
    from . import soak_faults

    probe = max(pool, key=lambda p: p.image.size)  # long enough that an impatient client gives up
    plan = [(name, FAULT_AT[name] * duration) for name in args.faults]
    for name, at in sorted(plan, key=lambda x: x[1]):
        if stop.wait(max(0.0, t0 + at - time.monotonic())):
            return
        while not opened.wait(1.0):  # the opening goes to the replicas' own ports: no retry elsewhere
            if stop.is_set():
                return
        started = time.monotonic() - t0
        try:
            if name == "kill_replica":
                result = (soak_faults.kill_replica(serve_pid, 0) if serve_pid is not None and args.replicas > 1
                          else {"fault": name, "skipped": "needs a served --replicas >= 2 started by this command"})
            elif name == "disconnects":
                result = soak_faults.disconnects(urls["http"], urls["grpc"], probe.image)
            else:
                result = soak_faults.malformed_burst(urls["http"], urls["grpc"], pool[0].thumbnail)
        except Exception as exc:  # noqa: BLE001 - recorded, the stream goes on
            result = {"fault": name, "failed": f"{type(exc).__name__}: {exc}"}
        record.append({"t": round(started, 1), "planned_t": round(at, 1), "took_s": round(time.monotonic() - t0 - started, 1),
                       **result})


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    p = np.percentile(values, [50, 95, 99])
    return {"count": len(values), "p50_s": round(float(p[0]), 3), "p95_s": round(float(p[1]), 3),
            "p99_s": round(float(p[2]), 3), "max_s": round(max(values), 3)}


def _thirds(samples: list[list[float]], end: float) -> dict:
    first = [v for t, v in samples if t < end / 3]
    last = [v for t, v in samples if t >= 2 * end / 3]
    if not first or not last:
        return {"first_third_max_bytes": None, "last_third_max_bytes": None, "bound_bytes": None, "levels_off": False}
    bound = ACCEPT_GROWTH_FACTOR * max(first) + ACCEPT_GROWTH_SLACK_BYTES
    return {"first_third_max_bytes": int(max(first)), "last_third_max_bytes": int(max(last)),
            "bound_bytes": int(bound), "levels_off": max(last) <= bound}


def summarize(args, pool, outcomes: list[Outcome], samples: list[dict], faults: list[dict], end: float,
              left: dict) -> dict:
    from .soak_probe import queue_by_minute

    errors = [o for o in outcomes if o.error]
    by_class: dict[str, dict[str, list[float]]] = {}
    for o in outcomes:
        if not o.error:
            by_class.setdefault(pool[o.job.photo].size_class.name, {}).setdefault(o.job.op, []).append(o.seconds)
    memory = [[s["t"], s["server_tree_pss_peak"]] for s in samples]  # the most since the previous sample
    thirds = _thirds(memory, end)
    gave_up = sum(f.get("requests", 0) for f in faults if f.get("fault") == "disconnects")
    acceptance = {
        "requests_at_least_50": len(outcomes) >= ACCEPT_MIN_REQUESTS,
        "no_errors": not errors,
        "no_mismatches": not any(o.mismatch for o in outcomes),
        "memory_levels_off": thirds["levels_off"],
        "nothing_left_in_dev_shm": left["shm_leftover_bytes"] == 0,
        "no_process_left": not left["processes_left"],
        "malformed_all_answered_with_an_error": all(not f.get("not_answered_with_an_error") and "failed" not in f
                                                    for f in faults if f.get("fault") == "malformed_burst"),
    }
    replica_peaks: dict[str, int] = {}
    for s in samples:
        for r in s["replicas"]:
            key = str(r["metrics_port"] - samples[0]["replicas"][0]["metrics_port"]) if samples[0]["replicas"] else "0"
            replica_peaks[key] = max(replica_peaks.get(key, 0), r["pss_peak"])
    return {
        "requests": len(outcomes),
        "errors": len(errors),
        "mismatches": sum(o.mismatch for o in outcomes),
        "compared": sum(o.compared for o in outcomes),
        "client_gave_up": gave_up,
        "error_examples": [{"t": round(o.start, 1), "op": o.job.op, "protocol": o.job.protocol, "error": o.error}
                           for o in errors[:20]],
        "duration_s": round(end, 1),
        "memory_samples": memory,
        "rss_samples": [[s["t"], s["server_tree_rss"]] for s in samples],
        "shm_samples": [[s["t"], s["shm_bytes"]] for s in samples],
        "fd_samples": [[s["t"], s["fds"]] for s in samples],
        "replica_samples": [[s["t"], [[r["metrics_port"], r["pid"], r["pss"], r["rss"], r["shm_bytes"], r["fds"],
                                       r["queue_us"], r["requests"]] for r in s["replicas"]]] for s in samples],
        "replica_sample_fields": ["metrics_port", "pid", "pss", "rss", "shm_bytes", "fds", "queue_us_total",
                                  "requests_total"],
        "queue_seconds_per_request_by_minute": queue_by_minute(
            [[s["t"], [[r["metrics_port"], r["pid"], r["queue_us"], r["requests"]] for r in s["replicas"]]]
             for s in samples]),
        "pss_by_model_samples": [[s["t"], [r["pss_by_model"] for r in s["replicas"]]] for s in samples[::5]],
        "nginx_pss_max_bytes": max((s["nginx_pss"] for s in samples), default=0),
        "memory": {**thirds, "peak_bytes": max((v for _, v in memory), default=0),
                   "idle_bytes": memory[0][1] if memory else None,
                   "peak_per_replica_bytes": replica_peaks,
                   "shm_peak_bytes": max((s["shm_bytes"] for s in samples), default=0),
                   "fds_first_last": [samples[0]["fds"], samples[-1]["fds"]] if samples else None},
        "latency_by_class": {c: {op: _percentiles(v) for op, v in ops.items()} for c, ops in sorted(by_class.items())},
        "requests_log": [[round(o.start, 2), o.job.op, o.job.protocol, pool[o.job.photo].size_class.name,
                          round(o.seconds, 3), bool(o.error)] for o in outcomes],
        "requests_log_fields": ["t_start", "op", "protocol", "size_class", "seconds", "error"],
        "faults": faults,
        **left,
        "acceptance": acceptance,
        "passed": all(acceptance.values()),
    }


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .soak_plot import plot_soak
    from .soak_probe import Sampler

    if args.minutes <= 0 or args.concurrency < 1 or args.replicas < 1 or args.max_requests < 1:
        raise ValueError("--minutes must be > 0, --concurrency, --replicas and --max-requests >= 1")
    if not 0 <= args.compare_fraction <= 1:
        raise ValueError("--compare-fraction must be in [0, 1]")
    unknown = set(args.faults) - set(FAULT_AT)
    if unknown:
        raise ValueError(f"unknown fault(s) {', '.join(sorted(unknown))}: use {', '.join(FAULT_AT)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    classes = parse_mix(args.mix)
    sources = source_photos([Path(d) for d in args.photos])
    print(f"soak: {len(classes)} size classes x {args.per_class} photos from {len(sources)} source photos", flush=True)
    pool = build_pool(classes, sources, args.per_class, args.seed)
    add_references(pool, tqdm)
    duration = args.minutes * 60.0
    record: dict = {"created": utc_now(), "command": shlex.join(["hyperthumbnail", *sys.argv[1:]]),
                    "machine": machine_info(),
                    "mix": [{"name": c.name, "width": c.width, "height": c.height, "megapixels": round(c.megapixels, 2),
                             "weight": c.weight} for c in classes],
                    "pool": [{"size_class": p.size_class.name, "source": p.source} for p in pool],
                    "schedule": "first the largest photo's encode and decode sent to every replica's own port at once (each "
                                "replica's worst case at concurrency 2); then through nginx, seeded draws: "
                                "class by weight, photo of it, encode/decode and HTTP/gRPC with even odds",
                    "seed": args.seed, "replicas": args.replicas, "concurrency": args.concurrency,
                    "minutes": args.minutes, "compare_fraction": args.compare_fraction,
                    "fault_plan": {name: round(FAULT_AT[name] * duration, 1) for name in args.faults},
                    "acceptance_rule": f"max server-tree PSS (watched every 0.1 s) over the last third <= "
                                       f"{ACCEPT_GROWTH_FACTOR} x max over the first third + "
                                       f"{ACCEPT_GROWTH_SLACK_BYTES // 2**20} MiB; >= "
                                       f"{ACCEPT_MIN_REQUESTS} requests; 0 errors; 0 mismatches; /dev/shm empty after"}
    serve = None
    if args.url:
        http, _, grpc = args.url.partition(",")
        urls = {"http": http, "grpc": grpc or http}
    else:
        log = SERVE_LOGS / f"serve_{os.getpid()}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        record["serve_log"] = str(log)
        serve, urls, _ = start_serve(args, log)
    sampler = Sampler(serve.pid if serve else -1, every_s=args.sample_every)
    faults: list[dict] = []
    stop = threading.Event()
    try:
        t0 = time.monotonic()
        if serve:
            sampler.start(t0)
        stream = Stream(pool, schedule(pool, args.seed, args.max_requests), urls, args.concurrency,
                        t0 + duration, args.compare_fraction, args.seed)
        from .soak_probe import find_replicas

        targets = ([f"127.0.0.1:{r.http_port}" for r in find_replicas(serve.pid)] if serve else [urls["http"]])
        opening = threading.Thread(target=stream.opening, args=(targets, largest(pool)), daemon=True)
        opening.start()
        opened = threading.Event()
        fault_thread = threading.Thread(target=_faults, args=(args, serve.pid if serve else None, urls, pool, t0,
                                                              duration, stop, faults, opened), daemon=True)
        fault_thread.start()
        with tqdm(total=int(duration), unit="s", desc="soak", mininterval=5 if not sys.stderr.isatty() else 0.1) as bar:
            while opening.is_alive() or stream.alive() or not stream.started:
                if not opening.is_alive() and not stream.started:
                    opened.set()
                    stream.start()
                time.sleep(1.0)
                last = sampler.samples[-1] if sampler.samples else None
                bar.set_postfix(requests=len(stream.outcomes), errors=sum(bool(o.error) for o in stream.outcomes),
                                in_flight=stream.in_flight, refresh=False,
                                pss_gib=f"{last['server_tree_pss'] / 2**30:.2f}" if last else "-")
                bar.update(min(int(duration), int(time.monotonic() - t0)) - bar.n)
        stream.join()
        stop.set()
        fault_thread.join()
        end = time.monotonic() - t0
        if serve:
            sampler.sample()
    finally:
        stop.set()
        sampler.stop()
        code = stop_serve(serve) if serve else None
    for o in stream.outcomes:
        o.start -= t0
    time.sleep(1.0)  # let the kernel reap
    left = leftovers(sampler) if serve else {"shm_leftover_bytes": 0, "shm_leftover_files": [], "processes_left": []}
    record.update(summarize(args, pool, stream.outcomes, sampler.samples, faults, end, left))
    record["serve_exit_code"] = code
    record["machine_after"] = {"load_average_1_5_15": machine_info()["load_average_1_5_15"]}
    if args.url:
        record["acceptance"].pop("memory_levels_off")
        record["note"] = "an existing server (--url): no memory samples, no replica killed"
        record["passed"] = all(record["acceptance"].values())
    import json

    (out / "soak.json").write_text(json.dumps(record, indent=1) + "\n")
    plot_soak(record, out / "soak.png")
    m = record["memory"]
    gib = 2**30
    print(f"soak: {record['requests']} requests, {record['errors']} errors, {record['mismatches']} mismatches "
          f"({record['compared']} compared), {record['client_gave_up']} given up by the client; server PSS max "
          f"first third {(m['first_third_max_bytes'] or 0) / gib:.2f} GiB, last third "
          f"{(m['last_third_max_bytes'] or 0) / gib:.2f} GiB (bound {(m['bound_bytes'] or 0) / gib:.2f}); "
          f"/dev/shm left {record['shm_leftover_bytes']} B; processes left {len(record['processes_left'])}", flush=True)
    failed = [k for k, v in record["acceptance"].items() if not v]
    print(f"soak: {'PASSED' if not failed else 'FAILED: ' + ', '.join(failed)}; wrote {out / 'soak.json'}, "
          f"{out / 'soak.png'}", flush=True)
    return 0 if not failed else 1
