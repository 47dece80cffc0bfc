"""One measurement of `bench speed`, run in its own process so that its peak RSS belongs to that
stage alone.

The peak is the kernel's high-water mark of this process's resident set (`VmHWM` in
/proc/self/status), reset right before the timed runs (writing 5 to /proc/self/clear_refs), so it
covers the loaded model plus the work of one run, not import or export transients.
`getrusage().ru_maxrss` would not do: Linux carries it across fork and exec, so a child
reports at least its parent's peak.

    python -m hyperthumbnail.benchmarks.speed_worker SPEC.json RESULT.json

SPEC names the stage, the runtime variant (runtime + precision) and where its files lie: the
resolution's folder `workdir` (input.npy, decode_input.jpg: the thumbnail every variant decodes,
the EDSR files) and the variant's folder `variant_dir` (its in-process thumbnail.jpg and
decoded.npy, which the Triton stages of the same variant must reproduce). Every stage first
makes a reference output through the public path (Pipeline.encode/decode, the client SDK),
which is also the first warm-up run; the timed runs then split the same work into named steps
and must reproduce that output exactly. RESULT holds the per-run step times (ms), the RSS before
the timed runs and the peak RSS, plus stage-specific facts (server statistics, byte equality).
Stage `peak_rate` instead times the compute-floor probe (`compute_floor.peak_rates`).
"""
from __future__ import annotations

import json
import re
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from ..codec import steps
from ..interface import DECODE_MODEL, ENCODE_MODEL


class StepTimer:
    """Wall time per named step of one run, in ms."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - start) * 1e3


class Stage(ABC):
    """`reference()` through the public API; `once(timer)` the same work step by step."""

    extra: dict[str, Any]

    @abstractmethod
    def reference(self) -> Any: ...

    @abstractmethod
    def once(self, timer: StepTimer) -> Any: ...

    def same(self, a: Any, b: Any) -> bool:
        return bool(np.array_equal(a, b)) if isinstance(a, np.ndarray) else a == b

    def begin(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Right before the timed runs."""

    def finish(self, output: Any) -> None:  # noqa: B027 - optional hook, empty by default
        """After the timed runs (e.g. save the output for the next stage)."""


def _pipeline(spec: dict):
    from ..pipeline import Pipeline

    # The variant's runtime and precision, as in the repository its Triton paths are measured on.
    return Pipeline(spec["weights"], runtime=spec["runtime"], precision=spec["precision"], threads=spec["threads"])


class InProcessEncode(Stage):
    def __init__(self, spec: dict, work: Path):
        self.p = _pipeline(spec)
        self.image = np.load(work / "input.npy")
        self.out = Path(spec["variant_dir"])
        self.extra = {"graphs": self.p.describe()}

    def reference(self) -> bytes:
        return self.p.encode(self.image)

    def once(self, timer: StepTimer) -> bytes:
        g = self.p.graph_set
        with timer("preprocess"):
            padded, hr_size = steps.pad_photo(self.image, self.p.scale)
        with timer("encoder"):  # tiled; each tile converted to float inside
            coef = g.coefficients(padded)
        with timer("qpm"):
            quantized, tables = g.quantize(coef)
        with timer("entropy_coding"):
            return steps.encode_thumbnail(quantized, tables, hr_size, self.p.scale, self.p.model_id)

    def finish(self, output: bytes) -> None:
        (self.out / "thumbnail.jpg").write_bytes(output)
        self.extra["thumbnail_bytes"] = len(output)


class InProcessDecode(Stage):
    def __init__(self, spec: dict, work: Path):
        self.p = _pipeline(spec)
        self.data = (work / "decode_input.jpg").read_bytes()
        self.out = Path(spec["variant_dir"])
        self.extra = {"graphs": self.p.describe()}

    def reference(self) -> np.ndarray:
        return self.p.decode(self.data)

    def once(self, timer: StepTimer) -> np.ndarray:
        with timer("entropy_coding"):
            quantized, tables, hr_size = steps.decode_thumbnail(self.data, self.p.scale, served_models=self.p.served_models)
        with timer("decoder"):  # features + tiled body, ends in uint8
            image = self.p.graph_set.reconstruct(quantized, tables)
        with timer("postprocess"):
            return steps.crop_image(image, hr_size)

    def finish(self, output: np.ndarray) -> None:
        np.save(self.out / "decoded.npy", output)


class EDSRDecode(Stage):
    """Bicubic thumbnail as a plain JPEG -> Pillow decode -> EDSR (ONNX Runtime) -> uint8, cropped."""

    def __init__(self, spec: dict, work: Path):
        from ..runtime.onnx import OnnxRunner

        self.runner = OnnxRunner(work / "edsr.onnx", intra_op_threads=spec["threads"])
        self.data = (work / "edsr_lr.jpg").read_bytes()
        self.hr_size = tuple(spec["hr_size"])
        self.extra = {}

    def reference(self) -> np.ndarray:
        return self.once(StepTimer())

    def once(self, timer: StepTimer) -> np.ndarray:
        from .jpeg import decode_jpeg

        with timer("jpeg_decode"):
            lr = decode_jpeg(self.data)
        with timer("preprocess"):
            chw = np.ascontiguousarray(lr.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)
        with timer("edsr"):
            hr = self.runner.run({"lr": chw[None]})["hr"][0]
        with timer("postprocess"):
            return steps.postprocess(hr, self.hr_size)


