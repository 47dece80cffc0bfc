"""The compute floor of this CPU for our graphs: their GMACs at a resolution over a MEASURED peak
multiply-accumulate rate per precision, i.e. the time the networks would take if every MAC ran
at the best rate this CPU reaches on a convolution.

Peak rate: one large 3x3 convolution (256 -> 256 channels on 128x128, 9.7 GMAC; wide enough
that the runtimes' kernels saturate the vector units) timed with every runtime/precision the
benchmark uses, all threads, best of N. The peak of a precision is the best runtime's rate at it.

GMACs: `export.macs.count_macs` on the graphs `Graphs` runs, at the padded size, untiled (the
network's own work; tiles recompute their margins, which the floor does not count).
"""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["DIRECTION_GRAPHS", "PROBE", "floor_ms", "graph_gmacs", "peak_rates", "probe_model"]

# A 3x3 convolution with many channels (see the module docstring).
PROBE = {"channels": 256, "height": 128, "width": 128, "kernel": 3}
# The graphs each direction runs, in `runtime.graphs.Graphs`.
DIRECTION_GRAPHS = {"encode": ("encoder", "qpm"), "decode": ("decoder_features", "decoder_body")}


def probe_model(path: Path, channels: int = PROBE["channels"], height: int = PROBE["height"],
                width: int = PROBE["width"]) -> int:
    """Write the probe convolution as an ONNX file; -> its MACs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k = PROBE["kernel"]
    weight = np.random.default_rng(0).standard_normal((channels, channels, k, k)).astype(np.float32) * 0.05
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[k, k], pads=[k // 2] * 4)
    graph = helper.make_graph(
        [node], "peak_rate_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, height, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, height, width])],
        [numpy_helper.from_array(weight, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return channels * channels * k * k * height * width


def peak_rates(engines: list[tuple[str, str]], threads: int = 0, repeats: int = 7) -> dict:
    """Per (runtime, precision), e.g. ("openvino", "bf16"): the probe's best time and GMAC/s;
    plus `peak_gmac_per_s` per precision (the best runtime's)."""
    from ..runtime.select import make_runner

    measured: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="hyperthumbnail-probe-") as tmp:
        path = Path(tmp) / "conv.onnx"
        macs = probe_model(path)
        x = np.random.default_rng(1).standard_normal(
            (1, PROBE["channels"], PROBE["height"], PROBE["width"])).astype(np.float32)
        for runtime, precision in engines:
            runner = make_runner(path, runtime, precision, threads)
            runner.run({"x": x})  # warm-up: kernels are chosen on the first call
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                runner.run({"x": x})
                times.append(time.perf_counter() - start)
            del runner
            measured[f"{runtime}_{precision}"] = {
                "runtime": runtime, "precision": precision, "best_ms": round(min(times) * 1e3, 2),
                "runs_ms": [round(t * 1e3, 2) for t in times], "gmac_per_s": round(macs / min(times) / 1e9, 2)}
    peak: dict[str, float] = {}
    for m in measured.values():
        peak[m["precision"]] = max(peak.get(m["precision"], 0.0), m["gmac_per_s"])
    return {"probe": {**PROBE, "gmacs": round(macs / 1e9, 3), "repeats": repeats, "statistic": "best"},
            "engines": measured, "peak_gmac_per_s": peak}


def graph_gmacs(graph_dir: Path, width: int, height: int, scale: int) -> dict[str, float]:
    """GMACs of each graph `Graphs` runs for a WxH photo (padded to the 8*scale grid), untiled."""
    import onnx

    from ..export.macs import count_macs

    grid = (math.ceil(height / (8 * scale)), math.ceil(width / (8 * scale)))
    body = onnx.load(str(graph_dir / "decoder_body.onnx"), load_external_data=False)
    features = next((i for i in body.graph.input if i.name == "features"), None)
    if features is None:
        raise ValueError(f"{graph_dir / 'decoder_body.onnx'}: no input 'features' (not a decoder body?)")
    feature_channels = features.type.tensor_type.shape.dim[1].dim_value  # fixed by the model (export)
    shapes = {
        "encoder": {"image": (1, 3, 8 * scale * grid[0], 8 * scale * grid[1])},
        "qpm": {"coefficients": (1, 3, 64, *grid), "table_scale": (1,)},
        "decoder_features": {"quantized": (1, 3, 64, *grid), "tables": (1, 2, 64)},
        "decoder_body": {"features": (1, feature_channels, 8 * grid[0], 8 * grid[1])},
    }
    return {name: round(count_macs(graph_dir / f"{name}.onnx", s)["total"] / 1e9, 3) for name, s in shapes.items()}


def floor_ms(gmacs: dict[str, float], precisions: dict[str, str], peak: dict[str, float]) -> dict[str, float]:
    """Per direction: sum over its graphs of GMACs / the peak rate at that graph's precision, ms."""
    return {direction: round(sum(gmacs[g] / peak[precisions[g]] for g in graphs) * 1e3, 1)
            for direction, graphs in DIRECTION_GRAPHS.items()}
