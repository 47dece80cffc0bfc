"""Run the real `tritonserver` (2.51) shipped inside the `nvidia-pytriton` wheel as a subprocess.

The wheel carries the server binary, the Python backend and one Python-backend stub per Python
version, but it is laid out for PyTriton, not for a hand-written model repository. To use it:

* the runtime dir gets `bin/`, `caches/` and the Python backend (symlinked from the wheel) plus
  the stub matching this interpreter (`python_backend_stubs/3.X/triton_python_backend_stub`)
  copied into `backends/python/`;
* `LD_LIBRARY_PATH` holds this interpreter's `LIBDIR` (so the stub links *our* libpython, not the
  distribution's) and the wheel's `nvidia_pytriton.libs` (the server's vendored libraries);
* the stub embeds Python without a program path, so Python looks up `python3` on `PATH` to find
  its prefix: putting this venv's `bin/` first on `PATH` makes the stub start inside the venv
  (its site-packages, numpy, onnxruntime, `hyperthumbnail`).
* every server gets its own Python-backend shared-memory prefix so several servers (tests, a
  demo, a user's `serve`) can run on one machine without clobbering each other's /dev/shm regions.
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .object_store import is_remote

__all__ = [
    "TritonServer",
    "TritonServerError",
    "TritonRuntime",
    "find_tritonserver_dist",
    "prepare_runtime",
    "free_port",
]

# Log lines that are errors on a CPU-only machine but harmless (the wheel's server probes CUDA).
_BENIGN_ERRORS = ("CudaDriverHelper has not been initialized",
                  "CUDA driver version is insufficient for CUDA runtime version")  # ensembles probe for a CUDA stream
_GLOG_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ [^\]]+\] (.*)$")


class TritonServerError(RuntimeError):
    """The server could not be prepared, did not start, or a model failed to load."""


@dataclass(frozen=True)
class TritonRuntime:
    """A prepared directory from which the wheel's tritonserver runs, and the environment it needs."""

    root: Path
    binary: Path
    backend_dir: Path
    cache_dir: Path
    env: dict[str, str] = field(repr=False)


def find_tritonserver_dist() -> Path:
    """`pytriton/tritonserver` inside the installed nvidia-pytriton wheel."""
    try:
        import pytriton
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise TritonServerError("nvidia-pytriton is not installed (pip install nvidia-pytriton)") from exc
    dist = Path(pytriton.__file__).resolve().parent / "tritonserver"
    if not (dist / "bin" / "tritonserver").is_file():
        raise TritonServerError(f"no tritonserver binary in the nvidia-pytriton wheel at {dist}")
    return dist


def _wheel_libs(dist: Path) -> Path:
    # Wheel install: site-packages/nvidia_pytriton.libs; editable install: tritonserver/external_libs.
    for candidate in (dist.parent.parent / "nvidia_pytriton.libs", dist / "external_libs"):
        if candidate.is_dir():
            return candidate
    raise TritonServerError(f"cannot find nvidia_pytriton.libs next to {dist}")


def _python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _python_libdir() -> Path:
    libdir = Path(sysconfig.get_config_var("LIBDIR") or "")
    soname = f"libpython{_python_version()}.so.1.0"
    if not (libdir / soname).exists():
        raise TritonServerError(
            f"{soname} not found in this interpreter's LIBDIR ({libdir}); the Python-backend stub "
            "links libpython dynamically, so use a Python built with --enable-shared"
        )
    return libdir


def _project_root() -> Path:
    """The directory holding the `hyperthumbnail` package (on the stub's PYTHONPATH)."""
    return Path(__file__).resolve().parents[2]


