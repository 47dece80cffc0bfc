"""Export the model's neural stages to ONNX (CPU and GPU serving) and TensorRT plans (GPU).

`export_onnx` writes encoder.onnx, qpm.onnx, decoder.onnx and manifest.json; `build_plans` turns
them into TensorRT plans where a GPU and `tensorrt` exist; `compare_with_torch`/`check_plan`
check them against PyTorch / ONNX Runtime; `count_macs` measures their cost.
"""
from .macs import count_macs, decoder_gmacs_6k
from .onnx_export import (
    DEFAULT_OPSET,
    GRAPH_IO,
    GRAPH_NAMES,
    MANIFEST_NAME,
    TensorSpec,
    export_graph,
    export_onnx,
    load_export_model,
    validate_onnx,
    write_manifest,
)
from .parity import OnnxGraphs, ParityResult, compare_with_torch, sample_images
from .trt_build import (
    GPUUnavailableError,
    ShapeRange,
    build_plan,
    build_plans,
    check_plan,
    fp16_graph,
    plan_profiles,
    require_tensorrt,
)

__all__ = [
    "DEFAULT_OPSET", "GRAPH_IO", "GRAPH_NAMES", "MANIFEST_NAME", "TensorSpec",
    "export_graph", "export_onnx", "load_export_model", "validate_onnx", "write_manifest",
    "OnnxGraphs", "ParityResult", "compare_with_torch", "sample_images",
    "GPUUnavailableError", "ShapeRange", "build_plan", "build_plans", "check_plan", "fp16_graph", "plan_profiles",
    "require_tensorrt",
    "count_macs", "decoder_gmacs_6k",
]
