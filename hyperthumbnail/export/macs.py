"""Multiply-accumulate count of an ONNX graph at concrete input shapes (the paper's GMACs column).

Counts Conv, ConvTranspose, MatMul, Gemm and Einsum; elementwise ops, Resize and reshapes are
free by the usual convention. Shapes come from ONNX Runtime's symbolic shape inference after
the inputs are made static: plain `onnx.shape_inference` cannot follow the Shape -> arithmetic
-> Reshape chains the exporter emits for dynamic sizes and leaves most conv outputs unknown.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import onnx
from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

COUNTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum")


def _with_static_inputs(model: onnx.ModelProto, input_shapes: dict[str, Sequence[int]]) -> onnx.ModelProto:
    graph_inputs = {v.name for v in model.graph.input}
    unknown = set(input_shapes) - graph_inputs
    missing = graph_inputs - set(input_shapes) - {t.name for t in model.graph.initializer}
    if unknown or missing:
        raise ValueError(f"input shapes: unknown {sorted(unknown)}, missing {sorted(missing)}")
    del model.graph.value_info[:]  # the exporter's symbolic annotations would pin symbols
    for value in model.graph.input:
        if value.name in input_shapes:
            shape = value.type.tensor_type.shape
            shape.ClearField("dim")
            for size in input_shapes[value.name]:
                shape.dim.add().dim_value = int(size)
    for value in model.graph.output:
        value.type.tensor_type.ClearField("shape")
    return model


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    return shapes


def _node_macs(node: onnx.NodeProto, shapes: dict[str, list[int]], attrs: dict) -> int:
    def shape(name: str) -> list[int]:
        if name not in shapes:
            raise ValueError(f"{node.op_type} node {node.name!r}: shape of {name!r} unknown after inference")
        return shapes[name]

    if node.op_type == "Conv":  # each output element: Cin/groups * kh * kw products
        weight = shape(node.input[1])
        return math.prod(shape(node.output[0])) * math.prod(weight[1:])
    if node.op_type == "ConvTranspose":  # each input element scatters into Cout/groups * kh * kw
        weight = shape(node.input[1])  # (Cin, Cout/groups, kh, kw)
        return math.prod(shape(node.input[0])) * math.prod(weight[1:])
    if node.op_type == "MatMul":  # output elements times the contracted length
        return math.prod(shape(node.output[0])) * shape(node.input[0])[-1]
    if node.op_type == "Gemm":
        a = shape(node.input[0])
        k = a[0] if attrs.get("transA", 0) else a[1]
        return math.prod(shape(node.output[0])) * k
    # Einsum: one product per point of the joint index space (pairwise contractions here).
    lhs = attrs["equation"].decode().replace(" ", "").split("->")[0].split(",")
    sizes: dict[str, int] = {}
    for letters, name in zip(lhs, node.input):
        sizes.update(zip(letters, shape(name)))
    return math.prod(sizes.values())


def count_macs(onnx_path: str | Path | onnx.ModelProto, input_shapes: dict[str, Sequence[int]]) -> dict:
    """-> {"total": MACs, "by_op": {op_type: MACs}} for the graph run at `input_shapes`."""
    model = onnx_path if isinstance(onnx_path, onnx.ModelProto) else onnx.load(str(onnx_path))
    model = _with_static_inputs(onnx.ModelProto.FromString(model.SerializeToString()), input_shapes)
    shapes = _shapes(SymbolicShapeInference.infer_shapes(model))
    by_op: dict[str, int] = defaultdict(int)
    for node in model.graph.node:
        if node.op_type in COUNTED_OPS:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            by_op[node.op_type] += _node_macs(node, shapes, attrs)
    return {"total": sum(by_op.values()), "by_op": dict(by_op)}


def decoder_gmacs_6k(onnx_path: str | Path, scale: int = 4) -> dict[str, float]:
    """Decoder GMACs for a 6144x4096 output, landscape and portrait (the paper's 6K setting)."""
    block = 8 * scale
    model = onnx.load(str(onnx_path))
    result = {}
    for label, (width, height) in {"6144x4096": (6144, 4096), "4096x6144": (4096, 6144)}.items():
        grid = (height // block, width // block)
        macs = count_macs(model, {"quantized": (1, 3, 64, *grid), "tables": (1, 2, 64)})
        result[label] = macs["total"] / 1e9
    return result
