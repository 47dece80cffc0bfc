"""What the soak samples every few seconds from the serving tree of `hyperthumbnail serve --replicas N`:
per replica the summed PSS and RSS of tritonserver + its Python-backend stubs, open file
descriptors, its /dev/shm bytes, and Triton's cumulative queue-time and request counters.

PSS (each shared page split between the processes mapping it) is what a tree really holds: the
stubs map the same /dev/shm region as their server, and RSS would count it twice. Read from
/proc/PID/smaps_rollup: ~1 ms for an idle process, tens of ms for one holding GBs (the kernel walks
its page tables; 48 ms measured on a training process of 2.9 GiB RSS).

A request's buffers live for well under the full sample's period (the Triton metrics scrape and
/dev/shm listing make one take ~1 s), so a light watcher reads only the PSS every 0.1 s (less often
when a pass is slow: it keeps itself under ~10% of a core) and each sample carries the most the tree
and each replica held since the one before (`*_pss_peak`): judging growth on instants would compare
missed peaks with caught ones.
"""
from __future__ import annotations

import re
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

__all__ = ["Replica", "find_replicas", "tree_memory", "tree_pss", "shm_bytes", "triton_counters", "Sampler"]

SHM_DIR = Path("/dev/shm")
_PREFIX_FLAG = "--backend-config=python,shm-region-prefix-name="
_METRICS_FLAG = "--metrics-port="
_ENSEMBLES_RE = re.compile(r"^hyperthumbnail_")


@dataclass(frozen=True)
class Replica:
    """One running tritonserver of the serve tree, told apart by its metrics port."""
    pid: int
    created: float
    metrics_port: int
    shm_prefix: str
    http_port: int = 0


def find_replicas(serve_pid: int) -> list[Replica]:
    """The tritonservers `serve` (pid) runs now, sorted by metrics port (= replica index)."""
    found = []
    try:
        children = psutil.Process(serve_pid).children(recursive=False)
    except psutil.NoSuchProcess:
        return []
    for child in children:
        try:
            if child.name() != "tritonserver":
                continue
            args = child.cmdline()
            port = next(int(a.split("=", 1)[1]) for a in args if a.startswith(_METRICS_FLAG))
            prefix = next((a[len(_PREFIX_FLAG):] for a in args if a.startswith(_PREFIX_FLAG)), "")
            http = next((int(a.split("=", 1)[1]) for a in args if a.startswith("--http-port=")), 0)
            found.append(Replica(child.pid, child.create_time(), port, prefix, http))
        except (psutil.Error, StopIteration, ValueError):
            continue
    return sorted(found, key=lambda r: r.metrics_port)


def _rollup(pid: int) -> tuple[int, int]:
    """(Rss, Pss) bytes of one process from smaps_rollup; (0, 0) if it is gone."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return rss, pss


def _tree(pid: int) -> list[psutil.Process]:
    """A process and its descendants; [] if it is gone."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_memory(pid: int) -> dict:
    """Summed RSS, PSS and open fds of a process and its descendants, and how many there are."""
    procs = _tree(pid)
    if not procs:
        return {"rss": 0, "pss": 0, "fds": 0, "processes": 0}
    rss = pss = fds = 0
    by_model: dict[str, int] = {}
    for proc in procs:
        r, p = _rollup(proc.pid)
        rss, pss = rss + r, pss + p
        try:
            fds += proc.num_fds()
            name = _model_of(proc.cmdline()) if proc.pid != pid else "tritonserver"
            by_model[name] = by_model.get(name, 0) + p
        except psutil.Error:
            pass
    return {"rss": rss, "pss": pss, "fds": fds, "processes": len(procs), "pss_by_model": by_model}


def tree_pss(pid: int) -> int:
    """Summed PSS of a process and its descendants, without tree_memory's fds and per-model split."""
    return sum(_rollup(proc.pid)[1] for proc in _tree(pid))


def _model_of(cmdline: list[str]) -> str:
    """The model a Python-backend stub serves (its first argument is MODEL/VERSION/model.py)."""
    for arg in cmdline[1:]:
        if arg.endswith("/model.py"):
            return Path(arg).parent.parent.name
    return Path(cmdline[0]).name if cmdline else "?"


def shm_bytes(prefixes: set[str] | None = None) -> int:
    """Bytes held in /dev/shm (allocated blocks, not the sparse size) by files with one of `prefixes`
    (None: every file)."""
    total = 0
    for path in SHM_DIR.iterdir():
        if prefixes is not None and not any(path.name.startswith(p) for p in prefixes if p):
            continue
        try:
            total += path.stat().st_blocks * 512
        except OSError:
            pass
    return total


