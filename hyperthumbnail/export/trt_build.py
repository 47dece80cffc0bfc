"""TensorRT plans for the exported graphs (GPU serving with Triton's `tensorrt_plan` platform).

`tensorrt` is imported lazily: it exists only with an NVIDIA GPU (`pip install 'hyperthumbnail[gpu]'`).
A plan is tied to the TensorRT version and GPU it was built on, so build it with the same
TensorRT as the Triton container that will load it.

Precision: encoder and decoder may run in fp16; the QPM plan is always built in full fp32 (no
TF32) because it rounds twice (tables, then coefficients) and must give the CPU path's integers.
TensorRT 10 enables fp16 with a builder flag; TensorRT 11 removed that flag (strong typing only),
so there the ONNX graph itself is converted to fp16 (float32 inputs/outputs kept) before parsing.
"""
from __future__ import annotations

import ctypes
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx

from ..interface import SERVED_GRAPHS
from .onnx_export import GRAPH_NAMES

MAX_HR_SIDE = 6144  # 6K photos in both orientations: 6144x4096 and 4096x6144
OPT_HR_SIZE = (4096, 6144)  # (height, width) the kernels are tuned for: landscape 6K
DEFAULT_MAX_BATCH = 2  # a 6K encoder batch of 2 already needs several GiB of activations
DEFAULT_WORKSPACE_GIB = 8.0


class GPUUnavailableError(RuntimeError):
    """TensorRT work was asked for where there is no usable NVIDIA GPU or no `tensorrt`."""


def _cuda_problem() -> str | None:
    """Why no CUDA device is usable (None if one is), asked of the driver directly: fast, no deps."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no NVIDIA driver (libcuda.so.1 not found)"
    status = cuda.cuInit(0)
    if status != 0:
        return f"the NVIDIA driver failed to initialise (cuInit error {status})"
    count = ctypes.c_int(0)
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return "no CUDA device visible"
    return None


def require_tensorrt() -> ModuleType:
    """Return the `tensorrt` module, or raise GPUUnavailableError saying everything that is missing."""
    problems = [p for p in [_cuda_problem()] if p]
    try:
        import tensorrt as trt
    except ImportError as exc:
        problems.append(f"the `tensorrt` package is not installed ({exc})")
    if problems:
        raise GPUUnavailableError(
            "TensorRT plans need an NVIDIA GPU and the `tensorrt` package "
            f"(pip install 'hyperthumbnail[gpu]'); missing here: {'; '.join(problems)}"
        )
    return trt


@dataclass(frozen=True)
class ShapeRange:
    """One input's optimization-profile shapes."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def plan_profiles(scale: int = 4, max_batch: int = DEFAULT_MAX_BATCH, max_hr_side: int = MAX_HR_SIDE,
                  opt_hr_size: tuple[int, int] = OPT_HR_SIZE) -> dict[str, dict[str, ShapeRange]]:
    """Per graph, per input: shapes from one 8x8 block up to `max_hr_side` square (so both
    orientations of a 6144x4096 photo fit one profile: a thumbnail block grid up to 192x192 at 4x)."""
    block = 8 * scale
    grid_max = max_hr_side // block
    grid_opt = (opt_hr_size[0] // block, opt_hr_size[1] // block)
    coefficients = ShapeRange((1, 3, 64, 1, 1), (1, 3, 64, *grid_opt), (max_batch, 3, 64, grid_max, grid_max))
    decoder = {"quantized": coefficients, "tables": ShapeRange((1, 2, 64), (1, 2, 64), (max_batch, 2, 64))}
    hr_opt, hr_max = (grid_opt[0] * block, grid_opt[1] * block), grid_max * block
    return {
        "encoder": {"image": ShapeRange((1, 3, block, block), (1, 3, *hr_opt), (max_batch, 3, hr_max, hr_max))},
        "encoder_u8": {"image": ShapeRange((1, block, block, 3), (1, *hr_opt, 3), (max_batch, hr_max, hr_max, 3))},
        "qpm": {"coefficients": coefficients, "table_scale": ShapeRange((1,), (1,), (max_batch,))},
        "decoder": decoder,
        "decoder_u8": decoder,
    }


def fp16_graph(onnx_path: str | Path) -> onnx.ModelProto:
    """An fp16 copy of the graph with float32 inputs/outputs, for TensorRT 11's strong typing.

    onnxconverter-common retypes the tensors but not the targets of Cast nodes (the int32 -> float
    casts of the decoder's inputs), which would then contradict their outputs; point them at fp16.
    """
    from onnxconverter_common import float16  # in the [gpu] extra

    with warnings.catch_warnings():  # it warns for every weight below fp16's smallest normal
        warnings.simplefilter("ignore", UserWarning)
        model = float16.convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.output]}
    for node in model.graph.node:
        if node.op_type == "Cast":
            to = next(a for a in node.attribute if a.name == "to")
            if to.i == onnx.TensorProto.FLOAT and types.get(node.output[0]) == onnx.TensorProto.FLOAT16:
                to.i = onnx.TensorProto.FLOAT16
    return model


