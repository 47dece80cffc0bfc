"""Triton Python-backend models of the CPU model repository (`model_repository/*/1/model.py`
import their `TritonPythonModel` from here, so the logic lives in the package and is shared
with the in-process pipeline through `steps`).

Only importable inside a Python-backend stub (it needs `triton_python_backend_utils`).

Every model answers each request on its own: a request that fails (bad bytes, too large, wrong
shape) gets an error response carrying the message, and the other requests that Triton's
dynamic batcher put in the same `execute` call are served normally.
"""
from __future__ import annotations

import ctypes
import json
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from ..codec import steps
from ..metrics import bpp
from ..ratecontrol import search_analyzed
from ..runtime.graphs import default_body_whole_pixels, run_decoder, run_encoder
from ..runtime.select import EXACT_GRAPHS, graph_precisions, graph_runtime, make_runner
from ..runtime.tiling import DEFAULT_FEATURE_TILE_BLOCKS, DEFAULT_TILE_PIXELS

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return None


class _PythonModel:
    """Config parsing and the per-request loop; subclasses implement `run(inputs) -> outputs`.

    A stub lives as long as the server, so it must not keep the largest photo's buffers: glibc
    raises its mmap threshold after each large free (up to 32 MiB), after which buffers of a few
    MiB come from the heap and stay there. A fixed 1 MiB threshold gives every larger buffer back
    to the OS when it is freed, and `malloc_trim` after each batch returns the heap's free tail.
    """

    def initialize(self, args: dict) -> None:
        self.libc = _libc()
        if self.libc is not None:
            self.libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)
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

    def graph_file(self, name: str) -> Path:
        """`1/<name>` of this model, which the repository builder puts there."""
        path = self.version_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: build the repository with "
                                    "`hyperthumbnail serve` or hyperthumbnail.serving.repository.build_repository")
        return path

    def param_int(self, key: str, default: int) -> int:
        value = self.params.get(key, "")
        return int(value) if value.strip() else default

    def param_list(self, key: str) -> tuple[str, ...] | None:
        """A comma-separated parameter; None when it is empty or absent."""
        values = tuple(v.strip() for v in self.params.get(key, "").split(",") if v.strip())
        return values or None

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
        responses = self.respond(requests)
        self.release()
        if self.libc is not None:
            self.libc.malloc_trim(0)
        return responses

    def release(self) -> None:
        """After each batch: give back what the graph runtimes keep for the next call (subclasses)."""

    def respond(self, requests) -> list:
        responses = []
        for request in requests:
            try:
                responses.append(self.response(self.run(self.inputs_of(request))))
            except Exception as exc:  # one request's failure is that request's error, nothing more
                responses.append(self.error(exc))
        return responses

    def finalize(self) -> None:
        pass


def table_scales(model: _PythonModel, inputs: dict[str, np.ndarray], batch: int) -> np.ndarray:
    """The request's optional TABLE_SCALE (B, 1) checked, else the `table_scale` parameter (1.0)."""
    if "TABLE_SCALE" in inputs:  # optional: the client's rate control
        return steps.check_table_scale(inputs["TABLE_SCALE"], batch)
    return np.full((batch, 1), float(model.params.get("table_scale") or 1.0), dtype=np.float32)


class PreprocessModel(_PythonModel):
    """NGC targets only. IMAGE uint8 (B, H, W, 3) [+ optional TABLE_SCALE (B, 1)] -> IMAGE_PADDED
    uint8 (B, H', W', 3) edge-padded, HR_SIZE (B, 2), TABLE_SCALE (B, 1)."""

    def setup(self) -> None:
        self.scale = self.param_int("scale", 4)
        self.max_pixels = self.param_int("max_pixels", steps.DEFAULT_MAX_PIXELS)

    def run(self, inputs):
        image, hr_size = steps.pad_batch(inputs["IMAGE"], self.scale, self.max_pixels)
        return {"IMAGE_PADDED": image, "HR_SIZE": hr_size, "TABLE_SCALE": table_scales(self, inputs, len(image))}