def server_environment(dist: Path | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for tritonserver and its Python-backend stubs (see module docstring)."""
    dist = dist or find_tritonserver_dist()
    env = dict(os.environ if base is None else base)
    libs = [str(_python_libdir()), str(_wheel_libs(dist))]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    bindir = Path(sys.executable).parent  # not resolved: the venv's bin/, where pyvenv.cfg is found
    if not (bindir / "python3").exists():
        raise TritonServerError(f"{bindir} has no python3: the Python-backend stub would not find this venv")
    env["PATH"] = os.pathsep.join([str(bindir), env.get("PATH", "")])
    pythonpath = [str(_project_root())] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    env.pop("PYTHONHOME", None)
    return env


def _default_runtime_dir(dist: Path) -> Path:
    """A per-user cache dir keyed by wheel location and interpreter (temp dir if HOME is read-only)."""
    key = hashlib.sha256(f"{dist}|{sys.executable}|{_python_version()}".encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hyperthumbnail"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        if not os.access(cache, os.W_OK):
            raise PermissionError(cache)
    except OSError:
        cache = Path(tempfile.gettempdir()) / f"hyperthumbnail-{os.getuid()}"
    return cache / f"tritonserver-{key}"


def _runtime_ok(root: Path, stub_src: Path) -> bool:
    needed = [root / "bin" / "tritonserver", root / "backends" / "python" / "libtriton_python.so",
              root / "backends" / "python" / "triton_python_backend_stub"]
    if not all(p.exists() for p in needed):  # exists() follows symlinks: catches a moved wheel
        return False
    stub = root / "backends" / "python" / "triton_python_backend_stub"
    return stub.stat().st_size == stub_src.stat().st_size


def prepare_runtime(runtime_dir: str | Path | None = None) -> TritonRuntime:
    """Lay out the wheel's server with the right stub (idempotent, safe to call concurrently)."""
    dist = find_tritonserver_dist()
    stub_src = dist / "python_backend_stubs" / _python_version() / "triton_python_backend_stub"
    if not stub_src.is_file():
        raise TritonServerError(f"the nvidia-pytriton wheel has no Python-backend stub for Python {_python_version()}")
    root = Path(runtime_dir) if runtime_dir else _default_runtime_dir(dist)
    if not _runtime_ok(root, stub_src):
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
        (tmp / "backends" / "python").mkdir(parents=True)
        (tmp / "bin").symlink_to(dist / "bin")
        (tmp / "caches").symlink_to(dist / "caches")
        for item in (dist / "backends" / "python").iterdir():
            if item.name != "__pycache__":
                (tmp / "backends" / "python" / item.name).symlink_to(item)
        shutil.copy2(stub_src, tmp / "backends" / "python" / "triton_python_backend_stub")
        if root.exists() or root.is_symlink():
            shutil.rmtree(root, ignore_errors=True)
        try:
            tmp.rename(root)
        except OSError:  # another process won the race; use its (identical) layout
            shutil.rmtree(tmp, ignore_errors=True)
    return TritonRuntime(root=root, binary=root / "bin" / "tritonserver", backend_dir=root / "backends",
                         cache_dir=root / "caches", env=server_environment(dist))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (tests start servers on these)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


_STATUS_PREFIX = re.compile(
    r"^(ERROR: Failed to create instance|model '[^']*' UNAVAILABLE|Internal|Invalid argument|Not found|Unavailable)\s*[:-]\s*")
_GENERIC_FAILURES = ("creating server: Internal - failed to load all models",)


def _clean(message: str) -> str:
    """One line: the Python backend logs tracebacks as literal '\\n\\nAt:\\n  file(line): ...'."""
    message = message.split("\\n\\nAt:")[0].split("\n\nAt:")[0]
    return " ".join(message.replace("\\n", " ").split())


def _core(message: str) -> str:
    while True:
        stripped = _STATUS_PREFIX.sub("", message, count=1)
        if stripped == message:
            return message
        message = stripped


def failure_reasons(log_lines: Iterable[str]) -> list[str]:
    """Why a server failed, from its log, most specific first and without repeats: glog error
    lines (model load failures), protobuf parse errors, UNAVAILABLE models, the final error."""
    found: list[str] = []
    for raw in log_lines:
        line = raw.rstrip()
        m = _GLOG_LINE.match(line)
        if m and m.group(1) in "EF":
            msg = m.group(2).strip().strip('"')
        elif line.startswith("[libprotobuf ERROR"):
            msg = line.split("] ", 1)[-1]
        elif line.startswith("|") and "UNAVAILABLE:" in line:
            cells = [c.strip() for c in line.strip("|").split("|")]
            msg = f"model '{cells[0]}' {cells[-1]}"
        elif line.startswith("error: "):
            msg = line[len("error: "):]
        else:
            continue
        msg = _clean(msg)
        if msg and not any(b in msg for b in _BENIGN_ERRORS) and msg not in found:
            found.append(msg)
    # Drop lines that only repeat another line's detail (longest, most specific lines win), and
    # the generic summary when anything more specific is left.
    kept: list[str] = []
    for msg in sorted(found, key=len, reverse=True):
        if not any(_core(msg) in other for other in kept):
            kept.append(msg)
    reasons = [msg for msg in found if msg in kept]
    specific = [r for r in reasons if r not in _GENERIC_FAILURES]
    return specific or reasons


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
        exit_timeout: int = 10,
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
    def _client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host

    @property
    def http_url(self) -> str:
        """host:port as tritonclient.http expects it."""
        return f"{self._client_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self._client_host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._client_host}:{self.metrics_port}/metrics"

    # ----------------------------------------------------------------- process
    def command(self) -> list[str]:
        rt = self.runtime
        assert rt is not None
        cmd = [
            str(rt.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={rt.backend_dir}",
            f"--cache-directory={rt.cache_dir}",
            f"--http-address={self.host}", f"--http-port={self.http_port}",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--disable-auto-complete-config",   # configs are complete; surprises should be errors
            "--strict-readiness=true",
            "--exit-on-error=true",             # a model that fails to load stops the server
            f"--exit-timeout-secs={self.exit_timeout}",  # drain time for in-flight requests on stop
            f"--log-verbose={self.log_verbose}",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
        ]
        if not self.gpu:  # the wheel's server probes CUDA/DCGM; on a CPU machine that is just noise
            cmd += ["--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0",
                    "--cuda-memory-pool-byte-size=0:0"]
        return cmd + self.extra_args

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

    def start(self, timeout: float = 180.0) -> "TritonServer":
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
            if self._get("/v2/health/ready") == 200:
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

    def __enter__(self) -> "TritonServer":
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
