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
                 cache_dir: str | Path | None = None, f32_tail: bool = False):
        import openvino as ov

        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"graph not found: {self.path}")
        self.precision = precision
        config = {
            "PERFORMANCE_HINT": "LATENCY",  # one request at a time, all cores on it
            "INFERENCE_NUM_THREADS": int(intra_op_threads),  # 0: OpenVINO's choice (physical cores)
        }
        if cache_dir is not None:  # compiled blobs keyed by graph + config: faster restarts
            config["CACHE_DIR"] = str(cache_dir)
        core = ov.Core()
        model = core.read_model(str(self.path))
        if f32_tail and precision == "bf16":
            # The network in bf16, what follows its residual (the bicubic base, the sum, the clamp and
            # the colour/DCT transforms) in f32: in bf16 a pixel of 0-255 keeps 8 significant bits, so
            # the DCT's coefficients move by up to ~5 (docs/benchmarks.md, "Runtimes").
            body, tail = split_at_residual(model, core.read_model(str(self.path)))
            self.stages = [core.compile_model(body, "CPU", {**config, "INFERENCE_PRECISION_HINT": "bf16"}),
                           core.compile_model(tail, "CPU", {**config, "INFERENCE_PRECISION_HINT": "f32"})]
        else:
            self.stages = [core.compile_model(model, "CPU", {**config, "INFERENCE_PRECISION_HINT": precision})]
        self.requests = [stage.create_infer_request() for stage in self.stages]
        self.inputs = {p.get_any_name(): p for p in self.stages[0].inputs}
        self.output_names = [p.get_any_name() for p in self.stages[-1].outputs]

    @property
    def compiled_precision(self) -> str:
        """The precision OpenVINO compiled the network with ('f32', 'bf16'), as it reports it."""
        return self.stages[0].get_property("INFERENCE_PRECISION_HINT").get_type_name()

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
        results = self.requests[0].infer(adapted, share_inputs=True, share_outputs=False)
        if len(self.stages) == 2:  # the f32 tail: the same inputs and the body's residual
            residual = results[self.stages[0].outputs[0]]
            results = self.requests[1].infer({**adapted, RESIDUAL: residual}, share_inputs=True, share_outputs=False)
        return {port.get_any_name(): results[port] for port in self.stages[-1].outputs}

    def release_memory(self) -> None:
        """Give back what the last call left allocated: OpenVINO keeps a call's intermediate and
        output buffers for the next one (~0.7 GiB after a 163x192-block decoder_features tile)."""
        self.requests = [stage.create_infer_request() for stage in self.stages]  # the old ones held the last outputs
        for stage in self.stages:
            stage.release_memory()


RESIDUAL = "residual"  # the tail model's extra input: the body's output


def split_at_residual(model, copy) -> tuple:
    """(body, tail) of an encoder graph `model`: the body maps the inputs to the residual that the
    network adds to the bicubic base; the tail (built from `copy`, a second read of the same file)
    takes the inputs plus that residual and gives the graph's outputs.

    The sum is the Add nearest the outputs whose two inputs both come from convolutions (later Adds
    add constants: the colour transform's offsets); of the two, the residual is the input behind more
    convolutions (the network, not the few of the bicubic base). No op names are assumed.
    """
    import openvino as ov

    def summand(m) -> tuple:
        frontier, seen = [r.input(0).get_source_output().get_node() for r in m.get_results()], set()
        while frontier:  # breadth-first from the outputs
            op = frontier.pop(0)
            if op.get_name() in seen:
                continue
            seen.add(op.get_name())
            if op.get_type_name() == "Add":
                convs = [_convolutions_behind(op.input(i).get_source_output().get_node()) for i in range(2)]
                if min(convs) > 0:
                    return op, convs.index(max(convs))
            frontier.extend(i.get_source_output().get_node() for i in op.inputs())
        raise ValueError(f"{m.get_friendly_name()}: no sum of two convolution branches to split at (not an encoder graph)")

    add, i = summand(model)
    body = ov.Model([add.input(i).get_source_output()], model.get_parameters(), "body")
    add, i = summand(copy)
    residual = ov.opset13.parameter(add.input(i).get_partial_shape(), add.input(i).get_element_type(), name=RESIDUAL)
    residual.output(0).get_tensor().set_names({RESIDUAL})
    add.input(i).replace_source_output(residual.output(0))
    return body, ov.Model(copy.outputs, [*copy.get_parameters(), residual], "tail")


def _convolutions_behind(node) -> int:
    seen, stack, count = set(), [node], 0
    while stack:
        op = stack.pop()
        if op.get_name() in seen:  # unique per node (Python wrappers are not)
            continue
        seen.add(op.get_name())
        count += op.get_type_name() in ("Convolution", "GroupConvolution")
        stack.extend(i.get_source_output().get_node() for i in op.inputs())
    return count