class PostprocessModel(_PythonModel):
    """NGC targets only. IMAGE_PADDED uint8 (B, H', W', 3) + HR_SIZE (B, 2) -> IMAGE uint8
    (B, H, W, 3) cropped to (W, H)."""

    def run(self, inputs):
        return {"IMAGE": steps.crop_batch(inputs["IMAGE_PADDED"], inputs["HR_SIZE"])}


class JpegEncodeModel(_PythonModel):
    """QUANTIZED int32 + TABLES int32 + HR_SIZE [+ ICC_PROFILE, EXIF (B, 1) bytes] -> THUMBNAIL (B, 1)
    .jpg bytes (Huffman coding; the metadata as APP2/APP1 segments)."""

    def setup(self) -> None:
        self.scale = self.param_int("scale", 4)
        self.model_id = self.params.get("model_id") or None

    def run(self, inputs):
        thumbnails = steps.encode_thumbnail_batch(inputs["QUANTIZED"], inputs["TABLES"], inputs["HR_SIZE"], self.scale,
                                                  self.model_id)
        if "ICC_PROFILE" in inputs or "EXIF" in inputs:  # optional: the photo's metadata
            thumbnails = steps.attach_metadata_batch(thumbnails, inputs.get("ICC_PROFILE"), inputs.get("EXIF"),
                                                     inputs["HR_SIZE"])
        return {"THUMBNAIL": thumbnails}


class JpegDecodeModel(_PythonModel):
    """THUMBNAIL (B, 1) .jpg bytes -> QUANTIZED int32, TABLES int32, HR_SIZE int32, ICC_PROFILE and
    EXIF (B, 1) bytes (b"" where the thumbnail has none)."""

    def setup(self) -> None:
        self.scale = self.param_int("scale", 4)
        self.max_pixels = self.param_int("max_pixels", steps.DEFAULT_MAX_PIXELS)
        self.served_models = self.param_list("served_models")

    def run(self, inputs):
        quantized, tables, hr_size = steps.decode_thumbnail_batch(inputs["THUMBNAIL"], self.scale, self.max_pixels,
                                                                  self.served_models)
        icc_profile, exif = steps.metadata_batch(inputs["THUMBNAIL"])
        return {"QUANTIZED": quantized, "TABLES": tables, "HR_SIZE": hr_size, "ICC_PROFILE": icc_profile, "EXIF": exif}


