"""Triton Python-backend models of the CPU model repository (`model_repository/*/1/model.py`
import their `TritonPythonModel` from here, so the logic lives in the package and is shared
with the in-process pipeline through `steps`).

Only importable inside a Python-backend stub (it needs `triton_python_backend_utils`).

Every model answers each request on its own: a request that fails (bad bytes, too large, wrong
shape) gets an error response carrying the message, and the other requests that Triton's
dynamic batcher put in the same `execute` call are served normally.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from . import steps
from .onnx_runner import OnnxRunner


class _PythonModel:
    """Config parsing and the per-request loop; subclasses implement `run(inputs) -> outputs`."""

    def initialize(self, args: dict) -> None:
        self.model_config = json.loads(args["model_config"])
        self.name = args["model_name"]
        self.version_dir = Path(args["model_repository"]) / args["model_version"]
        self.params = {k: v.get("string_value", "") for k, v in self.model_config.get("parameters", {}).items()}
        self.input_names = [i["name"] for i in self.model_config["input"]]
        self.output_dtypes = {o["name"]: pb_utils.triton_string_to_numpy(o["data_type"])
                              for o in self.model_config["output"]}
        self.setup()

    def setup(self) -> None:
        """Per-model initialisation after the config is parsed."""

    def param_int(self, key: str, default: int) -> int:
        value = self.params.get(key, "")
        return int(value) if value.strip() else default

    def inputs_of(self, request) -> dict[str, np.ndarray]:
        """The request's tensors by name; an optional input the request left out is absent."""
        tensors = {name: pb_utils.get_input_tensor_by_name(request, name) for name in self.input_names}
        return {name: tensor.as_numpy() for name, tensor in tensors.items() if tensor is not None}

    def response(self, outputs: dict[str, np.ndarray]):
        tensors = [pb_utils.Tensor(name, np.ascontiguousarray(value, dtype=self.output_dtypes[name]))
                   for name, value in outputs.items()]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def error(self, exc: Exception):
        """An error response: the client's fault (StepError) is INVALID_ARG (HTTP 400), else INTERNAL."""
        if isinstance(exc, steps.StepError):
            code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
            detail = str(exc)
        else:
            code = getattr(pb_utils.TritonError, "INTERNAL", None)
            detail = f"{type(exc).__name__}: {exc}"
        message = f"{self.name}: {detail}"
        error = pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message)
        return pb_utils.InferenceResponse(error=error)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self.response(self.run(self.inputs_of(request))))
            except Exception as exc:  # one request's failure is that request's error, nothing more
                responses.append(self.error(exc))
        return responses

    def finalize(self) -> None:
        pass


class PreprocessModel(_PythonModel):
    """IMAGE uint8 (B, H, W, 3) [+ optional TABLE_SCALE (B, 1)] -> IMAGE_F32 (B, 3, H', W') padded,
    HR_SIZE (B, 2), TABLE_SCALE (B, 1) (the `table_scale` parameter where the request has none)."""

    def setup(self) -> None:
        self.scale = self.param_int("scale", 4)
        self.max_pixels = self.param_int("max_pixels", steps.DEFAULT_MAX_PIXELS)
        self.table_scale = float(self.params.get("table_scale") or 1.0)

    def run(self, inputs):
        image, hr_size = steps.preprocess_batch(inputs["IMAGE"], self.scale, self.max_pixels)
        if "TABLE_SCALE" in inputs:  # optional: the client's rate control
            table_scale = steps.check_table_scale(inputs["TABLE_SCALE"], len(image))
        else:
            table_scale = np.full((len(image), 1), self.table_scale, dtype=np.float32)
        return {"IMAGE_F32": image, "HR_SIZE": hr_size, "TABLE_SCALE": table_scale}


