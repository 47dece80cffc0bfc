"""One `tritonserver` process: start it on a prepared runtime, wait until every model is ready
(or say why not, from its log), stream its log, and stop it gracefully.

Every server gets its own Python-backend shared-memory prefix so several servers (tests, a demo,
a user's `serve`, replicas) can run on one machine without clobbering each other's /dev/shm
regions, and a server killed with SIGKILL has its regions removed by prefix.
"""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from .object_store import is_remote
from .server_flags import DEFAULT_EXIT_TIMEOUT_S, HEALTH_READY, client_address, tritonserver_flags
from .server_log import failure_reasons
from .server_runtime import TritonRuntime, TritonServerError, prepare_runtime

__all__ = ["TritonServer", "TritonServerError", "free_port"]


def _ephemeral_ports() -> range:
    """The kernel's range for outgoing connections' source ports (Linux; Triton's default elsewhere)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return range(low, high + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


# Ports this process has handed out: a server asks for three (HTTP, gRPC, metrics) before it binds
# any, so a port that is still free may already be promised to the same server or its neighbour.
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now and not handed out before by this process.

    Chosen outside the ephemeral range: a port the kernel hands out with bind(0) can be taken as
    the source port of an outgoing connection (a client, a readiness probe) before the server
    binds it, which made replica starts fail with "Address already in use".
    """
    ephemeral = _ephemeral_ports()
    with _handed_out_lock:
        candidates = [p for p in range(20000, 32768) if p not in ephemeral and p not in _handed_out]
        candidates = candidates or [p for p in range(20000, 30000) if p not in _handed_out]
        for port in secrets.SystemRandom().sample(candidates, min(64, len(candidates))):
            if _bindable(host, port):
                _handed_out.add(port)
                return port
        while True:  # a crowded machine: any free port the kernel picks
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