class EncodeAtBppModel(_PythonModel):
    """IMAGE uint8 (B, H, W, 3) + TARGET_BPP (B, 1) [+ TOLERANCE (B, 1)] -> THUMBNAIL (B, 1),
    TABLE_SCALE (B, 1) (the scale found), BPP (B, 1) (of the file returned).

    Server-side rate control: the same search as `hyperthumbnail.ratecontrol.encode_at_bpp`, in
    one request. An ensemble cannot loop, so this Python model calls the `encoder` once and the
    `qpm` once per probe through BLS (business logic scripting: the neural models stay where the
    repository put them), and does the padding and Huffman coding itself with the functions the
    encoder and `jpeg_encode` run (the encoder gets the padded photo: it pads nothing more).
    Out-of-reach targets return the closest file; BPP says where it landed.
    """

    def setup(self) -> None:
        self.scale = self.param_int("scale", 4)
        self.max_pixels = self.param_int("max_pixels", steps.DEFAULT_MAX_PIXELS)
        self.model_id = self.params.get("model_id") or None
        self.default_tolerance = float(self.params.get("tolerance") or 0.03)

    def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        """One BLS call; the outputs come back as numpy arrays in CPU memory."""
        kwargs = {}
        if hasattr(pb_utils, "PreferredMemory"):  # GPU models: ask for host memory (numpy needs it)
            kwargs["preferred_memory"] = pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)
        request = pb_utils.InferenceRequest(model_name=model, requested_output_names=outputs,
                                            inputs=[pb_utils.Tensor(k, v) for k, v in inputs.items()], **kwargs)
        response = request.exec()
        if response.has_error():
            raise RuntimeError(f"{model}: {response.error().message()}")
        return {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in outputs}

    def encode_one(self, image: np.ndarray, target_bpp: float, tolerance: float) -> tuple[bytes, float]:
        coefficients, hr_size = self.analyze(image)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # out of reach: the closest file; BPP tells the client
            return search_analyzed(self, coefficients, hr_size, target_bpp, tolerance)

    # The ratecontrol.TwoStageEncoder protocol, on the served models.
    def analyze(self, image: np.ndarray, max_pixels: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
        padded, hr_size = steps.pad_photo(image, self.scale, max_pixels or self.max_pixels)
        return self.infer("encoder", {"image": padded[None]}, ["coefficients"])["coefficients"][0], hr_size

    def quantize_and_write(self, coefficients: np.ndarray, hr_size: tuple[int, int], table_scale: float = 1.0) -> bytes:
        out = self.infer("qpm", {"coefficients": coefficients[None],
                                 "table_scale": np.array([[table_scale]], np.float32)}, ["quantized", "tables"])
        return steps.encode_thumbnail(out["quantized"][0], out["tables"][0], hr_size, self.scale, self.model_id)

    def write_with_tables(self, coefficients: np.ndarray, hr_size: tuple[int, int], tables: np.ndarray) -> bytes:
        return steps.encode_thumbnail(steps.quantize_with_tables(coefficients, tables), tables, hr_size, self.scale,
                                      self.model_id)

    def run(self, inputs):
        images = np.asarray(inputs["IMAGE"])
        batch = len(images)
        targets = steps.check_positive(inputs["TARGET_BPP"], batch, "TARGET_BPP")
        tolerances = (steps.check_positive(inputs["TOLERANCE"], batch, "TOLERANCE") if "TOLERANCE" in inputs
                      else np.full((batch, 1), self.default_tolerance, np.float32))
        if np.any(tolerances >= 1):
            raise steps.StepError(f"TOLERANCE must be below 1 (a fraction), got {tolerances.ravel().tolist()}")
        files, scales, rates = [], [], []
        for image, target, tolerance in zip(images, targets[:, 0], tolerances[:, 0]):
            data, table_scale = self.encode_one(image, float(target), float(tolerance))
            files.append(data)
            scales.append(table_scale)
            rates.append(bpp(len(data), image.shape[1], image.shape[0]))
        return {"THUMBNAIL": np.array(files, dtype=np.object_).reshape(-1, 1),
                "TABLE_SCALE": np.array(scales, np.float32).reshape(-1, 1),
                "BPP": np.array(rates, np.float32).reshape(-1, 1)}


def graph_runner(model: _PythonModel, path: Path, graph: str):
    """The runner for one graph file, as the config's `runtime` / `precision` parameters say
    (default openvino / auto, like the in-process pipeline)."""
    runtime = model.params.get("runtime") or "openvino"
    precision = graph_precisions(runtime, model.params.get("precision") or "auto", names=(graph,))[graph]
    # The QPM runs on ONNX Runtime under every runtime; without the arena it gives its buffers back
    # after each call instead of keeping the largest photo's (360 MiB at 48 MP) for good.
    return make_runner(path, graph_runtime(runtime, graph), precision, model.param_int("intra_op_threads", 0),
                       memory_arena=graph not in EXACT_GRAPHS, graph=graph)


class DecoderModel(_PythonModel):
    """quantized + tables + HR_SIZE -> IMAGE uint8 (B, H, W, 3): `1/decoder_features.onnx` (whole up
    to `feature_tile_blocks` blocks, in tiles above), `1/decoder_body.onnx` whole up to
    `body_whole_pixels` HR pixels (default: the runtime's), in tiles of `tile_pixels` above
    (`runtime.graphs.run_decoder`, as the in-process pipeline), one image at a time (a 48 MP image's
    memory is the tiles', whatever the batch), each cropped to its HR size here so the image leaves
    the stub once, at its own size."""

    def setup(self) -> None:
        self.features = graph_runner(self, self.graph_file("decoder_features.onnx"), "decoder_features")
        self.body = graph_runner(self, self.graph_file("decoder_body.onnx"), "decoder_body")
        self.scale = self.param_int("scale", 4)
        self.tile_pixels = self.param_int("tile_pixels", DEFAULT_TILE_PIXELS) or None
        self.feature_tile_blocks = self.param_int("feature_tile_blocks", DEFAULT_FEATURE_TILE_BLOCKS) or None
        self.body_whole_pixels = self.param_int("body_whole_pixels",
                                                default_body_whole_pixels(self.params.get("runtime") or "openvino"))

    def release(self) -> None:
        """OpenVINO keeps a call's buffers for the next one (the tiled path already gives them back):
        a mixed stream would otherwise hold the largest untiled photo's for good (bench soak, #26)."""
        self.features.release_memory()
        self.body.release_memory()

    def run(self, inputs):
        if not len(inputs["quantized"]) == len(inputs["tables"]) == len(inputs["HR_SIZE"]):
            raise steps.StepError("quantized, tables and HR_SIZE differ in batch size")
        images = [steps.crop_image(run_decoder(self.features, self.body, quantized, tables, self.scale,
                                               self.tile_pixels, self.feature_tile_blocks, self.body_whole_pixels),
                                   hr_size)
                  for quantized, tables, hr_size in zip(inputs["quantized"], inputs["tables"], inputs["HR_SIZE"])]
        return {"IMAGE": steps.stack_batch(images, "decoded images")}


class EncoderModel(_PythonModel):
    """image uint8 (B, H, W, 3), the photo [+ optional TABLE_SCALE (B, 1)] -> coefficients
    (B, 3, 64, h, w), HR_SIZE (B, 2), TABLE_SCALE (B, 1): each photo edge-padded here
    (`steps.pad_photo`; a padded photo pads nothing more) and run through `1/model.onnx` as the
    in-process pipeline does (`runtime.graphs.run_encoder`: float one tile at a time, tiles of
    `tile_pixels` above it, coefficients identical), one photo at a time."""

    def setup(self) -> None:
        self.runner = graph_runner(self, self.graph_file("model.onnx"), self.name)
        self.scale = self.param_int("scale", 4)
        self.max_pixels = self.param_int("max_pixels", steps.DEFAULT_MAX_PIXELS)
        self.tile_pixels = self.param_int("tile_pixels", DEFAULT_TILE_PIXELS) or None

    def release(self) -> None:
        """As DecoderModel.release."""
        self.runner.release_memory()

    def run(self, inputs):
        images = np.asarray(inputs["image"])
        if images.ndim != 4:
            raise steps.StepError(f"expected a (batch, H, W, 3) image tensor, got shape {images.shape}")
        coefficients, sizes = [], []
        for image in images:
            padded, hr_size = steps.pad_photo(image, self.scale, self.max_pixels)
            coefficients.append(run_encoder(self.runner, padded, self.scale, self.tile_pixels))
            sizes.append(hr_size)
            del padded  # before the next photo's copy
        return {"coefficients": np.stack(coefficients), "HR_SIZE": np.array(sizes, dtype=np.int32).reshape(-1, 2),
                "TABLE_SCALE": table_scales(self, inputs, len(images))}


class OnnxModel(_PythonModel):
    """An exported graph (`1/model.onnx`, the QPM) on onnxruntime; tensor names are the graph's.

    Requests whose inputs have the same shapes are concatenated into one onnxruntime call, so the
    dynamic batcher's batches become real batches; if a merged call fails, the requests are rerun
    one by one so the failure lands only on the request that caused it. A batch is cut into calls
    of at most `call_max_bytes` of input (parameter; default steps.DEFAULT_CALL_MAX_BYTES), so
    concurrent large images never multiply the memory one call needs.
    """

    def setup(self) -> None:
        self.runner = graph_runner(self, self.graph_file(self.params.get("onnx_file") or "model.onnx"), self.name)
        self.call_max_bytes = self.param_int("call_max_bytes", steps.DEFAULT_CALL_MAX_BYTES)

    def run(self, inputs):
        batch = len(next(iter(inputs.values())))
        item_bytes = sum(v.nbytes for v in inputs.values()) // max(1, batch)
        parts = [self.runner.run({k: v[part] for k, v in inputs.items()})
                 for part in steps.batch_slices(batch, item_bytes, self.call_max_bytes)]
        if len(parts) == 1:  # the usual case: no copy
            return {name: parts[0][name] for name in self.output_dtypes}
        return {name: np.concatenate([p[name] for p in parts]) for name in self.output_dtypes}

    def respond(self, requests):
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
