"""N tritonserver replicas of one model repository behind nginx, with a supervisor.

Each replica is a `TritonServer` on its own loopback HTTP/gRPC ports (only nginx talks to them)
and its own metrics port. nginx (serving/nginx.py) listens on the front ports and spreads
requests per request; a replica that dies is taken out of rotation by nginx on the first failed
attempt (the request is resent to another replica), and the supervisor thread here restarts it
on the same ports, where nginx finds it again once it accepts connections (tritonserver opens
its ports only after every model loaded, so "accepting" means "ready").

This is the single-machine shape of the Kubernetes deployment in docs/scaleout.md: replicas =
pods of a Deployment, the supervisor = the kubelet's restart policy, nginx = the Service/Ingress.
"""
from __future__ import annotations

import glob
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .access import restricted_api_args
from .nginx import NginxBalancer, Upstream
from .object_store import is_remote
from .server_log import failure_reasons
from .server_process import TritonServer, TritonServerError, free_port
from .server_runtime import TritonRuntime, prepare_runtime

__all__ = ["Replica", "ReplicaSet"]

# tritonserver copies a model repository from object storage into /tmp/folderXXXXXX (hard-coded);
# it removes them on a clean exit, not when killed.
_LOCALIZED = "/tmp/folder??????"
_start_lock = threading.Lock()  # one replica starts at a time, so its new /tmp folders are its own


@dataclass
class Replica:
    index: int
    server: TritonServer
    restarts: int = 0
    localized: list[Path] = field(default_factory=list)

    @property
    def upstream(self) -> Upstream:
        return Upstream(self.server.http_url, self.server.grpc_url)


