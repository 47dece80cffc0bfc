"""In-process encode/decode: the same steps the Triton ensembles run, without a server.

`runtime="openvino"` (default) and `"onnx"` run the exported graphs (`runtime.graphs.Graphs`:
tiled, so memory does not grow with the photo, and the decoder ends in uint8) with OpenVINO at
the per-graph precisions `precision` resolves to, or with ONNX Runtime in f32; the CPU model
repository's Python-backend models run the same code, so `Pipeline.encode` returns the same .jpg
bytes as `hyperthumbnail_encode` when both use the same runtime and precision on one machine.
`runtime="torch"` runs the PyTorch model directly (no export step; bytes may differ from the
graphs at exact rounding ties, which are rare).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from .codec.steps import crop_image, decode_thumbnail, encode_thumbnail, pad_photo, postprocess, preprocess, quantize_with_tables
from .codec.thumbnail import thumbnail_model_id
from .runtime.tiling import DEFAULT_TILE_PIXELS
from .weights import default_weights_path, served_model_ids, shipped_weights_serving

Runtime = Literal["openvino", "onnx", "torch"]
RUNTIME_CHOICES = ("openvino", "onnx", "torch")
PRECISION_CHOICES = ("auto", "f32", "bf16")


class Pipeline:
    def __init__(self, weights: str | Path | None = None, scale: int = 4, runtime: Runtime = "openvino",
                 threads: int = 0, precision: str = "auto", tile_pixels: int | None = DEFAULT_TILE_PIXELS):
        self.weights = Path(weights) if weights else default_weights_path(scale)
        if not self.weights.exists():
            raise FileNotFoundError(f"weights not found: {self.weights}")
        if runtime not in RUNTIME_CHOICES:
            raise ValueError(f"unknown runtime {runtime!r} (use {', '.join(RUNTIME_CHOICES)})")
        if precision not in PRECISION_CHOICES:
            raise ValueError(f"unknown precision {precision!r} (use {', '.join(PRECISION_CHOICES)})")
        self.runtime = runtime
        # Which model makes this pipeline's thumbnails (the marker records it) and whose it rebuilds.
        self.served_models = served_model_ids(self.weights)
        self.model_id = self.served_models[0]
        # The shipped weights route a thumbnail of an older generation to the decoder shipped for
        # it (`for_thumbnail`); weights a caller names decode only what they serve.
        self._routes_older = weights is None
        self._older: dict[str, Pipeline] = {}  # by the model id of the thumbnails they decode
        self._settings = dict(runtime=runtime, threads=threads, precision=precision, tile_pixels=tile_pixels)
        if runtime == "torch":
            if precision == "bf16":
                raise ValueError("--precision bf16 needs --runtime openvino")
            self._init_torch(threads)
        else:
            self._init_graphs(threads, precision, tile_pixels)

    def _init_graphs(self, threads: int, precision: str, tile_pixels: int | None) -> None:
        from .runtime.graphs import load_graphs

        self.graph_set = load_graphs(self.weights, self.runtime, precision, threads, tile_pixels)
        self.graphs = self.graph_set.runners  # by graph name (rate control's BLS twin uses them)
        self.scale = self.graph_set.scale

    def load(self, direction: Literal["encode", "decode"]) -> None:
        """Load the graphs `encode` or `decode` runs (otherwise loaded on first use), so that the
        CLI reports the work apart from the loading."""
        if self.runtime != "torch":
            self.graph_set.load(("encoder", "qpm") if direction == "encode" else ("decoder_features", "decoder_body"))

    def describe(self) -> str:
        """The runtime and, for the graphs, each one's precision (for the CLI's report line)."""
        return "torch" if self.runtime == "torch" else self.graph_set.describe()

    def _init_torch(self, threads: int) -> None:
        import torch

        from .weights import load_model

        if threads:
            torch.set_num_threads(threads)
        self.model = load_model(self.weights)
        self.scale = self.model.scale

    # ------------------------------------------------------------------ neural steps
    def _coefficients_torch(self, image_f32: np.ndarray) -> np.ndarray:
        """(3, H', W') float32 -> the encoder's unquantized DCT coefficients (3, 64, h, w) float32."""
        import torch

        from .model.dct import image_to_coefficients
        with torch.no_grad():
            return image_to_coefficients(self.model.encoder(torch.from_numpy(image_f32[None])))[0].numpy()

    def _quantize(self, coefficients: np.ndarray, table_scale: float) -> tuple[np.ndarray, np.ndarray]:
        if self.runtime != "torch":
            return self.graph_set.quantize(coefficients, table_scale)
        import torch
        with torch.no_grad():
            q, tables = self.model.quantize(torch.from_numpy(coefficients[None]), table_scale)
        return q[0].numpy().astype(np.int16), tables[0].numpy().astype(np.uint8)

    def _reconstruct_torch(self, quantized: np.ndarray, tables: np.ndarray) -> np.ndarray:
        import torch
        return self.model.decode(torch.from_numpy(quantized[None]), torch.from_numpy(tables[None]))[0].numpy()

    # ------------------------------------------------------------------ public API
    def analyze(self, image: np.ndarray, max_pixels: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
        """HxWx3 uint8 RGB -> (unquantized coefficients (3, 64, h, w) float32, HR size (W, H)).

        The expensive, table-independent half of `encode`: rate control runs it once and then
        `quantize_and_write` once per probed table scale.
        """
        kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
        if self.runtime != "torch":
            padded, hr_size = pad_photo(image, self.scale, **kwargs)
            return self.graph_set.coefficients(padded), hr_size
        chw, hr_size = preprocess(image, self.scale, **kwargs)
        return self._coefficients_torch(chw), hr_size

    def quantize_and_write(self, coefficients: np.ndarray, hr_size: tuple[int, int], table_scale: float = 1.0) -> bytes:
        """QPM tables (times `table_scale`), quantization and entropy coding -> .jpg bytes."""
        quantized, tables = self._quantize(coefficients, table_scale)
        return encode_thumbnail(quantized, tables, hr_size, self.scale, self.model_id)

    def write_with_tables(self, coefficients: np.ndarray, hr_size: tuple[int, int], tables: np.ndarray) -> bytes:
        """Quantize with given (2, 64) tables (natural order, row 0 luma) -> .jpg bytes.

        Rate control's fine step sets single table entries, which no table scale can express.
        """
        return encode_thumbnail(quantize_with_tables(coefficients, tables), tables, hr_size, self.scale, self.model_id)

    def encode(self, image: np.ndarray, table_scale: float = 1.0, max_pixels: int | None = None) -> bytes:
        """HxWx3 uint8 RGB -> HyperThumbnail .jpg bytes (`table_scale` > 1: coarser tables, smaller file)."""
        return self.quantize_and_write(*self.analyze(image, max_pixels), table_scale)

    def close(self) -> None:
        """Nothing to release (sessions go with the object); the server client has the same method."""

    def for_thumbnail(self, data: bytes) -> Pipeline:
        """The pipeline whose decoder rebuilds this thumbnail: this one, or, for the shipped weights,
        the older shipped generation that serves the model id in its marker (loaded once, same
        runtime settings). This one when none does: its `decode` then refuses the file by name."""
        try:
            made_by = thumbnail_model_id(data) if self._routes_older else None
        except (TypeError, ValueError):  # not bytes, or no readable marker: `decode` says which
            made_by = None
        if made_by is None or made_by in self.served_models:
            return self
        if made_by not in self._older:  # the shipped files are read once per model id, not per thumbnail
            path = shipped_weights_serving(made_by, self.scale)
            loaded = {pipeline.weights: pipeline for pipeline in self._older.values()}
            self._older[made_by] = self if path is None else loaded.get(path) or Pipeline(path, self.scale, **self._settings)
        return self._older[made_by]

    def decode(self, data: bytes, max_pixels: int | None = None) -> np.ndarray:
        """HyperThumbnail .jpg bytes -> HxWx3 uint8 RGB of exactly the original size."""
        pipeline = self.for_thumbnail(data)
        kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
        quantized, tables, hr_size = decode_thumbnail(data, pipeline.scale, served_models=pipeline.served_models,
                                                      **kwargs)
        if pipeline.runtime != "torch":
            return crop_image(pipeline.graph_set.reconstruct(quantized, tables), hr_size)
        return postprocess(pipeline._reconstruct_torch(quantized, tables), hr_size)
