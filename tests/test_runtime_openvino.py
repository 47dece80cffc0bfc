"""The OpenVINO runtime: same outputs as ONNX Runtime on the exported graphs (f32), bf16 where the
CPU has it, the f32 fallback on a CPU without it (forced), and the runner's input handling."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import photo_like
from torch import nn

from hyperthumbnail.codec.images import pad_to_multiple
from hyperthumbnail.codec.steps import encode_thumbnail, postprocess
from hyperthumbnail.cpu import cpu_flags, vector_extensions
from hyperthumbnail.export import export_onnx
from hyperthumbnail.export.onnx_export import SPLIT_DECODER_NAMES, export_graph
from hyperthumbnail.model import HyperThumbnail, ModelConfig
from hyperthumbnail.runtime import openvino as ov_runtime
from hyperthumbnail.runtime.graphs import PREFERRED_PRECISION, Graphs, graph_precisions
from hyperthumbnail.runtime.onnx import OnnxRunner
from hyperthumbnail.runtime.openvino import OpenVinoRunner, cpu_has_native_bf16, resolve_precision


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> Path:
    """A small random model's three graphs (every conv non-zero, so every path reaches the output)."""
    torch.manual_seed(0)
    model = HyperThumbnail(ModelConfig(encoder_feats=16, decoder_feats=8, decoder_blocks=2,
                                       coef_feats=8, coef_blocks=2)).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d) and not module.weight.any():
                nn.init.normal_(module.weight, std=0.01)
    out = tmp_path_factory.mktemp("graphs")
    export_onnx(model, out)
    for name in ("decoder_u8", *SPLIT_DECODER_NAMES):
        export_graph(model, name, out / f"{name}.onnx")
    return out


def _image(width: int = 96, height: int = 64) -> np.ndarray:
    return (photo_like(width, height).transpose(2, 0, 1)[None] / np.float32(255)).astype(np.float32)


def _run_all(runner_for, graphs: Path, image: np.ndarray) -> dict[str, np.ndarray]:
    coefficients = runner_for(graphs / "encoder.onnx").run({"image": image})["coefficients"]
    qpm = runner_for(graphs / "qpm.onnx").run({"coefficients": coefficients,
                                                 "table_scale": np.ones((len(image), 1), np.float32)})
    decoded = runner_for(graphs / "decoder.onnx").run({"quantized": qpm["quantized"], "tables": qpm["tables"]})
    return {"coefficients": coefficients, **qpm, "image": decoded["image"]}


