"""Which runtime runs a graph, at which precision: plain Python, no torch (the Triton
Python-backend models use it too)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from .openvino import PRECISIONS, resolve_precision

__all__ = ["EXACT_GRAPHS", "F32_TAIL_GRAPHS", "GRAPH_FILES", "PREFERRED_PRECISION", "RUNTIMES", "Runtime", "graph_precisions",
           "graph_runtime", "make_runner"]

Runtime = Literal["openvino", "onnx"]
RUNTIMES: tuple[str, ...] = ("openvino", "onnx")
GRAPH_FILES = ("encoder", "qpm", "decoder_features", "decoder_body")
# Chosen by measurement (docs/benchmarks.md "Runtimes", Kodak, v4.2, Zen 4): bf16 (the encoder's
# tail in f32) costs the encoder -0.001 dB, the decoder body -0.011 dB, for ~1.9x and ~1.6x the speed.
# The QPM rounds its tables and is cheap, the decoder's coefficient branch is cheap: both stay f32.
PREFERRED_PRECISION = {"encoder": "bf16", "qpm": "f32", "decoder_features": "f32", "decoder_body": "bf16"}
_OTHER_GRAPHS = {"decoder": "bf16", "decoder_u8": "bf16"}  # the unsplit decoders (NGC targets, benchmarks)
# Graphs ONNX Runtime runs whatever the runtime: OpenVINO rewrites the QPM's division as a multiply
# by the reciprocal, so a coefficient exactly on a rounding tie (frequent with the bf16 encoder,
# whose outputs have few mantissa bits) can round the other way than the exact division of
# `codec.steps.quantize_with_tables` (rate control's entry-wise step); ONNX Runtime divides exactly
# and is faster on this small graph too (runtimes.json: 0.032 vs 0.058 s at 1080p).
EXACT_GRAPHS = ("qpm",)
# Graphs whose bf16 runs stop at the network's residual: the bicubic base, the sum and the colour/DCT
# transforms after it run in f32 (`OpenVinoRunner(f32_tail=True)`), at no measurable cost.
F32_TAIL_GRAPHS = ("encoder",)


def graph_runtime(runtime: str, name: str) -> str:
    """The runtime that runs graph `name` under `runtime` (see EXACT_GRAPHS)."""
    return "onnx" if name in EXACT_GRAPHS else runtime


def graph_precisions(runtime: str, precision: str = "auto", names: tuple[str, ...] = GRAPH_FILES) -> dict[str, str]:
    """Per graph: 'f32' or 'bf16'. `precision`: auto (the measured choice, bf16 only on a CPU
    with native bf16), f32 (everything), bf16 (the bf16-tolerant graphs where native)."""
    if precision not in ("auto", *PRECISIONS):
        raise ValueError(f"unknown precision {precision!r}; use auto, f32 or bf16")
    if runtime == "onnx":
        if precision == "bf16":
            raise ValueError("ONNX Runtime runs f32 here; bf16 needs --runtime openvino")
        return {name: "f32" for name in names}
    if runtime != "openvino":
        raise ValueError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
    if precision == "f32":
        return {name: "f32" for name in names}
    preferred = {**PREFERRED_PRECISION, **_OTHER_GRAPHS}
    return {name: resolve_precision("auto", preferred.get(name, "f32")) for name in names}  # type: ignore[arg-type]


def make_runner(path: Path, runtime: str, precision: str = "f32", threads: int = 0, memory_arena: bool = True,
                graph: str | None = None):
    """A runner (`run(feeds) -> outputs`) for one graph file (`memory_arena`: ONNX Runtime's, see
    `OnnxRunner`; `graph`: which exported graph the file holds, default its name's stem, e.g. a
    served repository's `encoder/1/model.onnx` is `graph="encoder"`).

    OpenVINO keeps its compiled blobs beside the graph (`openvino_cache/`): a second process
    starts in a fraction of the compile time (the CLI starts one per command).
    """
    if runtime == "openvino":
        from .openvino import OpenVinoRunner

        return OpenVinoRunner(path, intra_op_threads=threads, precision=precision,  # type: ignore[arg-type]
                              cache_dir=_writable(path.parent / "openvino_cache"),
                              f32_tail=(graph or path.stem) in F32_TAIL_GRAPHS)
    if precision != "f32":
        raise ValueError(f"ONNX Runtime runs f32 only, not {precision}")
    from .onnx import OnnxRunner

    return OnnxRunner(path, intra_op_threads=threads, memory_arena=memory_arena)


def _writable(directory: Path) -> Path | None:
    """`directory` (created) where it can be written, else None (no cache; a read-only repository)."""
    try:
        directory.mkdir(exist_ok=True)
        probe = directory / ".probe"
        probe.touch()
        probe.unlink()
        return directory
    except OSError:
        return None
