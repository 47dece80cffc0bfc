"""A weights file's three exported graphs (encoder, QPM, decoder), exported once into a cache
keyed by the weights' and the export code's content hashes, and loaded into runners."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..weights import file_sha256
from .onnx import OnnxRunner

__all__ = ["graph_cache_dir", "load_onnx_graphs"]


def graph_cache_dir(weights: Path) -> Path:
    """Exported graphs are cached per weights file and export code (by content hashes)."""
    from ..export.onnx_export import export_code_hash

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
