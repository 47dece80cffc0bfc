"""In-process encode/decode: the same steps the Triton ensembles run, without a server.

`runtime="onnx"` (default) runs the exported graphs with ONNX Runtime, exactly like the CPU model
repository, so `Pipeline.encode` returns the same .jpg bytes as `hyperthumbnail_encode` on the same
machine. `runtime="torch"` runs the PyTorch model directly (no export step; bytes may differ from
ONNX at exact rounding ties, which are rare).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from .codec.steps import decode_thumbnail, encode_thumbnail, postprocess, preprocess, quantize_with_tables
from .weights import default_weights_path

Runtime = Literal["onnx", "torch"]


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
        from .runtime.graphs import load_onnx_graphs

        self.graphs, self.scale = load_onnx_graphs(self.weights, threads)

    def _init_torch(self, threads: int) -> None:
        import torch

        from .weights import load_model

        if threads:
            torch.set_num_threads(threads)
        self.model = load_model(self.weights)
        self.scale = self.model.scale

    # ------------------------------------------------------------------ neural steps
    def _coefficients(self, image_f32: np.ndarray) -> np.ndarray:
        """(3, H', W') float32 -> the encoder's unquantized DCT coefficients (3, 64, h, w) float32."""
        if self.runtime == "onnx":
            return self.graphs["encoder"].run({"image": image_f32[None]})["coefficients"][0]
        import torch

        from .model.dct import image_to_coefficients
        with torch.no_grad():
            return image_to_coefficients(self.model.encoder(torch.from_numpy(image_f32[None])))[0].numpy()

    def _quantize(self, coefficients: np.ndarray, table_scale: float) -> tuple[np.ndarray, np.ndarray]:
        if self.runtime == "onnx":
            out = self.graphs["qpm"].run({"coefficients": coefficients[None],
                                          "table_scale": np.array([table_scale], np.float32)})
            return out["quantized"][0], out["tables"][0]
        import torch
        with torch.no_grad():
            q, tables = self.model.quantize(torch.from_numpy(coefficients[None]), table_scale)
        return q[0].numpy().astype(np.int16), tables[0].numpy().astype(np.uint8)

    def _reconstruct(self, quantized: np.ndarray, tables: np.ndarray) -> np.ndarray:
        if self.runtime == "onnx":
            return self.graphs["decoder"].run({"quantized": quantized[None], "tables": tables[None]})["image"][0]
        import torch
        return self.model.decode(torch.from_numpy(quantized[None]), torch.from_numpy(tables[None]))[0].numpy()

    # ------------------------------------------------------------------ public API
    def analyze(self, image: np.ndarray, max_pixels: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
        """HxWx3 uint8 RGB -> (unquantized coefficients (3, 64, h, w) float32, HR size (W, H)).

        The expensive, table-independent half of `encode`: rate control runs it once and then
        `quantize_and_write` once per probed table scale.
        """
        kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
        chw, hr_size = preprocess(image, self.scale, **kwargs)
        return self._coefficients(chw), hr_size

    def quantize_and_write(self, coefficients: np.ndarray, hr_size: tuple[int, int], table_scale: float = 1.0) -> bytes:
        """QPM tables (times `table_scale`), quantization and entropy coding -> .jpg bytes."""
        quantized, tables = self._quantize(coefficients, table_scale)
        return encode_thumbnail(quantized, tables, hr_size, self.scale)

    def write_with_tables(self, coefficients: np.ndarray, hr_size: tuple[int, int], tables: np.ndarray) -> bytes:
        """Quantize with given (2, 64) tables (natural order, row 0 luma) -> .jpg bytes.

        Rate control's fine step sets single table entries, which no table scale can express.
        """
        return encode_thumbnail(quantize_with_tables(coefficients, tables), tables, hr_size, self.scale)

    def encode(self, image: np.ndarray, table_scale: float = 1.0, max_pixels: int | None = None) -> bytes:
        """HxWx3 uint8 RGB -> HyperThumbnail .jpg bytes (`table_scale` > 1: coarser tables, smaller file)."""
        return self.quantize_and_write(*self.analyze(image, max_pixels), table_scale)

    def close(self) -> None:
        """Nothing to release (sessions go with the object); the server client has the same method."""

    def decode(self, data: bytes, max_pixels: int | None = None) -> np.ndarray:
        """HyperThumbnail .jpg bytes -> HxWx3 uint8 RGB of exactly the original size."""
        kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
        quantized, tables, hr_size = decode_thumbnail(data, self.scale, **kwargs)
        return postprocess(self._reconstruct(quantized, tables), hr_size)
