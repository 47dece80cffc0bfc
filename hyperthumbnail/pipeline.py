"""In-process encode/decode: the same steps the Triton ensembles run, without a server.

`runtime="onnx"` (default) runs the exported graphs with ONNX Runtime, exactly like the CPU model
repository, so `Pipeline.encode` returns the same .jpg bytes as `hyperthumbnail_encode` on the same
machine. `runtime="torch"` runs the PyTorch model directly (no export step; bytes may differ from
ONNX at exact rounding ties, which are rare).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np

from .serving.steps import decode_thumbnail, encode_thumbnail, postprocess, preprocess
from .weights import default_weights_path, file_sha256

Runtime = Literal["onnx", "torch"]


def onnx_cache_dir(weights: Path) -> Path:
    """Exported graphs are cached per weights file (by content hash)."""
    root = Path(os.environ.get("HYPERTHUMBNAIL_CACHE", Path.home() / ".cache" / "hyperthumbnail"))
    return root / "onnx" / file_sha256(weights)[:16]


class Pipeline:
    def __init__(self, weights: str | Path | None = None, scale: int = 4, runtime: Runtime = "onnx",
                 threads: int = 0):
        self.weights = Path(weights) if weights else default_weights_path(scale)
        if not self.weights.exists():
            raise FileNotFoundError(f"weights not found: {self.weights}")
        self.runtime = runtime
        if runtime == "onnx":
            self._init_onnx(threads)
        elif runtime == "torch":
            self._init_torch(threads)
        else:
            raise ValueError(f"unknown runtime {runtime!r} (use 'onnx' or 'torch')")

    def _init_onnx(self, threads: int) -> None:
        from .export.onnx_export import GRAPH_NAMES, export_onnx
        from .serving.onnx_runner import OnnxRunner

        cache = onnx_cache_dir(self.weights)
        if not all((cache / f"{n}.onnx").exists() for n in GRAPH_NAMES):
            export_onnx(self.weights, cache)  # once per weights file, ~15 s
        self.graphs = {n: OnnxRunner(cache / f"{n}.onnx", intra_op_threads=threads) for n in GRAPH_NAMES}
        import json
        self.scale = int(json.loads((cache / "manifest.json").read_text())["scale"])

    def _init_torch(self, threads: int) -> None:
        import torch

        from .weights import load_model

        if threads:
            torch.set_num_threads(threads)
        self.model = load_model(self.weights)
        self.scale = self.model.scale

    # ------------------------------------------------------------------ neural steps
    def _quantize(self, image_f32: np.ndarray, table_scale: float) -> tuple[np.ndarray, np.ndarray]:
        batch = image_f32[None]
        if self.runtime == "onnx":
            coef = self.graphs["encoder"].run({"image": batch})["coefficients"]
            out = self.graphs["qpm"].run({"coefficients": coef, "table_scale": np.array([table_scale], np.float32)})
            return out["quantized"][0], out["tables"][0]
        import torch
        q, tables = self.model.encode(torch.from_numpy(batch), table_scale)
        return q[0].numpy(), tables[0].numpy()

    def _reconstruct(self, quantized: np.ndarray, tables: np.ndarray) -> np.ndarray:
        if self.runtime == "onnx":
            return self.graphs["decoder"].run({"quantized": quantized[None], "tables": tables[None]})["image"][0]
        import torch
        return self.model.decode(torch.from_numpy(quantized[None]), torch.from_numpy(tables[None]))[0].numpy()

    # ------------------------------------------------------------------ public API
    def encode(self, image: np.ndarray, table_scale: float = 1.0, max_pixels: int | None = None) -> bytes:
        """HxWx3 uint8 RGB -> HyperThumbnail .jpg bytes."""
        kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
        chw, hr_size = preprocess(image, self.scale, **kwargs)
        quantized, tables = self._quantize(chw, table_scale)
        return encode_thumbnail(quantized, tables, hr_size, self.scale)

    def decode(self, data: bytes, max_pixels: int | None = None) -> np.ndarray:
        """HyperThumbnail .jpg bytes -> HxWx3 uint8 RGB of exactly the original size."""
        kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
        quantized, tables, hr_size = decode_thumbnail(data, self.scale, **kwargs)
        return postprocess(self._reconstruct(quantized, tables), hr_size)