def _stats(client) -> dict[str, dict[str, int]]:
    """Cumulative per-model inference statistics: {model: {success/queue/compute_*: ns, count}}."""
    out = {}
    for m in client.get_inference_statistics()["model_stats"]:
        s = m["inference_stats"]
        out[m["name"]] = {k: int(s[k]["ns"]) for k in ("success", "queue", "compute_input", "compute_infer", "compute_output")}
        out[m["name"]]["count"] = int(s["success"]["count"])
    return out


def _settled_stats(client) -> dict:
    """Triton records an ensemble's statistics just after it answers, so a read right after a
    request can miss it: read until two consecutive reads agree (at most ~2 s)."""
    import time

    previous = _stats(client)
    for _ in range(40):
        time.sleep(0.05)
        current = _stats(client)
        if current == previous:
            return current
        previous = current
    return previous


class TritonStage(Stage):
    """One ensemble through the client SDK; server-side time per step from Triton's statistics."""

    def __init__(self, spec: dict, work: Path, direction: str):
        import tritonclient.http

        from ..client import HyperThumbnailClient

        protocol = spec["protocol"]
        url = spec["grpc_url"] if protocol == "grpc" else spec["http_url"]
        self.client = HyperThumbnailClient(url, protocol="grpc" if protocol == "grpc" else "http",
                                           use_shm=protocol == "shm", timeout_s=1200)
        self.stats_client = tritonclient.http.InferenceServerClient(spec["http_url"])
        self.direction = direction
        self.ensemble = ENCODE_MODEL if direction == "encode" else DECODE_MODEL
        config = self.stats_client.get_model_config(self.ensemble)
        self.composing = [s["model_name"] for s in config["ensemble_scheduling"]["step"]]
        # The in-process output of the same variant (runtime + precision) on the same input.
        variant_dir = Path(spec["variant_dir"])
        if direction == "encode":
            self.payload = np.load(work / "input.npy")
            self.expected = (variant_dir / "thumbnail.jpg").read_bytes()
        else:
            self.payload = (work / "decode_input.jpg").read_bytes()
            self.expected = np.load(variant_dir / "decoded.npy")
        self.extra = {"composing_models": self.composing}
        self.before: dict = {}

    def call(self) -> Any:
        return self.client.encode(self.payload) if self.direction == "encode" else self.client.decode(self.payload)

    def reference(self) -> Any:
        return self.call()

    def begin(self) -> None:
        self.before = _settled_stats(self.stats_client)

    def once(self, timer: StepTimer) -> Any:
        with timer("request"):
            return self.call()

    def finish(self, output: Any) -> None:
        after = _settled_stats(self.stats_client)
        delta = {m: {k: after[m][k] - self.before.get(m, {}).get(k, 0) for k in after[m]}
                 for m in [self.ensemble, *self.composing]}
        n = max(delta[self.ensemble]["count"], 1)
        self.extra.update({
            "server_requests": delta[self.ensemble]["count"],
            "server_request_ms": delta[self.ensemble]["success"] / n / 1e6,
            "server_compute_ms": {m: (delta[m]["compute_input"] + delta[m]["compute_infer"]
                                      + delta[m]["compute_output"]) / n / 1e6 for m in self.composing},
            "server_queue_ms": {m: delta[m]["queue"] / n / 1e6 for m in self.composing},
            "equal_to_inprocess": self.same(output, self.expected),
        })
        self.client.close()
        self.stats_client.close()


def peak_rss_mb() -> float:
    return int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())[1]) / 1024


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


STAGES: dict[str, Callable[[dict, Path], Stage]] = {
    "inprocess_encode": InProcessEncode,
    "inprocess_decode": InProcessDecode,
    "edsr_decode": EDSRDecode,
    "triton_encode": lambda spec, work: TritonStage(spec, work, "encode"),
    "triton_decode": lambda spec, work: TritonStage(spec, work, "decode"),
}


def measure(spec: dict) -> dict:
    if spec["stage"] == "peak_rate":
        from .compute_floor import peak_rates

        return peak_rates([tuple(e) for e in spec["engines"]], spec["threads"], spec["repeats"])
    work = Path(spec["workdir"])
    stage = STAGES[spec["stage"]](spec, work)
    reference = stage.reference()  # also the first warm-up run
    for _ in range(max(spec["warmup"] - 1, 0)):
        stage.once(StepTimer())
    rss_before = psutil.Process().memory_info().rss
    reset_peak_rss()
    stage.begin()
    runs, output = [], None
    for _ in range(spec["repeats"]):
        timer = StepTimer()
        output = stage.once(timer)
        runs.append(timer.ms)
    if not stage.same(output, reference):
        raise RuntimeError(f"{spec['stage']}: the timed runs do not reproduce the public API's output")
    stage.finish(output)
    return {
        "runs_ms": runs,
        "rss_before_mb": rss_before / 2**20,
        "peak_rss_mb": peak_rss_mb(),
        **stage.extra,
    }


def main(argv: list[str]) -> int:
    spec_path, result_path = argv
    result = measure(json.loads(Path(spec_path).read_text()))
    Path(result_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