class ReplicaSet:
    """`replicas` tritonservers behind nginx on the front ports; a context manager.

    metrics_port: replica i exposes Prometheus metrics on metrics_port + i.
    admin_key: if set, the shared-memory, model-repository, logging and trace APIs of every
        replica need it (serving/access.py); nginx passes the header through.
    """

    def __init__(self, model_repository: str | Path, replicas: int = 2, *, host: str = "127.0.0.1",
                 http_port: int = 8000, grpc_port: int = 8001, metrics_port: int = 8002,
                 admin_key: str | None = None, nginx: str | None = None, extra_args: Sequence[str] = (),
                 log_callback: Callable[[str], None] | None = None, runtime: TritonRuntime | None = None,
                 start_timeout: float = 300.0, restart: bool = True, restart_backoff_s: Sequence[float] = (1, 2, 5, 10, 30)):
        if replicas < 1:
            raise ValueError("replicas must be >= 1")
        self.model_repository = model_repository
        self.host = host
        self.count = replicas
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.admin_key = admin_key
        self.extra_args = list(extra_args) + (restricted_api_args(admin_key) if admin_key else [])
        self.log_callback = log_callback
        self.runtime = runtime
        self.start_timeout = start_timeout
        self.restart = restart
        self.restart_backoff_s = list(restart_backoff_s)
        self.replicas: list[Replica] = []
        self.balancer: NginxBalancer | None = None
        self._nginx = nginx
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.events: list[str] = []  # what the supervisor saw and did, for logs and tests

    # ----------------------------------------------------------------- addresses
    @property
    def http_url(self) -> str:
        assert self.balancer is not None
        return self.balancer.http_url

    @property
    def grpc_url(self) -> str:
        assert self.balancer is not None
        return self.balancer.grpc_url

    def _emit(self, message: str) -> None:
        self.events.append(f"{time.strftime('%H:%M:%S')} {message}")
        if self.log_callback:
            try:
                self.log_callback(f"hyperthumbnail: {message}\n")
            except Exception:  # a broken sink must not stop supervision
                pass

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> ReplicaSet:
        """Start every replica (one after the other: on a few cores loading is CPU-bound anyway),
        then nginx; raise with the reason if any fails."""
        self.balancer = NginxBalancer([], host=self.host, http_port=self.http_port, grpc_port=self.grpc_port,
                                      nginx=self._nginx, log_callback=self.log_callback)  # fails early without nginx
        self.runtime = self.runtime or prepare_runtime()
        try:
            for index in range(self.count):
                server = TritonServer(self.model_repository, host="127.0.0.1", http_port=free_port(),
                                      grpc_port=free_port(), metrics_port=self.metrics_port + index,
                                      extra_args=self.extra_args, runtime=self.runtime,
                                      log_callback=self._prefixed(index))
                replica = Replica(index, server)
                self.replicas.append(replica)
                self._start_replica(replica)
                self._emit(f"replica {index} ready (HTTP {server.http_url}, gRPC {server.grpc_url}, "
                           f"metrics {server.metrics_url})")
            self.balancer.upstreams = [r.upstream for r in self.replicas]
            self.balancer.start()
        except BaseException:
            self.stop()
            raise
        self._supervisor = threading.Thread(target=self._supervise, name="replica-supervisor", daemon=True)
        self._supervisor.start()
        return self

    def _prefixed(self, index: int) -> Callable[[str], None] | None:
        if self.log_callback is None:
            return None
        sink = self.log_callback
        return lambda line: sink(f"[replica {index}] {line}")

    def _start_replica(self, replica: Replica) -> None:
        with _start_lock:
            if self._stopping.is_set():
                raise TritonServerError("the replica set is stopping")
            before = set(glob.glob(_LOCALIZED)) if is_remote(self.model_repository) else set()
            try:
                replica.server.start(timeout=self.start_timeout)
            finally:
                if is_remote(self.model_repository):
                    replica.localized = [Path(p) for p in sorted(set(glob.glob(_LOCALIZED)) - before)]

    def _clean_up_after(self, replica: Replica) -> None:
        """A dead replica's leftovers: its Python-backend stubs (same process group), its shm
        regions (TritonServer.stop), its local copy of a remote repository."""
        process = replica.server._process
        if process is not None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        replica.server.stop(timeout=5.0)
        for path in replica.localized:
            shutil.rmtree(path, ignore_errors=True)
        replica.localized = []

    def _supervise(self) -> None:
        while not self._stopping.wait(0.5):
            for replica in self.replicas:
                if self._stopping.is_set() or replica.server.is_running():
                    continue
                code = replica.server.returncode
                replica.server._join_reader()
                reasons = "; ".join(failure_reasons(replica.server.log_lines())) or "no reason in its log"
                self._emit(f"replica {replica.index} exited with code {code} ({reasons})")
                self._clean_up_after(replica)
                if not self.restart:
                    continue
                self._restart(replica)

    def _restart(self, replica: Replica) -> None:
        attempt = 0
        while not self._stopping.wait(0.2 if attempt == 0 else self._backoff(attempt - 1)):
            try:
                started = time.monotonic()
                self._start_replica(replica)
            except TritonServerError as exc:
                self._clean_up_after(replica)
                if self._stopping.is_set():
                    return
                self._emit(f"replica {replica.index} failed to restart: {exc}; retrying in {self._backoff(attempt):g} s")
                attempt += 1
                continue
            replica.restarts += 1
            self._emit(f"replica {replica.index} restarted and ready in {time.monotonic() - started:.1f} s "
                       f"(restart #{replica.restarts})")
            return

    def _backoff(self, attempt: int) -> float:
        return self.restart_backoff_s[min(attempt, len(self.restart_backoff_s) - 1)]

    def stop(self) -> None:
        """nginx first (it finishes in-flight requests), then every replica; nothing is left running."""
        self._stopping.set()
        if self.balancer is not None:
            self.balancer.stop()
        deadline = time.monotonic() + 120
        while True:
            self._stop_servers()  # also interrupts a restart in progress (its start() sees the exit)
            if self._supervisor is None or time.monotonic() > deadline:
                break
            self._supervisor.join(timeout=1.0)
            if not self._supervisor.is_alive():
                break
        for replica in self.replicas:
            self._clean_up_after(replica)

    def _stop_servers(self) -> None:
        """Stop every replica at once: each drains its in-flight requests for up to its exit timeout."""
        threads = [threading.Thread(target=r.server.stop) for r in self.replicas]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def is_running(self) -> bool:
        return self.balancer is not None and self.balancer.is_running()

    def __enter__(self) -> ReplicaSet:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
