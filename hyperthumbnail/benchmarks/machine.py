"""Where a benchmark ran: every results file names its machine, software and load, because a
2-core box shared with a training run gives different numbers than an idle one."""
from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import psutil

from ..cpu import vector_extensions


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """CPU model and vector extensions, cores, memory, load and the versions that decide the timings."""
    return {
        "cpu_model": cpu_model(),
        "cpu_vector_extensions": vector_extensions(),  # bf16/AMX kernels differ per CPU (hyperthumbnail.cpu)
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in ("onnxruntime", "openvino", "torch", "numpy", "pillow", "tritonclient",
                                              "nvidia-pytriton")},
    }


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