def test_f32_matches_onnxruntime(graphs):
    image = np.concatenate([_image(), _image()[:, :, ::-1]])  # a batch of 2
    ort = _run_all(OnnxRunner, graphs, image)
    ov = _run_all(lambda p: OpenVinoRunner(p, precision="f32"), graphs, image)
    assert ov["coefficients"].dtype == np.float32 and ov["quantized"].dtype == np.int32
    np.testing.assert_allclose(ov["coefficients"], ort["coefficients"], atol=2e-3)
    # Same graphs, same inputs: the QPM and decoder agree to float rounding on ORT's coefficients.
    qpm = OpenVinoRunner(graphs / "qpm.onnx").run({"coefficients": ort["coefficients"],
                                                    "table_scale": np.ones((2, 1), np.float32)})
    np.testing.assert_array_equal(qpm["tables"], ort["tables"])
    np.testing.assert_array_equal(qpm["quantized"], ort["quantized"])
    decoded = OpenVinoRunner(graphs / "decoder.onnx").run({"quantized": ort["quantized"], "tables": ort["tables"]})
    np.testing.assert_allclose(decoded["image"], ort["image"], atol=1e-4)


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bf16")
def test_bf16_decoder_close_to_f32(graphs):
    ort = _run_all(OnnxRunner, graphs, _image())
    runner = OpenVinoRunner(graphs / "decoder.onnx", precision="bf16")
    assert runner.compiled_precision == "bf16"
    decoded = runner.run({"quantized": ort["quantized"], "tables": ort["tables"]})["image"]
    mse = float(np.mean((decoded - ort["image"]) ** 2))
    assert 0 < mse and 10 * np.log10(1 / mse) > 40  # bf16 really ran, and stayed close


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bf16 (avx512_bf16 or amx_bf16)")
def test_bf16_encoder_keeps_its_tail_in_f32(graphs):
    """`f32_tail`: the network runs in bf16, the bicubic base, the sum and the colour/DCT transforms
    after it in f32, so the coefficients move far less than with the whole graph in bf16."""
    image = _image()
    exact = OnnxRunner(graphs / "encoder.onnx").run({"image": image})["coefficients"]
    whole = OpenVinoRunner(graphs / "encoder.onnx", precision="bf16")
    split = OpenVinoRunner(graphs / "encoder.onnx", precision="bf16", f32_tail=True)
    assert (len(whole.stages), len(split.stages)) == (1, 2) and split.compiled_precision == "bf16"
    assert len(OpenVinoRunner(graphs / "encoder.onnx", precision="f32", f32_tail=True).stages) == 1
    error = {name: float(np.abs(runner.run({"image": image})["coefficients"] - exact).mean())
             for name, runner in (("whole", whole), ("split", split))}
    assert 0 < error["split"] < error["whole"] / 2, error
    residual = next(iter(split.stages[0]({"image": image}).values()))
    assert residual.shape == (1, 3, image.shape[2] // 4, image.shape[3] // 4)  # cut at the thumbnail's residual


def test_without_native_bf16_auto_and_bf16_give_f32(graphs, monkeypatch):
    monkeypatch.setenv(ov_runtime.BF16_ENV, "0")
    assert not cpu_has_native_bf16()
    assert resolve_precision("auto", preferred="bf16") == "f32"
    assert resolve_precision("bf16") == "f32"
    runner = OpenVinoRunner(graphs / "decoder.onnx", precision=resolve_precision("auto", preferred="bf16"))
    assert runner.compiled_precision == "f32"
    monkeypatch.setenv(ov_runtime.BF16_ENV, "1")
    assert resolve_precision("auto", preferred="bf16") == "bf16"
    assert resolve_precision("auto", preferred="f32") == "f32"


def test_cpu_flags_decide(tmp_path, monkeypatch):
    monkeypatch.delenv(ov_runtime.BF16_ENV, raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n\n")
    assert "avx512_bf16" in cpu_flags(cpuinfo)
    monkeypatch.setattr(ov_runtime, "cpu_flags", lambda: {"fpu", "avx2", "avx512f"})
    assert not cpu_has_native_bf16()
    assert resolve_precision("auto", preferred="bf16") == "f32"
    monkeypatch.setattr(ov_runtime, "cpu_flags", lambda: {"avx2", "amx_bf16"})
    assert cpu_has_native_bf16()


def test_vector_extensions_are_named_in_a_fixed_order():
    amx = {"fpu", "amx_bf16", "avx512_bf16", "avx2", "amx_tile", "avx512f", "amx_int8", "avx512_vnni"}
    assert vector_extensions(amx) == ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"]
    assert vector_extensions({"sse2"}) == [] and vector_extensions(set()) == []


def test_runner_input_handling(graphs):
    runner = OpenVinoRunner(graphs / "qpm.onnx")
    coefficients = np.zeros((1, 3, 64, 2, 2), np.float64)  # float64 in: cast to the graph's float32
    out = runner.run({"coefficients": coefficients, "table_scale": np.ones((1, 1))})  # Triton's (B, 1)
    assert out["tables"].shape == (1, 2, 64) and out["quantized"].shape == (1, 3, 64, 2, 2)
    with pytest.raises(ValueError, match="missing inputs"):
        runner.run({"coefficients": coefficients})
    with pytest.raises(ValueError, match="unknown precision"):
        OpenVinoRunner(graphs / "qpm.onnx", precision="fp8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("int8")
    with pytest.raises(FileNotFoundError):
        OpenVinoRunner(graphs / "missing.onnx")


def test_outputs_outlive_the_next_call(graphs):
    """The request's buffers are reused: what `run` returned must not change under a later call."""
    runner = OpenVinoRunner(graphs / "encoder.onnx")
    first = runner.run({"image": _image()})["coefficients"]
    kept = first.copy()
    second = runner.run({"image": 1 - _image()})["coefficients"]
    assert first.flags.owndata and np.array_equal(first, kept) and not np.array_equal(first, second)


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_uint8_decoders_equal_todays_postprocessing(graphs, runtime):
    """decoder_u8 and decoder_features -> decoder_body end in the uint8 HWC image that the float
    decoder + `steps.postprocess` give: the same pixels, no float HR image leaves the graph."""
    runner_for = OnnxRunner if runtime == "onnx" else (lambda p: OpenVinoRunner(p, precision="f32"))
    ref = _run_all(OnnxRunner, graphs, np.concatenate([_image(), _image()[:, :, ::-1]]))
    feeds = {"quantized": ref["quantized"], "tables": ref["tables"]}
    floats = runner_for(graphs / "decoder.onnx").run(feeds)["image"]
    expected = np.stack([postprocess(image, (image.shape[2], image.shape[1])) for image in floats])
    u8 = runner_for(graphs / "decoder_u8.onnx").run(feeds)["image"]
    features = runner_for(graphs / "decoder_features.onnx").run(feeds)["features"]
    split = runner_for(graphs / "decoder_body.onnx").run({"features": features})["image"]
    assert u8.dtype == split.dtype == np.uint8 and u8.shape == expected.shape == (2, 64, 96, 3)
    np.testing.assert_array_equal(u8, expected)
    np.testing.assert_array_equal(split, expected)


def test_graph_precisions(monkeypatch):
    monkeypatch.setenv(ov_runtime.BF16_ENV, "1")
    assert graph_precisions("openvino") == PREFERRED_PRECISION
    assert set(graph_precisions("openvino", "f32").values()) == {"f32"}
    monkeypatch.setenv(ov_runtime.BF16_ENV, "0")  # a CPU without native bf16: f32 everywhere
    assert set(graph_precisions("openvino").values()) == {"f32"}
    assert set(graph_precisions("openvino", "bf16").values()) == {"f32"}
    assert set(graph_precisions("onnx").values()) == {"f32"}
    with pytest.raises(ValueError, match="needs --runtime openvino"):
        graph_precisions("onnx", "bf16")
    with pytest.raises(ValueError, match="unknown runtime"):
        graph_precisions("tvm")
    with pytest.raises(ValueError, match="unknown precision"):
        graph_precisions("openvino", "fp8")


@pytest.mark.parametrize("runtime", ["openvino", "onnx"])
def test_graph_set_encodes_and_decodes_tiled_like_untiled(graphs, runtime, monkeypatch):
    """The whole neural path on a small model: thumbnail bytes and pixels do not depend on the
    tile size, and the two runtimes agree closely (f32 everywhere: forced, as on a CPU without bf16)."""
    monkeypatch.setenv(ov_runtime.BF16_ENV, "0")
    image = pad_to_multiple(photo_like(1000, 690, seed=1), 32)  # 32x22 blocks
    results = []
    for tile_pixels in (None, 640 * 640):  # the smallest tile that holds the encoder's margin
        g = Graphs(graphs, 4, runtime, tile_pixels=tile_pixels, body_whole_pixels=0)
        assert set(g.precisions.values()) == {"f32"} and runtime in g.describe()
        coefficients = g.coefficients(image)
        quantized, tables = g.quantize(coefficients)
        data = encode_thumbnail(quantized, tables, (1000, 690), 4)
        results.append((data, g.reconstruct(quantized, tables)))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])
    assert results[0][1].shape == image.shape and results[0][1].dtype == np.uint8


def test_cached_graphs_run_without_importing_the_exporter():
    import subprocess
    import sys

    from hyperthumbnail.runtime.graphs import load_graphs
    from hyperthumbnail.weights import default_weights_path

    # The graph path of the CLI runs without torch once the graphs are cached (torch's import is
    # ~1.7 s of every command on a small machine): imports, loading the cached set, a decode.
    load_graphs(default_weights_path())  # exports into the cache if it is not there yet
    code = ("import sys, numpy as np, hyperthumbnail.pipeline as p\n"
            "pipe = p.Pipeline()\n"
            "pipe.decode(pipe.encode(np.full((64, 96, 3), 128, np.uint8)))\n"
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "False"