class PostprocessModel(_PythonModel):
    """IMAGE_F32 (B, 3, H', W') + HR_SIZE (B, 2) -> IMAGE uint8 (B, H, W, 3) cropped to (W, H)."""

    def run(self, inputs):
        return {"IMAGE": steps.postprocess_batch(inputs["IMAGE_F32"], inputs["HR_SIZE"])}


class JpegEncodeModel(_PythonModel):
    """QUANTIZED int32 + TABLES int32 + HR_SIZE -> THUMBNAIL (B, 1) .jpg bytes (Huffman coding)."""

    def setup(self) -> None:
        self.scale = self.param_int("scale", 4)

    def run(self, inputs):
        return {"THUMBNAIL": steps.encode_thumbnail_batch(inputs["QUANTIZED"], inputs["TABLES"],
                                                          inputs["HR_SIZE"], self.scale)}


class JpegDecodeModel(_PythonModel):
    """THUMBNAIL (B, 1) .jpg bytes -> QUANTIZED int32, TABLES int32, HR_SIZE int32."""

    def setup(self) -> None:
        self.scale = self.param_int("scale", 4)
        self.max_pixels = self.param_int("max_pixels", steps.DEFAULT_MAX_PIXELS)

    def run(self, inputs):
        quantized, tables, hr_size = steps.decode_thumbnail_batch(inputs["THUMBNAIL"], self.scale, self.max_pixels)
        return {"QUANTIZED": quantized, "TABLES": tables, "HR_SIZE": hr_size}


class OnnxModel(_PythonModel):
    """An exported graph (`1/model.onnx`) on onnxruntime; tensor names are the graph's.

    Requests whose inputs have the same shapes are concatenated into one onnxruntime call, so the
    dynamic batcher's batches become real batches; if a merged call fails, the requests are rerun
    one by one so the failure lands only on the request that caused it. A batch is cut into calls
    of at most `call_max_bytes` of input (parameter; default steps.DEFAULT_CALL_MAX_BYTES), so
    concurrent large images never multiply the memory one call needs.
    """

    def setup(self) -> None:
        path = self.version_dir / (self.params.get("onnx_file") or "model.onnx")
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: build the repository with "
                                    "`hyperthumbnail serve` or hyperthumbnail.serving.repository.build_repository")
        self.runner = OnnxRunner(path, intra_op_threads=self.param_int("intra_op_threads", 0))
        self.call_max_bytes = self.param_int("call_max_bytes", steps.DEFAULT_CALL_MAX_BYTES)

    def run(self, inputs):
        batch = len(next(iter(inputs.values())))
        item_bytes = sum(v.nbytes for v in inputs.values()) // max(1, batch)
        parts = [self.runner.run({k: v[part] for k, v in inputs.items()})
                 for part in steps.batch_slices(batch, item_bytes, self.call_max_bytes)]
        if len(parts) == 1:  # the usual case: no copy
            return {name: parts[0][name] for name in self.output_dtypes}
        return {name: np.concatenate([p[name] for p in parts]) for name in self.output_dtypes}

    def execute(self, requests):
        responses: list = [None] * len(requests)
        groups: dict[tuple, list[tuple[int, dict]]] = defaultdict(list)
        for index, request in enumerate(requests):
            try:
                inputs = self.inputs_of(request)
            except Exception as exc:
                responses[index] = self.error(exc)
                continue
            groups[tuple(v.shape[1:] for v in inputs.values())].append((index, inputs))
        for members in groups.values():
            if len(members) > 1:
                try:
                    merged = {name: np.concatenate([m[1][name] for m in members]) for name in self.input_names}
                    outputs = self.run(merged)
                    start = 0
                    for index, inputs in members:
                        size = len(next(iter(inputs.values())))
                        responses[index] = self.response({k: v[start:start + size] for k, v in outputs.items()})
                        start += size
                    continue
                except Exception:
                    pass  # isolate the culprit below
            for index, inputs in members:
                try:
                    responses[index] = self.response(self.run(inputs))
                except Exception as exc:
                    responses[index] = self.error(exc)
        return responses