def build_plan(onnx_path: str | Path, plan_path: str | Path, profile: dict[str, ShapeRange], fp16: bool = False,
               tf32: bool = True, workspace_gib: float = DEFAULT_WORKSPACE_GIB) -> Path:
    """Parse `onnx_path`, build a serialized engine for `profile` and write it to `plan_path`."""
    trt = require_tensorrt()
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    weak_typing = hasattr(trt.BuilderFlag, "FP16")  # TensorRT 10; 11 is strongly typed only
    # No creation flags: TensorRT 10+ networks are always explicit-batch (the batch is the ONNX
    # graph's first dim), and 11 is always strongly typed.
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if fp16 and not weak_typing:
        parsed = parser.parse(fp16_graph(onnx_path).SerializeToString(), str(onnx_path))
    else:
        parsed = parser.parse_from_file(str(onnx_path))
    if not parsed:
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}:\n{errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if fp16 and weak_typing:
        config.set_flag(trt.BuilderFlag.FP16)
    if not tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    shapes = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        if name not in profile:
            raise ValueError(f"{onnx_path}: no profile shapes for input {name!r}")
        r = profile[name]
        shapes.set_shape(name, r.min, r.opt, r.max)
    config.add_optimization_profile(shapes)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(serialized))
    return plan_path


def build_plans(onnx_dir: str | Path, out_dir: str | Path | None = None, scale: int = 4, fp16: bool = False,
                max_batch: int = DEFAULT_MAX_BATCH, max_hr_side: int = MAX_HR_SIDE,
                opt_hr_size: tuple[int, int] = OPT_HR_SIZE) -> dict[str, Path]:
    """Build `<name>.plan` for each exported graph (next to the ONNX files unless `out_dir`)."""
    onnx_dir = Path(onnx_dir)
    out_dir = Path(out_dir) if out_dir is not None else onnx_dir
    profiles = plan_profiles(scale, max_batch, max_hr_side, opt_hr_size)
    plans = {}
    for name in GRAPH_NAMES:
        exact = name == "qpm"  # rounds to integers: full fp32, see the module docstring
        graph = SERVED_GRAPHS.get(name, name)
        if not (onnx_dir / f"{graph}.onnx").is_file():
            graph = name
        plans[name] = build_plan(onnx_dir / f"{graph}.onnx", out_dir / f"{name}.plan", profiles[graph],
                                 fp16=fp16 and not exact, tf32=not exact)
    return plans


def check_plan(plan: str | Path, onnx_path: str | Path, inputs: dict[str, np.ndarray]) -> dict[str, float]:
    """Run the plan (TensorRT) and the ONNX graph (ONNX Runtime, CPU) on `inputs`;
    -> max |TensorRT - ONNX Runtime| per output."""
    require_tensorrt()
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    with TrtRunner(EngineFromBytes(Path(plan).read_bytes())) as runner:
        got = runner.infer(feed_dict=inputs)
    with OnnxrtRunner(SessionFromOnnx(str(onnx_path), providers=["CPUExecutionProvider"])) as runner:
        want = runner.infer(feed_dict=inputs)
    return {name: float(np.abs(np.asarray(got[name], np.float64) - want[name]).max()) for name in want}
