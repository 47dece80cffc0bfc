"""One exported ONNX graph run with onnxruntime on the CPU (used by the CPU model repository's
Python-backend wrappers and by the in-process reference in the tests)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .feeds import conform

__all__ = ["OnnxRunner"]

_ORT_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(int16)": np.int16,
}


class OnnxRunner:
    """An onnxruntime session that takes Triton-shaped tensors by name.

    `memory_arena=False` for a long-lived process that should not keep the buffers of the largest
    input it saw (ONNX Runtime's arena never shrinks).

    Triton gives batch-only inputs (ONNX shape `(B,)`, e.g. `table_scale`) the shape `(B, 1)`
    (config dims [1]); such inputs are squeezed to the graph's rank here.
    """

    def __init__(self, path: str | Path, intra_op_threads: int = 0,
                 providers: tuple[str, ...] = ("CPUExecutionProvider",), memory_arena: bool = True):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(intra_op_threads)  # 0: one per physical core
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_cpu_mem_arena = memory_arena  # off: every call's buffers go back after it
        self.path = Path(path)
        self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=list(providers))
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _adapt(self, name: str, value: np.ndarray) -> np.ndarray:
        spec = self.inputs[name]
        return conform(value, len(spec.shape), _ORT_TO_NUMPY.get(spec.type))

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = set(self.inputs) - set(feeds)
        if missing:
            raise ValueError(f"{self.path.name}: missing inputs {sorted(missing)}")
        adapted = {name: self._adapt(name, feeds[name]) for name in self.inputs}
        return dict(zip(self.output_names, self.session.run(self.output_names, adapted)))

    def release_memory(self) -> None:
        """Nothing to do: ONNX Runtime's memory arena has no per-session release (the same method as
        `OpenVinoRunner`'s, so callers need not ask which runner they hold)."""
