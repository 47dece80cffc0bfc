"""One exported ONNX graph run with OpenVINO on the CPU.

Same shape as `OnnxRunner`: Triton-shaped tensors in by name, a dict of numpy outputs back.
OpenVINO reads the ONNX file directly (no conversion step to keep in sync with the export).

Precision: "f32" or "bf16" (`INFERENCE_PRECISION_HINT`). bf16 runs the convolutions on the
CPU's native bf16 units (AVX-512 BF16, AMX) with f32 accumulation; without them OpenVINO would
emulate it slowly, so `resolve_precision("auto" | "bf16", ...)` gives "f32" on such a CPU.
OpenVINO's own default on a bf16 CPU is bf16, so the hint is always set explicitly.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np

from ..cpu import cpu_flags, has_native_bf16
from .feeds import conform

__all__ = ["OpenVinoRunner", "Precision", "PRECISIONS", "cpu_has_native_bf16", "resolve_precision"]

Precision = Literal["f32", "bf16"]
PRECISIONS: tuple[str, ...] = ("f32", "bf16")
# Set to 0 to act as a CPU without native bf16 (tests of the f32 fallback; a user's override).
BF16_ENV = "HYPERTHUMBNAIL_NATIVE_BF16"


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 natively (and `HYPERTHUMBNAIL_NATIVE_BF16` is not 0).

    The CPU flags decide where /proc/cpuinfo exists; elsewhere OpenVINO's own capability list.
    """
    override = os.environ.get(BF16_ENV, "").strip()
    if override in ("0", "1"):
        return override == "1"
    flags = cpu_flags()
    if flags:
        return has_native_bf16(flags)
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def resolve_precision(requested: str, preferred: Precision = "f32") -> Precision:
    """'auto' -> `preferred` (the measured choice for a graph); bf16 -> f32 without native bf16."""
    if requested == "auto":
        requested = preferred
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; use one of auto, {', '.join(PRECISIONS)}")
    if requested == "bf16" and not cpu_has_native_bf16():
        return "f32"
    return requested  # type: ignore[return-value]


_OV_TO_NUMPY = {
    "f32": np.float32,
    "f16": np.float16,
    "i32": np.int32,
    "i64": np.int64,
    "u8": np.uint8,
    "i16": np.int16,
}


class OpenVinoRunner:
    """An OpenVINO CPU model compiled from an ONNX file, taking Triton-shaped tensors by name.

    Triton gives batch-only inputs (ONNX shape `(B,)`, e.g. `table_scale`) the shape `(B, 1)`;
    such inputs are squeezed to the graph's rank here, as `OnnxRunner` does.
    """

    def __init__(self, path: str | Path, intra_op_threads: int = 0, precision: Precision = "f32",
                 cache_dir: str | Path | None = None):
        import openvino as ov

        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"graph not found: {self.path}")
        self.precision = precision
        config = {
            "INFERENCE_PRECISION_HINT": precision,
            "PERFORMANCE_HINT": "LATENCY",  # one request at a time, all cores on it
            "INFERENCE_NUM_THREADS": int(intra_op_threads),  # 0: OpenVINO's choice (physical cores)
        }
        if cache_dir is not None:  # compiled blobs keyed by graph + config: faster restarts
            config["CACHE_DIR"] = str(cache_dir)
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(self.path)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.inputs = {p.get_any_name(): p for p in self.compiled.inputs}
        self.output_names = [p.get_any_name() for p in self.compiled.outputs]

    @property
    def compiled_precision(self) -> str:
        """The precision OpenVINO compiled with ('f32', 'bf16'), as it reports it."""
        return self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()

    def _adapt(self, name: str, value: np.ndarray) -> np.ndarray:
        port = self.inputs[name]
        return conform(value, port.get_partial_shape().rank.get_length(),
                       _OV_TO_NUMPY.get(port.get_element_type().get_type_name()))

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = set(self.inputs) - set(feeds)
        if missing:
            raise ValueError(f"{self.path.name}: missing inputs {sorted(missing)}")
        adapted = {name: self._adapt(name, feeds[name]) for name in self.inputs}
        # share_inputs: no copy of a large image into OpenVINO's buffer. share_outputs stays False:
        # the request's output buffers are reused by the next call, so OpenVINO hands back copies
        # (owned numpy arrays; copying them again cost ~0.3 s of a 20 MP decode).
        results = self.request.infer(adapted, share_inputs=True, share_outputs=False)
        return {port.get_any_name(): results[port] for port in self.compiled.outputs}

    def release_memory(self) -> None:
        """Give back what the last call left allocated: OpenVINO keeps a call's intermediate and
        output buffers for the next one (~0.7 GiB after a 163x192-block decoder_features tile)."""
        self.request = self.compiled.create_infer_request()  # the old one held the last outputs
        self.compiled.release_memory()
