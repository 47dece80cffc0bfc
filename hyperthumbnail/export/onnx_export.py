"""Export the three neural stages (encoder, QPM, decoder) to ONNX with dynamic batch/height/width.

Serving splits `HyperThumbnail.encode` into encoder and QPM graphs so Triton can run them as
separate ensemble steps (and so rate control, `table_scale`, is a plain input). Integer tensors
are int32 (TensorRT has no int16); the CPU pipeline's int16/uint8 are the same values.

The torch.export-based exporter is used: the legacy TorchScript one cannot export the bicubic
downscaler's per-channel kernel (`repeat` by a traced channel count) with dynamic axes.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from torch import nn

from ..model import HyperThumbnail
from ..model.dct import image_to_coefficients
from .fold import FoldedDecoderBody

DEFAULT_OPSET = 18  # the torch.export exporter's native opset; TensorRT 10 parses up to 22
GRAPH_NAMES = ("encoder", "qpm", "decoder")
# The decoder split in two for tiling (runtime/tiling.py): the coefficient branch and the body's
# head conv (`Decoder.head_features`) have a receptive field of ~36 blocks, the rest of the body
# only ~36 LR pixels, so mostly the body is tiled. Both end as the
# deployed image does: uint8 HWC (clamp, x255, round half to even inside the graph).
SPLIT_DECODER_NAMES = ("decoder_features", "decoder_body")
# The graphs that end in the decoder body, whose bicubic skip export folds (fold.py).
SKIP_GRAPHS = ("decoder", "decoder_u8", "decoder_body")
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output; string dims are dynamic (named as in the ONNX file)."""

    name: str
    dtype: str  # numpy dtype name
    shape: tuple[int | str, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


_COEF_SHAPE = ("batch", 3, 64, "grid_height", "grid_width")
_TABLES_SHAPE = ("batch", 2, 64)
# The interface of each graph; `grid_*` is the 8x8-block grid of the thumbnail (HR / (8*scale)).
GRAPH_IO: dict[str, tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]] = {
    "encoder": (
        (TensorSpec("image", "float32", ("batch", 3, "height", "width")),),
        (TensorSpec("coefficients", "float32", _COEF_SHAPE),),
    ),
    "encoder_u8": (
        (TensorSpec("image", "uint8", ("batch", "height", "width", 3)),),
        (TensorSpec("coefficients", "float32", _COEF_SHAPE),),
    ),
    "qpm": (
        (TensorSpec("coefficients", "float32", _COEF_SHAPE), TensorSpec("table_scale", "float32", ("batch",))),
        (TensorSpec("quantized", "int32", _COEF_SHAPE), TensorSpec("tables", "int32", _TABLES_SHAPE)),
    ),
    "decoder": (
        (TensorSpec("quantized", "int32", _COEF_SHAPE), TensorSpec("tables", "int32", _TABLES_SHAPE)),
        (TensorSpec("image", "float32", ("batch", 3, "out_height", "out_width")),),
    ),
    "decoder_u8": (
        (TensorSpec("quantized", "int32", _COEF_SHAPE), TensorSpec("tables", "int32", _TABLES_SHAPE)),
        (TensorSpec("image", "uint8", ("batch", "out_height", "out_width", 3)),),
    ),
    "decoder_features": (
        (TensorSpec("quantized", "int32", _COEF_SHAPE), TensorSpec("tables", "int32", _TABLES_SHAPE)),
        (TensorSpec("features", "float32", ("batch", "feature_channels", "lr_height", "lr_width")),),
    ),
    "decoder_body": (
        (TensorSpec("features", "float32", ("batch", "feature_channels", "lr_height", "lr_width")),),
        (TensorSpec("image", "uint8", ("batch", "out_height", "out_width", 3)),),
    ),
}


class EncoderGraph(nn.Module):
    """image (B,3,H,W) in [0,1] -> unquantized DCT coefficients of the thumbnail."""

    def __init__(self, model: HyperThumbnail):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image_to_coefficients(self.model.encoder(image))


class EncoderU8Graph(nn.Module):
    """image (B,H,W,3) uint8, padded -> unquantized DCT coefficients: the float conversion inside
    the graph (the NGC targets' native backends), so only the uint8 photo travels to it."""

    def __init__(self, model: HyperThumbnail):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        chw = image.permute(0, 3, 1, 2).to(torch.float32) / 255.0  # as runtime.tiling.encode_tiled
        return image_to_coefficients(self.model.encoder(chw))


