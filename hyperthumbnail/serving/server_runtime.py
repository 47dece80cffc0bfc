"""Lay out the real `tritonserver` (2.51) shipped inside the `nvidia-pytriton` wheel so it runs
our model repository, and the environment it needs (`server_process` starts it).

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
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .server_flags import SERVER_ENV

__all__ = ["TritonRuntime", "TritonServerError", "find_tritonserver_dist", "prepare_runtime", "server_environment"]


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
    for name, value in SERVER_ENV.items():  # the caller's own setting wins
        env.setdefault(name, value)
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

