"""The CPU pods' memory request/limit and `/dev/shm` size, derived from committed measurements;
write them into the Helm chart and the KServe runtime, or (--check) fail when they drifted apart.

Inputs (committed results, not typed-in numbers):

* `benchmarks/results/soak.json` (`hyperthumbnail bench soak`): the most one replica's tree
  (tritonserver + Python-backend stubs, summed PSS) held during a long mixed stream with 50 MP
  photos, at `CHART_CONCURRENCY` requests in flight, after its memory levelled off
  (`memory.peak_per_replica_bytes`), and the most /dev/shm one replica held.
* `benchmarks/results/bigphoto.json`: the largest photo's input tensor (its size), for the
  requests that wait in Triton's queue with their input held (`QUEUED_ALLOWANCE` of them).

    memory = round_up(peak_per_replica + QUEUED_ALLOWANCE x largest_input, 1 GiB) x (1 + HEADROOM), to GiB
    shm    = round_up(shm_peak_per_replica x SHM_FACTOR, 256 MiB)

requests = limits (Guaranteed QoS). The reasoning is in docs/kubernetes.md ("Memory").
`make chart-sync` writes them; `tests/test_chart_sizing.py` fails when the chart and the
results disagree.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOAK = ROOT / "benchmarks" / "results" / "soak.json"
BIGPHOTO = ROOT / "benchmarks" / "results" / "bigphoto.json"
VALUES = ROOT / "deploy" / "helm" / "hyperthumbnail" / "values.yaml"
KSERVE = ROOT / "deploy" / "kserve" / "servingruntime.yaml"

CHART_CONCURRENCY = 2      # requests executing at once in a pod: one encoder and one decoder instance
QUEUED_ALLOWANCE = 8       # largest-photo requests waiting in the queue with their input held
HEADROOM = 0.25            # more cores than measured (per-thread scratch), allocator slack
SHM_FACTOR = 2.0           # /dev/shm: the measured peak, twice
GIB, MIB = 2**30, 2**20


def measured(soak: Path = SOAK, bigphoto: Path = BIGPHOTO) -> dict:
    """The numbers the sizing uses, with where each comes from."""
    result = json.loads(soak.read_text())
    if result.get("concurrency", 0) / max(1, result.get("replicas", 1)) > CHART_CONCURRENCY:
        raise ValueError(f"{soak} ran more requests per replica than the chart's concurrency {CHART_CONCURRENCY}")
    if not result.get("passed"):
        raise ValueError(f"{soak} did not pass its acceptance checks: size nothing from it")
    largest = max(result["mix"], key=lambda c: c["width"] * c["height"])
    big = json.loads(bigphoto.read_text())
    match = re.search(r"(\d+)x(\d+)", big["photo"])
    if not match or (int(match[1]), int(match[2])) != (largest["width"], largest["height"]):
        raise ValueError(f"{bigphoto} is not about the soak's largest size {largest['width']}x{largest['height']}")
    return {"peak_per_replica_bytes": max(result["memory"]["peak_per_replica_bytes"].values()),
            "shm_peak_per_replica_bytes": max(r[4] for _, rs in result["replica_samples"] for r in rs),
            "largest_input_bytes": largest["width"] * largest["height"] * 3,
            "soak_created": result["created"], "soak_minutes": result["minutes"]}


def sizing(numbers: dict) -> dict:
    """Quantities for the chart (Kubernetes strings) from the measured numbers."""
    need = numbers["peak_per_replica_bytes"] + QUEUED_ALLOWANCE * numbers["largest_input_bytes"]
    memory_gib = math.ceil(math.ceil(need / GIB) * (1 + HEADROOM))
    shm_mib = math.ceil(numbers["shm_peak_per_replica_bytes"] * SHM_FACTOR / (256 * MIB)) * 256
    return {"memory": f"{memory_gib}Gi", "shm": f"{shm_mib}Mi"}


# (file, pattern with one group: the quantity) -> which of sizing()'s values it holds
_PLACES = [
    (VALUES, r"(?ms)^resources:\n  requests:\n.*?    memory: (\S+)\n", "memory"),
    (VALUES, r"(?ms)^resources:\n.*?  limits:\n.*?    memory: (\S+)\n", "memory"),
    (VALUES, r"(?m)^shm:\n  sizeLimit: (\S+)\n", "shm"),
    (KSERVE, r"(?ms)      resources:\n        requests:\n.*?          memory: (\S+)\n", "memory"),
    (KSERVE, r"(?ms)      resources:\n.*?        limits:\n.*?          memory: (\S+)\n", "memory"),
    (KSERVE, r"(?ms)- name: dshm\n      emptyDir:\n        medium: Memory\n        sizeLimit: (\S+)\n", "shm"),
]


def differences(wanted: dict) -> list[str]:
    """'file: has X, the measurements give Y' for every place that disagrees."""
    found = []
    for path, pattern, key in _PLACES:
        match = re.search(pattern, path.read_text())
        if match is None:
            found.append(f"{path.relative_to(ROOT)}: no {key} quantity where expected ({pattern!r})")
        elif match.group(1) != wanted[key]:
            found.append(f"{path.relative_to(ROOT)}: {key} is {match.group(1)}, the measurements give {wanted[key]}")
    return found


def write(wanted: dict) -> None:
    for path, pattern, key in _PLACES:
        text = path.read_text()
        match = re.search(pattern, text)
        if match is None:
            raise ValueError(f"{path}: no {key} quantity where expected")
        path.write_text(text[:match.start(1)] + wanted[key] + text[match.end(1):])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the chart disagrees with the measurements")
    args = parser.parse_args(argv)
    numbers = measured()
    wanted = sizing(numbers)
    if args.check:
        wrong = differences(wanted)
        for line in wrong:
            print(f"{line}: run `make chart-sync`", file=sys.stderr)
        return 1 if wrong else 0
    write(wanted)
    print(json.dumps({"measured": numbers, "chart": wanted}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