class QPMGraph(nn.Module):
    """coefficients + per-image table scale -> quantized coefficients and tables (int32).

    Always applies `table_scale`: at 1.0 that is a no-op on the already-integer tables, the same
    result `HyperThumbnail.encode` gives when it skips the scaling.
    """

    def __init__(self, model: HyperThumbnail):
        super().__init__()
        self.model = model

    def forward(self, coefficients: torch.Tensor, table_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, tables = self.model.quantize(coefficients, table_scale)
        return q.to(torch.int32), tables.to(torch.int32)


class _ReadableBody(nn.Module):
    """The model's own body: bicubic skip at full resolution (for comparisons)."""

    def __init__(self, model: HyperThumbnail):
        super().__init__()
        self.decoder = model.decoder

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.decoder.body_from_head_features(features)

    def uint8_hwc(self, features: torch.Tensor) -> torch.Tensor:
        return to_uint8_hwc(self(features).clamp(0.0, 1.0))


def body_module(model: HyperThumbnail, fold_skip: bool = True) -> FoldedDecoderBody | _ReadableBody:
    """The decoder body as exported: the bicubic skip folded into the LR tail (default), or the
    model's readable full-resolution form (`bench fold` measures one against the other). Both
    give the float image (`forward`) and the uint8 HWC one (`uint8_hwc`)."""
    return FoldedDecoderBody(model.decoder) if fold_skip else _ReadableBody(model)


class DecoderGraph(nn.Module):
    """quantized (int32) + tables (int32) -> HR image in [0,1] (the body with its bicubic skip
    folded into the LR tail, `fold.py`: what every decoder graph exports)."""

    def __init__(self, model: HyperThumbnail, fold_skip: bool = True):
        super().__init__()
        self.model = model
        self.body = body_module(model, fold_skip)

    def forward(self, quantized: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
        return self.body(self.model.decoder.head_features(quantized.float(), tables.float())).clamp(0.0, 1.0)


def to_uint8_hwc(image: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) in [0,1] (already clamped) -> (B,H,W,3) uint8: x255, round half to even.

    The same float32 arithmetic as `steps.postprocess` (multiply, rint), so pixels are equal.
    """
    return torch.round(image * 255.0).to(torch.uint8).permute(0, 2, 3, 1)


class DecoderU8Graph(DecoderGraph):
    """quantized (int32) + tables (int32) -> HR image, uint8 HWC (no float HR image leaves)."""

    def forward(self, quantized: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
        return self.body.uint8_hwc(self.model.decoder.head_features(quantized.float(), tables.float()))


class DecoderFeaturesGraph(nn.Module):
    """quantized + tables -> the decoder body's input at LR: [JPEG thumbnail in two parts (6), the
    body's head conv (decoder_feats)] (B, 6 + decoder_feats, 8h, 8w), `Decoder.head_features`. The
    head runs here, in f32, because bf16 would round the float thumbnail it reads (model/decoder.py)."""

    def __init__(self, model: HyperThumbnail):
        super().__init__()
        self.model = model

    def forward(self, quantized: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
        return self.model.decoder.head_features(quantized.float(), tables.float())


class DecoderBodyGraph(nn.Module):
    """LR features (any crop of them) -> HR image uint8 HWC of that crop (bicubic skip folded)."""

    def __init__(self, model: HyperThumbnail, fold_skip: bool = True):
        super().__init__()
        self.body = body_module(model, fold_skip)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.body.uint8_hwc(features)


def _example_inputs(model: HyperThumbnail, name: str) -> tuple[torch.Tensor, ...]:
    """Batch 2 and a 5x4 block grid: sizes 0/1 would be specialised away by torch.export."""
    grid_h, grid_w = 5, 4
    gen = torch.Generator().manual_seed(0)  # leave the caller's RNG state alone
    image = torch.rand(2, 3, grid_h * model.block, grid_w * model.block, generator=gen)
    coefficients = image_to_coefficients(torch.rand(2, 3, grid_h * 8, grid_w * 8, generator=gen))
    device = next(model.parameters()).device
    if name == "encoder":
        return (image.to(device),)
    if name == "encoder_u8":
        return ((image * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().to(device),)
    if name == "qpm":
        return coefficients.to(device), torch.ones(2, device=device)
    q, tables = model.encode(image.to(device))
    if name == "decoder_body":
        return (model.decoder.head_features(q.float(), tables.float()),)
    return q.to(torch.int32), tables.to(torch.int32)


# Named in the specs but fixed by the model's config (6 + decoder_feats), not by the input.
_MODEL_FIXED_DIMS = frozenset({"feature_channels"})


def _dynamic_shapes(name: str) -> dict[str, dict[int, str]]:
    inputs, _ = GRAPH_IO[name]
    return {t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str) and d not in _MODEL_FIXED_DIMS}
            for t in inputs}


_GRAPH_MODULES = {"encoder": EncoderGraph, "encoder_u8": EncoderU8Graph, "qpm": QPMGraph, "decoder": DecoderGraph,
                  "decoder_u8": DecoderU8Graph,
                  "decoder_features": DecoderFeaturesGraph, "decoder_body": DecoderBodyGraph}


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """The exporter narrates each stage on stdout and warns about things that do not apply here
    (torchvision ops, training mode of the wrapper); keep the CLI's output readable."""
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", (UserWarning, FutureWarning, DeprecationWarning))
            yield
    finally:
        onnx_logger.setLevel(level)


def _name_output_dims(proto: onnx.ModelProto, name: str) -> None:
    """The exporter names output dims by expressions such as '(height//32)'; use the spec's names."""
    _, outputs = GRAPH_IO[name]
    for value, spec in zip(proto.graph.output, outputs):
        for dim, want in zip(value.type.tensor_type.shape.dim, spec.shape):
            if isinstance(want, str):
                dim.dim_param = want


def validate_onnx(path: str | Path) -> None:
    """The checks every exported file must pass (raises on failure)."""
    onnx.checker.check_model(str(path), full_check=True)
    onnx.shape_inference.infer_shapes(onnx.load(str(path)), strict_mode=True)


def export_graph(model: HyperThumbnail, name: str, path: str | Path, opset: int = DEFAULT_OPSET,
                 fold_skip: bool = True) -> Path:
    """Export one of `GRAPH_NAMES` to `path` and validate it (`fold_skip=False`: a decoder graph
    with the readable full-resolution bicubic skip, for comparisons only)."""
    if name not in _GRAPH_MODULES:
        raise ValueError(f"unknown graph {name!r}; expected one of {tuple(_GRAPH_MODULES)}")
    if not fold_skip and name not in SKIP_GRAPHS:
        raise ValueError(f"graph {name!r} has no bicubic skip to leave unfolded; only {SKIP_GRAPHS} do")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs, outputs = GRAPH_IO[name]
    with _eval_mode(model), torch.no_grad(), quiet_exporter():
        args = _example_inputs(model, name)
        module = _GRAPH_MODULES[name](model, **({} if fold_skip else {"fold_skip": False}))
        program = torch.onnx.export(
            module.eval(), args, dynamo=True, opset_version=opset,
            input_names=[t.name for t in inputs], output_names=[t.name for t in outputs],
            dynamic_shapes=_dynamic_shapes(name), external_data=False,
        )
    proto = program.model_proto
    _name_output_dims(proto, name)
    onnx.save(proto, str(path))
    validate_onnx(path)
    return path


def write_manifest(model: HyperThumbnail, out_dir: str | Path, opset: int = DEFAULT_OPSET,
                   weights_sha256: str | None = None) -> Path:
    """manifest.json: what a server needs to wire the graphs without opening them."""
    out_dir = Path(out_dir)
    manifest = {
        "format": "hyperthumbnail-onnx/1",
        "scale": model.scale,
        "block": model.block,
        "opset": opset,
        "weights_sha256": weights_sha256,
        "model_config": model.config.to_dict(),
        "torch_version": torch.__version__,
        "graphs": {
            name: {
                "file": f"{name}.onnx",
                "inputs": [t.to_dict() for t in GRAPH_IO[name][0]],
                "outputs": [t.to_dict() for t in GRAPH_IO[name][1]],
            }
            for name in GRAPH_NAMES
        },
    }
    path = out_dir / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def load_export_model(model: HyperThumbnail | str | os.PathLike | None, scale: int = 4) -> tuple[HyperThumbnail, str | None]:
    """A model instance as is (weights hash unknown), or load weights (None = shipped) and hash them."""
    if isinstance(model, HyperThumbnail):
        return model, None
    from ..weights import default_weights_path, file_sha256, load_model  # lazy: pulls safetensors

    path = Path(model) if model is not None else default_weights_path(scale)
    return load_model(path, scale), file_sha256(path)


def export_onnx(model: HyperThumbnail | str | os.PathLike | None, out_dir: str | Path, scale: int = 4,
                opset: int = DEFAULT_OPSET) -> dict[str, Path]:
    """Write encoder.onnx, qpm.onnx, decoder.onnx and manifest.json into `out_dir`.

    `model` is a model instance, a weights/checkpoint path, or None for the shipped weights.
    """
    model, sha = load_export_model(model, scale)
    out_dir = Path(out_dir)
    paths = {name: export_graph(model, name, out_dir / f"{name}.onnx", opset) for name in GRAPH_NAMES}
    paths["manifest"] = write_manifest(model, out_dir, opset, sha)
    return paths
