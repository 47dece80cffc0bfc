"""A weights file's exported graphs: exported once into a cache keyed by the weights' and the
export code's content hashes, and run as one set (`Graphs`) by one runtime at chosen precisions,
with tiling.

`Graphs` is the single place where the neural steps run for the in-process pipeline and for the
embedded server's Python-backend models alike, so a thumbnail made by either is the same bytes
on the same machine (the encoder's float rounding decides the coefficients: the runtime and the
precision must match too).

Graphs: encoder (tiled), qpm (image-wide), decoder_features (block resolution; tiled above
`DEFAULT_FEATURE_TILE_BLOCKS`), decoder_body (whole up to `default_body_whole_pixels`, tiled above;
ends in uint8 HWC). See `tiling` for why each is or is not tiled.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..weights import file_sha256
from .onnx import OnnxRunner
from .openvino import cpu_has_native_bf16
from .select import GRAPH_FILES, PREFERRED_PRECISION, RUNTIMES, graph_precisions, graph_runtime, make_runner
from .tiling import DEFAULT_BODY_WHOLE_PIXELS, DEFAULT_FEATURE_TILE_BLOCKS, DEFAULT_TILE_PIXELS, decode_tiled, encode_tiled

__all__ = ["GRAPH_FILES", "PREFERRED_PRECISION", "RUNTIMES", "Graphs", "default_body_whole_pixels", "export_graphs",
           "graph_cache_dir", "graph_precisions", "load_onnx_graphs", "make_runner", "run_decoder", "run_encoder"]


def run_encoder(encoder, padded: np.ndarray, scale: int, tile_pixels: int | None) -> np.ndarray:
    """The encoder graph's runner on a padded uint8 HxWx3 photo -> coefficients (3, 64, h, w),
    tiled (`tiling.encode_tiled`). The in-process pipeline and the served encoder both run this."""
    return encode_tiled(lambda image: encoder.run({"image": image})["coefficients"], padded, scale, tile_pixels,
                        encoder.release_memory)


def default_body_whole_pixels(runtime: str) -> int:
    """Up to how many HR pixels `runtime` runs the decoder body whole. OpenVINO: 6144x4096
    (`DEFAULT_BODY_WHOLE_PIXELS`). ONNX Runtime: 0, always 8 MP tiles: its f32 arena would hold
    3.8 GB at 6144x4096 instead of 2.1 for 7% less time (measured on 2 Zen 4 cores)."""
    return DEFAULT_BODY_WHOLE_PIXELS if runtime == "openvino" else 0


def run_decoder(features, body, quantized: np.ndarray, tables: np.ndarray, scale: int, tile_pixels: int | None,
                feature_tile_blocks: int | None, body_whole_pixels: int) -> np.ndarray:
    """The decoder graphs' runners on one thumbnail's quantized coefficients + tables -> padded HR
    uint8 (tiling.decode_tiled). The in-process pipeline and the served decoder both run this."""
    return decode_tiled(lambda q, t: features.run({"quantized": q, "tables": t})["features"],
                        lambda f: body.run({"features": f})["image"], quantized, tables, scale,
                        tile_pixels, feature_tile_blocks, features.release_memory, body.release_memory,
                        body_whole_pixels)


def export_code_hash() -> str:
    """Hash of the code that shapes the exported graphs (the model, the exporter, the skip fold):
    caches of exported graphs (the serving repository, the in-process pipeline) key on it, so a
    code change means a re-export. Here, not in the exporter, so that a CLI start with cached graphs
    imports neither torch nor onnx (seconds); the exporter uses this one."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    exporter = [package / "export" / name for name in ("onnx_export.py", "fold.py")]
    for path in sorted([*(package / "model").glob("*.py"), *exporter]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def graph_cache_dir(weights: Path) -> Path:
    """Exported graphs are cached per weights file and export code (by content hashes)."""
    root = Path(os.environ.get("HYPERTHUMBNAIL_CACHE", Path.home() / ".cache" / "hyperthumbnail"))
    return root / "onnx" / f"{file_sha256(weights)[:16]}-{export_code_hash()[:8]}"


def load_onnx_graphs(weights: Path, threads: int = 0) -> tuple[dict[str, OnnxRunner], int]:
    """-> (ONNX Runtime runner per graph name, the model's scale); exports on first use (~15 s)."""
    from ..export.onnx_export import GRAPH_NAMES, export_onnx

    cache = graph_cache_dir(weights)
    if not all((cache / f"{n}.onnx").exists() for n in GRAPH_NAMES):
        export_onnx(weights, cache)
    graphs = {n: OnnxRunner(cache / f"{n}.onnx", intra_op_threads=threads) for n in GRAPH_NAMES}
    return graphs, int(json.loads((cache / "manifest.json").read_text())["scale"])


def load_graphs(weights: Path, runtime: str = "openvino", precision: str = "auto", threads: int = 0,
                tile_pixels: int | None = DEFAULT_TILE_PIXELS) -> Graphs:
    """The graph set of a weights file, exported into its cache on first use (~1 min)."""
    cache = graph_cache_dir(weights)
    if not (cache / "manifest.json").is_file():
        from ..export.onnx_export import load_export_model, write_manifest

        model, sha = load_export_model(weights)
        export_graphs(model, cache, model.scale)
        write_manifest(model, cache, weights_sha256=sha)
    else:
        export_graphs(weights, cache, int(json.loads((cache / "manifest.json").read_text())["scale"]))
    scale = int(json.loads((cache / "manifest.json").read_text())["scale"])
    return Graphs(cache, scale, runtime, precision, threads, tile_pixels)


class _LazyRunners(dict):
    """Runners made on first use: a decode never loads (compiles) the encoder, nor an encode the
    decoder (seconds of every CLI start, and their memory)."""

    def __init__(self, make):
        super().__init__()
        self._make = make

    def __missing__(self, name: str):
        if name not in GRAPH_FILES:
            raise KeyError(name)
        self[name] = runner = self._make(name)
        return runner


class Graphs:
    """encoder / qpm / decoder of one exported graph directory, ready to run."""

    def __init__(self, graph_dir: str | Path, scale: int, runtime: str = "openvino", precision: str = "auto",
                 threads: int = 0, tile_pixels: int | None = DEFAULT_TILE_PIXELS,
                 feature_tile_blocks: int | None = DEFAULT_FEATURE_TILE_BLOCKS,
                 body_whole_pixels: int | None = None):
        self.dir = Path(graph_dir)
        self.scale = int(scale)
        self.runtime = runtime
        self.precisions = graph_precisions(runtime, precision)
        self.tile_pixels = tile_pixels
        self.feature_tile_blocks = feature_tile_blocks
        self.body_whole_pixels = default_body_whole_pixels(runtime) if body_whole_pixels is None else body_whole_pixels
        for name in GRAPH_FILES:
            if not (self.dir / f"{name}.onnx").is_file():
                raise FileNotFoundError(f"graph not found: {self.dir / f'{name}.onnx'}")
        self.runners = _LazyRunners(lambda name: make_runner(self.dir / f"{name}.onnx", graph_runtime(runtime, name),
                                                             self.precisions[name], threads))

    def describe(self) -> str:
        """e.g. 'openvino (encoder bf16, qpm f32 on onnx, ...)', for logs and benchmark records."""
        native = "native bf16" if cpu_has_native_bf16() else "no native bf16"
        def one(name: str, precision: str) -> str:
            runs_on = graph_runtime(self.runtime, name)
            return f"{name} {precision}" + ("" if runs_on == self.runtime else f" on {runs_on}")

        graphs = ", ".join(one(k, v) for k, v in self.precisions.items())
        return f"{self.runtime} ({graphs}; {native})"

    def load(self, names: tuple[str, ...]) -> None:
        """Load (compile) these graphs now rather than on first use, e.g. to time the work apart."""
        for name in names:
            self.runners[name]

    def coefficients(self, padded: np.ndarray) -> np.ndarray:
        """Padded HR uint8 HxWx3 -> unquantized coefficients (3, 64, h, w) float32 (tiled)."""
        return run_encoder(self.runners["encoder"], padded, self.scale, self.tile_pixels)

    def quantize(self, coefficients: np.ndarray, table_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """-> (quantized int32 (3, 64, h, w), tables int32 (2, 64)); the tables see the whole image."""
        out = self.runners["qpm"].run({"coefficients": coefficients[None],
                                       "table_scale": np.array([table_scale], np.float32)})
        return out["quantized"][0], out["tables"][0]

    def reconstruct(self, quantized: np.ndarray, tables: np.ndarray) -> np.ndarray:
        """Quantized coefficients + tables -> padded HR uint8 (8hs, 8ws, 3) (tiled)."""
        return run_decoder(self.runners["decoder_features"], self.runners["decoder_body"], quantized, tables,
                           self.scale, self.tile_pixels, self.feature_tile_blocks, self.body_whole_pixels)


def export_graphs(weights: str | Path | None, out_dir: str | Path, scale: int,
                  names: tuple[str, ...] = GRAPH_FILES) -> Path:
    """Export the graph files `Graphs` needs (or `names`), those missing, into `out_dir`."""
    out_dir = Path(out_dir)
    missing = [name for name in names if not (out_dir / f"{name}.onnx").is_file()]
    if missing:
        # Imported only here: the exporter pulls in torch (~1.7 s of every CLI start otherwise).
        from ..export.onnx_export import export_graph, load_export_model

        model, _ = load_export_model(weights, scale)
        for name in missing:
            export_graph(model, name, out_dir / f"{name}.onnx")
    return out_dir