def triton_counters(metrics_port: int) -> dict:
    """Cumulative since the replica started: queue time of the steps (microseconds; the ensembles
    have no queue of their own) and successful top-level requests."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    except OSError:
        return {"queue_us": None, "requests": None}
    queue = requests = 0.0
    for m in re.finditer(r'^(nv_inference_queue_duration_us|nv_inference_request_success)\{model="([^"]+)"[^}]*\} (\S+)',
                         text, re.M):
        name, model, value = m.group(1), m.group(2), float(m.group(3))
        if name == "nv_inference_queue_duration_us" and not _ENSEMBLES_RE.match(model):
            queue += value
        elif name == "nv_inference_request_success" and _ENSEMBLES_RE.match(model):
            requests += value
    return {"queue_us": queue, "requests": requests}


@dataclass
class Sampler:
    """Samples the serve tree every `every_s` seconds in a thread, from `start()` to `stop()`, and
    watches its PSS every `peak_every_s` in another (the peaks since the previous sample)."""
    serve_pid: int
    every_s: float = 2.0
    peak_every_s: float = 0.1
    samples: list[dict] = field(default_factory=list)
    seen_pids: dict[int, float] = field(default_factory=dict)   # pid -> create time, for the leftover check
    prefixes: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _t0: float = 0.0
    _peaks: dict[int, int] = field(default_factory=dict)   # metrics port -> most PSS since the last sample
    _tree_peak: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _watch_peaks(self) -> None:
        wait = self.peak_every_s
        while not self._stop.wait(wait):
            started = time.monotonic()
            self._note_peaks({r.metrics_port: tree_pss(r.pid) for r in find_replicas(self.serve_pid)})
            # smaps_rollup walks the page tables: a tree holding GBs takes tens of ms a pass, so the
            # watcher backs off to stay under ~10% of a core rather than compete with the server.
            wait = max(self.peak_every_s, 9 * (time.monotonic() - started))

    def _note_peaks(self, pss_by_port: dict[int, int]) -> None:
        with self._lock:
            for port, pss in pss_by_port.items():
                self._peaks[port] = max(self._peaks.get(port, 0), pss)
            self._tree_peak = max(self._tree_peak, sum(pss_by_port.values()))

    def _take_peaks(self) -> tuple[dict[int, int], int]:
        with self._lock:
            peaks, tree = self._peaks, self._tree_peak
            self._peaks, self._tree_peak = {}, 0
        return peaks, tree

    def sample(self) -> dict:
        t = time.monotonic() - self._t0
        replicas = []
        for replica in find_replicas(self.serve_pid):
            self.prefixes.add(replica.shm_prefix)
            memory = tree_memory(replica.pid)
            try:
                for proc in [psutil.Process(replica.pid), *psutil.Process(replica.pid).children(recursive=True)]:
                    self.seen_pids.setdefault(proc.pid, proc.create_time())
            except psutil.Error:
                pass
            replicas.append({"metrics_port": replica.metrics_port, "pid": replica.pid, **memory,
                             "shm_bytes": shm_bytes({replica.shm_prefix}), **triton_counters(replica.metrics_port)})
        try:
            nginx = sum(tree_memory(c.pid)["pss"] for c in psutil.Process(self.serve_pid).children()
                        if c.name() == "nginx")
        except psutil.Error:
            nginx = 0
        self._note_peaks({r["metrics_port"]: r["pss"] for r in replicas})
        peaks, tree_peak = self._take_peaks()
        for r in replicas:
            r["pss_peak"] = peaks.get(r["metrics_port"], r["pss"])
        record = {"t": round(t, 2), "replicas": replicas, "server_tree_pss": sum(r["pss"] for r in replicas),
                  "server_tree_pss_peak": tree_peak,
                  "server_tree_rss": sum(r["rss"] for r in replicas), "shm_bytes": sum(r["shm_bytes"] for r in replicas),
                  "fds": sum(r["fds"] for r in replicas), "nginx_pss": nginx,
                  "serve_pss": _rollup(self.serve_pid)[1]}
        self.samples.append(record)
        return record

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def start(self, t0: float) -> Sampler:
        self._t0 = t0
        self.sample()
        self._threads = [threading.Thread(target=self._loop, name="soak-sampler", daemon=True),
                         threading.Thread(target=self._watch_peaks, name="soak-peaks", daemon=True)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def queue_by_minute(replica_samples: list) -> list[list[float]]:
    """[[minute, mean seconds a request waited in Triton's queues], ...] from the replicas' cumulative
    counters (`nv_inference_queue_duration_us` of the steps over top-level requests), per minute of
    the run; a restarted replica (new pid) starts its counters again."""
    queue: dict[int, list[float]] = {}
    last: dict[int, tuple[int, float, float]] = {}
    for t, replicas in replica_samples:
        for port, pid, *_, queue_us, requests in replicas:
            if queue_us is None or requests is None:
                continue
            before = last.get(port)
            last[port] = (pid, queue_us, requests)
            if before is None or before[0] != pid or requests < before[2]:
                continue
            bucket = queue.setdefault(int(t // 60), [0.0, 0.0])
            bucket[0] += queue_us - before[1]
            bucket[1] += requests - before[2]
    return [[minute, round(us / n / 1e6, 3)] for minute, (us, n) in sorted(queue.items()) if n > 0]
