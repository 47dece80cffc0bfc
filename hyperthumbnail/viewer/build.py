"""Build the static viewer folder: the page, ONNX Runtime Web's files from the lockfile'd npm
install, the two decoder graphs of a weights file (exported by the project's exporter, through the
same cache as the CLI), and manifest.json with everything the page must agree on with Python: the
tiling margins and tile sizes (runtime/tiling.py), the pixel limit, the model ids the decoder serves.

The result is plain files: any web server or CDN hosts it (docs/viewer.md). Rebuilding is skipped
when nothing that goes into the folder changed (the manifest records a key of all inputs)."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

from ..interface import DEFAULT_MAX_PIXELS
from ..runtime import tiling
from ..runtime.graphs import export_code_hash, export_graphs, graph_cache_dir
from ..weights import default_weights_path, file_sha256, served_model_ids, weights_config

__all__ = ["DEFAULT_BUILD_DIR", "GRAPHS", "VIEWER_SOURCE", "ViewerError", "build_viewer", "ensure_node_modules"]

REPO_ROOT = Path(__file__).resolve().parents[2]
VIEWER_SOURCE = REPO_ROOT / "viewer"
DEFAULT_BUILD_DIR = REPO_ROOT / "build" / "viewer"
# The decoder as the CLI runs it: coefficients + tables -> features (block resolution), then the
# body in tiles -> uint8 HWC. Both ONNX Runtime Web backends run them as exported (float32).
GRAPHS = ("decoder_features", "decoder_body")
PAGE_FILES = ("index.html", "style.css")
# ONNX Runtime Web's two builds, each an ES module and the WASM binary it loads (with the .mjs that
# loads it and starts the worker threads): WASM only (the page's CPU backend, 14 MB) and WASM +
# WebGPU (JSEP, 28 MB); the page fetches only the one its backend needs.
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm",
             "ort.min.mjs", "ort-wasm-simd-threaded.jsep.mjs", "ort-wasm-simd-threaded.jsep.wasm")
MACS_GRID = 16  # blocks per side of the grid at which each graph's multiply-adds per block are counted


class ViewerError(RuntimeError):
    """Building, serving or checking the viewer failed; the message says what to do."""


def ensure_node_modules(source: Path = VIEWER_SOURCE) -> Path:
    """`npm ci` from the committed lockfile unless node_modules matches it already."""
    modules = source / "node_modules"
    lock = source / "package-lock.json"
    stamp = modules / ".package-lock.json"  # npm writes it on every install
    if stamp.is_file() and stamp.stat().st_mtime >= lock.stat().st_mtime:
        return modules
    npm = shutil.which("npm")
    if npm is None:
        raise ViewerError("npm is not installed (Debian: apt-get install npm); the viewer's build needs it once")
    result = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=source, capture_output=True, text=True)
    if result.returncode != 0:
        raise ViewerError(f"npm ci failed in {source}: {result.stderr.strip().splitlines()[-1:]}")
    return modules


def _files_key(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.name).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _source_files(source: Path) -> list[Path]:
    return [*(source / name for name in PAGE_FILES), *sorted((source / "src").glob("*.js")), source / "package-lock.json"]


def _macs_per_block(graph_dir: Path) -> dict[str, int]:
    """Multiply-adds per 8x8 thumbnail block of each graph (the page weighs its progress by them)."""
    import onnx  # with ONNX Runtime's shape inference (export/macs.py): only at build time

    from ..export.macs import count_macs

    body = onnx.load(str(graph_dir / "decoder_body.onnx"))
    channels = body.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    shapes = {"decoder_features": {"quantized": (1, 3, 64, MACS_GRID, MACS_GRID), "tables": (1, 2, 64)},
              "decoder_body": {"features": (1, channels, 8 * MACS_GRID, 8 * MACS_GRID)}}
    return {name: round(count_macs(graph_dir / f"{name}.onnx", shape)["total"] / MACS_GRID**2)
            for name, shape in shapes.items()}


def weights_scale(weights: Path) -> int:
    """The model's scale from the weights file's config (read without torch)."""
    return int(weights_config(weights)["scale"])


def build_viewer(out_dir: str | Path = DEFAULT_BUILD_DIR, weights: str | Path | None = None,
                 source: Path = VIEWER_SOURCE, force: bool = False) -> Path:
    """Build (or keep, if up to date) the viewer folder in `out_dir`; returns its manifest path."""
    out_dir = Path(out_dir)
    weights = Path(weights) if weights is not None else default_weights_path(4)
    modules = ensure_node_modules(source)
    ort_dist = modules / "onnxruntime-web" / "dist"
    key = hashlib.sha256(f"{_files_key([*_source_files(source), Path(tiling.__file__)])} {file_sha256(weights)} "
                         f"{export_code_hash()}".encode()).hexdigest()
    manifest_path = out_dir / "manifest.json"
    if not force and manifest_path.is_file() and json.loads(manifest_path.read_text()).get("build_key") == key:
        return manifest_path

    cache = graph_cache_dir(weights)
    scale = weights_scale(weights)
    export_graphs(weights, cache, scale, names=GRAPHS)

    if out_dir.exists():
        shutil.rmtree(out_dir)
    for sub in ("src", "ort", "vendor", "models"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    for name in PAGE_FILES:
        shutil.copy2(source / name, out_dir / name)
    for path in sorted((source / "src").glob("*.js")):
        shutil.copy2(path, out_dir / "src" / path.name)
    for name in ORT_FILES:
        shutil.copy2(ort_dist / name, out_dir / "ort" / name)
    shutil.copy2(modules / "crc-32" / "crc32.js", out_dir / "vendor" / "crc32.js")
    shutil.copy2(modules / "crc-32" / "LICENSE", out_dir / "vendor" / "crc32.LICENSE")
    graphs = {}
    for name in GRAPHS:
        shutil.copy2(cache / f"{name}.onnx", out_dir / "models" / f"{name}.onnx")
        graphs[name] = f"models/{name}.onnx"

    manifest = {
        "format": "hyperthumbnail-viewer/1",
        "build_key": key,
        "scale": scale,
        "graphs": graphs,
        "model_ids": list(served_model_ids(weights)),  # the page refuses thumbnails of other models by id
        "weights": weights.name,
        "weights_sha256": file_sha256(weights),
        "export_code_hash": export_code_hash(),
        "max_pixels": DEFAULT_MAX_PIXELS,
        "tiling": {
            "margins": {"decoder_features": tiling.DECODER_FEATURES_MARGIN_BLOCKS,
                        "decoder_body": tiling.DECODER_BODY_MARGIN_BLOCKS},
            "feature_tile_blocks": tiling.DEFAULT_FEATURE_TILE_BLOCKS,
            "tile_pixels": tiling.DEFAULT_TILE_PIXELS,
        },
        "macs_per_block": _macs_per_block(out_dir / "models"),
        "onnxruntime_web": json.loads((modules / "onnxruntime-web" / "package.json").read_text())["version"],
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest_path

