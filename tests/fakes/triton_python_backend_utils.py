"""A fake of `triton_python_backend_utils`, the module the Python-backend stub provides: just
the calls `hyperthumbnail.serving.backends` makes, so its model classes run in plain pytest.

BLS calls (`InferenceRequest(...).exec()`) go to `bls_handler(model_name, inputs) -> outputs`,
which a test sets (e.g. to ONNX Runtime sessions of the exported graphs).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

_NUMPY = {"TYPE_BOOL": np.bool_, "TYPE_UINT8": np.uint8, "TYPE_INT16": np.int16, "TYPE_INT32": np.int32,
          "TYPE_INT64": np.int64, "TYPE_FP16": np.float16, "TYPE_FP32": np.float32, "TYPE_FP64": np.float64,
          "TYPE_STRING": np.object_}

bls_handler: Callable[[str, dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None


def triton_string_to_numpy(data_type: str):
    return _NUMPY[data_type]


class Tensor:
    def __init__(self, name: str, array: np.ndarray):
        self._name, self._array = name, np.asarray(array)

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class TritonError:
    INTERNAL, INVALID_ARG = "INTERNAL", "INVALID_ARG"

    def __init__(self, message: str, code: str | None = None):
        self._message, self.code = message, code

    def message(self) -> str:
        return self._message


class InferenceResponse:
    def __init__(self, output_tensors: list[Tensor] | None = None, error: TritonError | None = None):
        self._tensors = {t.name(): t for t in output_tensors or []}
        self._error = error

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error

    def output_tensors(self) -> list[Tensor]:
        return list(self._tensors.values())


class Request:
    """What Triton hands `execute`: named input tensors (an optional input may be absent)."""

    def __init__(self, **inputs: np.ndarray):
        self.tensors = {name: Tensor(name, value) for name, value in inputs.items()}


class InferenceRequest:
    """A BLS request; `exec()` answers through `bls_handler`."""

    def __init__(self, model_name: str, requested_output_names: list[str], inputs: list[Tensor], **_):
        self.model_name, self.outputs, self.inputs = model_name, requested_output_names, inputs

    def exec(self) -> InferenceResponse:
        if bls_handler is None:
            raise RuntimeError("the test set no bls_handler")
        outputs = bls_handler(self.model_name, {t.name(): t.as_numpy() for t in self.inputs})
        return InferenceResponse([Tensor(n, outputs[n]) for n in self.outputs])


def get_input_tensor_by_name(request: Request, name: str) -> Tensor | None:
    return request.tensors.get(name)


def get_output_tensor_by_name(response: InferenceResponse, name: str) -> Tensor | None:
    return response._tensors.get(name)
