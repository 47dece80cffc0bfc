"""What this CPU computes natively, from the flags Linux lists in /proc/cpuinfo.

OpenVINO and PyTorch pick bf16 kernels only where the CPU has them (AVX-512 BF16 on AMD Zen 4,
AMX on Intel Xeons since Sapphire Rapids), and their results differ in the last bit between those
kernels, so runtimes, training and every results file ask here.
"""
from __future__ import annotations

from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# Flags that mean native bf16 arithmetic.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# The vector extensions that decide which kernels run (recorded beside the CPU model in results).
VECTOR_EXTENSIONS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_flags(cpuinfo: Path | None = None) -> set[str]:
    """The first processor's flags; empty where there is no procfs (not Linux)."""
    try:
        with open(cpuinfo or CPUINFO, encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def has_native_bf16(flags: set[str]) -> bool:
    return bool(NATIVE_BF16_FLAGS & flags)


def vector_extensions(flags: set[str] | None = None) -> list[str]:
    """Which of `VECTOR_EXTENSIONS` this CPU has, in that order (e.g. ['avx2', 'avx512f', 'avx512_bf16'])."""
    flags = cpu_flags() if flags is None else flags
    return [name for name in VECTOR_EXTENSIONS if name in flags]