class TritonServer:
    """One tritonserver process serving a model repository; use as a context manager.

    `model_repository` is a local directory or an object-storage URI (`s3://...`, see object_store).

    >>> with TritonServer("build/model_repository", http_port=8000) as server:
    ...     print(server.http_url)
    """

    def __init__(
        self,
        model_repository: str | Path,
        *,
        host: str = "127.0.0.1",
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        extra_args: Sequence[str] = (),
        log_callback: Callable[[str], None] | None = None,
        log_file: str | Path | None = None,
        runtime: TritonRuntime | None = None,
        log_verbose: int = 0,
        gpu: bool = False,
        exit_timeout: int = DEFAULT_EXIT_TIMEOUT_S,
        max_log_lines: int = 20000,
    ):
        # A local directory, or a URI tritonserver reads itself (s3://, gs://, as://).
        self.model_repository: Path | str = (str(model_repository) if is_remote(model_repository)
                                             else Path(model_repository).resolve())
        self.host = host
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.extra_args = list(extra_args)
        self.log_callback = log_callback
        self.log_file = Path(log_file) if log_file else None
        self.runtime = runtime
        self.log_verbose = log_verbose
        self.gpu = gpu
        self.exit_timeout = exit_timeout
        self._log: deque[str] = deque(maxlen=max_log_lines)
        self._process: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._shm_prefix = f"hyperthumbnail{os.getpid()}x{secrets.token_hex(3)}_"

    # ----------------------------------------------------------------- addresses
    @property
    def http_url(self) -> str:
        """host:port as tritonclient.http expects it."""
        return client_address(self.host, self.http_port)

    @property
    def grpc_url(self) -> str:
        return client_address(self.host, self.grpc_port)

    @property
    def metrics_url(self) -> str:
        return f"http://{client_address(self.host, self.metrics_port)}/metrics"

    # ----------------------------------------------------------------- process
    def command(self) -> list[str]:
        rt = self.runtime
        assert rt is not None
        local = [str(rt.binary), f"--backend-directory={rt.backend_dir}", f"--cache-directory={rt.cache_dir}"]
        flags = tritonserver_flags(self.model_repository, host=self.host, http_port=self.http_port,
                                   grpc_port=self.grpc_port, metrics_port=self.metrics_port,
                                   exit_timeout=self.exit_timeout, log_verbose=self.log_verbose, gpu=self.gpu,
                                   shm_prefix=self._shm_prefix)
        return local + flags + self.extra_args

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def log(self) -> str:
        return "".join(self._log)

    def log_lines(self) -> list[str]:
        return list(self._log)

    def start(self, timeout: float = 180.0) -> TritonServer:
        """Start the process and block until every model is ready (or raise with the reason)."""
        if self.is_running():
            raise TritonServerError("server already running")
        if isinstance(self.model_repository, Path) and not self.model_repository.is_dir():
            raise TritonServerError(f"model repository {self.model_repository} does not exist")
        self._check_ports()
        if self.runtime is None:
            self.runtime = prepare_runtime()
        self._log.clear()
        logf = open(self.log_file, "a", encoding="utf-8") if self.log_file else None
        self._process = subprocess.Popen(
            self.command(), env=self.runtime.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,  # our own signals; Ctrl+C goes to us
        )
        self._reader = threading.Thread(target=self._read_log, args=(self._process, logf), daemon=True)
        self._reader.start()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _check_ports(self) -> None:
        """Refuse busy ports up front: the readiness probe could otherwise reach whatever owns them."""
        for what, port in (("HTTP", self.http_port), ("gRPC", self.grpc_port), ("metrics", self.metrics_port)):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is fine
                try:
                    s.bind((self.host, port))
                except OSError as exc:
                    raise TritonServerError(f"{what} port {port} on {self.host} is not available: {exc.strerror}") from exc

    def _read_log(self, process: subprocess.Popen, logf) -> None:
        assert process.stdout is not None
        try:
            for raw in iter(process.stdout.readline, b""):
                line = raw.decode("utf-8", errors="replace")
                self._log.append(line)
                if logf:
                    logf.write(line)
                    logf.flush()
                if self.log_callback:
                    try:
                        self.log_callback(line)
                    except Exception:  # a broken sink must not stop log draining (the pipe would fill)
                        pass
        finally:
            process.stdout.close()
            if logf:
                logf.close()

    def _get(self, path: str, timeout: float = 1.0) -> int:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}{path}", timeout=timeout) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, OSError):
            return 0

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._process is None or self._process.poll() is not None:
                self._join_reader()
                code = None if self._process is None else self._process.returncode
                raise TritonServerError(self._failure_message(f"tritonserver exited with code {code} before it was ready"))
            if self._get(HEALTH_READY) == 200:
                return
            if time.monotonic() > deadline:
                raise TritonServerError(self._failure_message(f"tritonserver not ready after {timeout:.0f}s"))
            time.sleep(0.2)

    def _join_reader(self, timeout: float = 5.0) -> None:
        if self._reader is not None:
            self._reader.join(timeout)

    def _failure_message(self, headline: str) -> str:
        reasons = failure_reasons(self._log)
        if reasons:
            return headline + ": " + "; ".join(reasons)
        tail = "".join(list(self._log)[-15:]).strip()
        return headline + (f"; last log lines:\n{tail}" if tail else "")

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGINT (graceful: drains in-flight requests), then SIGTERM, then SIGKILL of the group."""
        proc = self._process
        if proc is None:
            return None
        timeout = self.exit_timeout + 10.0 if timeout is None else timeout
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if proc.poll() is not None:
                break
            try:
                if sig == signal.SIGKILL:
                    os.killpg(proc.pid, sig)  # stubs too: the server is its session's leader
                else:
                    proc.send_signal(sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        self._join_reader()
        if proc.poll() is not None:
            self._remove_shm_regions()
        return proc.returncode

    def _remove_shm_regions(self) -> None:
        """A server killed with SIGKILL (or by the OOM killer) cannot unlink its Python-backend
        regions in /dev/shm, which is RAM; they carry this server's unique prefix, so remove them."""
        for region in Path("/dev/shm").glob(f"{self._shm_prefix}*"):
            region.unlink(missing_ok=True)

    def __enter__(self) -> TritonServer:
        if not self.is_running():
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self):  # last resort: never leave an orphan server behind
        try:
            if self.is_running():
                self.stop(timeout=5.0)
        except Exception:
            pass
