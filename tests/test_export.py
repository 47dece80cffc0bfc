"""ONNX / TensorRT export: graph validity, ONNX Runtime vs PyTorch parity, dynamic shapes,
polygraphy, the GPU path (or its clear refusal on a CPU machine) and the MAC counter."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from hyperthumbnail.cli import main as cli_main
from hyperthumbnail.export import (
    GRAPH_IO,
    GRAPH_NAMES,
    GPUUnavailableError,
    OnnxGraphs,
    build_plan,
    check_plan,
    compare_with_torch,
    count_macs,
    decoder_gmacs_6k,
    export_onnx,
    fp16_graph,
    plan_profiles,
    require_tensorrt,
    sample_images,
)
from hyperthumbnail.export.parity import HR_TOLERANCE, TIE_MARGIN
from hyperthumbnail.model import HyperThumbnail, ModelConfig
from hyperthumbnail.model.dct import image_to_coefficients
from hyperthumbnail.weights import file_sha256, save_weights

ONNX_DTYPES = {"float32": TensorProto.FLOAT, "int32": TensorProto.INT32}


def _gpu_problem() -> str | None:
    try:
        require_tensorrt()
    except GPUUnavailableError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="module")
def model() -> HyperThumbnail:
    torch.manual_seed(0)
    m = HyperThumbnail(ModelConfig()).eval()
    # Output convs start at zero (residual learning); left so, the encoder U-Net and the decoder
    # body would not reach any output and their export would go unchecked.
    with torch.no_grad():
        for module in m.modules():
            if isinstance(module, nn.Conv2d) and not module.weight.any():
                nn.init.normal_(module.weight, std=0.01)
    return m


@pytest.fixture(scope="module")
def onnx_dir(model: HyperThumbnail, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx")
    export_onnx(model, out)
    return out


@pytest.fixture(scope="module")
def graphs(onnx_dir: Path) -> OnnxGraphs:
    return OnnxGraphs(onnx_dir)


def test_graphs_pass_onnx_checker(onnx_dir: Path) -> None:
    for name in GRAPH_NAMES:
        path = onnx_dir / f"{name}.onnx"
        onnx.checker.check_model(str(path), full_check=True)
        proto = onnx.load(str(path))
        onnx.shape_inference.infer_shapes(proto, strict_mode=True)
        assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17


def test_graph_interface_and_manifest(onnx_dir: Path, model: HyperThumbnail) -> None:
    for name in GRAPH_NAMES:
        proto = onnx.load(str(onnx_dir / f"{name}.onnx"), load_external_data=False)
        for values, specs in zip((proto.graph.input, proto.graph.output), GRAPH_IO[name]):
            assert [v.name for v in values] == [s.name for s in specs]
            for value, spec in zip(values, specs):
                assert value.type.tensor_type.elem_type == ONNX_DTYPES[spec.dtype], (name, spec.name)
                dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
                assert dims == list(spec.shape), (name, spec.name)
    manifest = json.loads((onnx_dir / "manifest.json").read_text())
    assert manifest["scale"] == 4 and manifest["opset"] >= 17
    assert manifest["model_config"] == model.config.to_dict()
    assert manifest["graphs"]["qpm"]["outputs"][0] == {
        "name": "quantized", "dtype": "int32", "shape": ["batch", 3, 64, "grid_height", "grid_width"]}


@pytest.mark.parametrize("size", [(96, 128), (192, 256)])
def test_onnxruntime_matches_pytorch(model: HyperThumbnail, graphs: OnnxGraphs, size: tuple[int, int]) -> None:
    for name, image in sample_images(*size, seed=1).items():
        r = compare_with_torch(model, graphs, image, name)
        assert r.hr_max_diff <= HR_TOLERANCE, r
        assert r.tables_equal, r
        assert r.qpm_mismatches == 0, r  # same coefficients in: same integers out
        # Through the encoder, float noise may only flip exact rounding ties, by one step.
        assert r.mismatches <= max(1, 1e-4 * r.coefficients), r
        assert r.max_q_step <= 1 and r.worst_tie_distance <= TIE_MARGIN, r
        assert r.coef_max_diff < 1e-2, r
        assert r.ok


def test_parity_check_catches_a_wrong_coefficient(model: HyperThumbnail, graphs: OnnxGraphs) -> None:
    """A mismatch that is no rounding tie must fail the check (the check itself can fail)."""

    class OffByOne(OnnxGraphs):
        def __init__(self, inner: OnnxGraphs):
            self.sessions = inner.sessions

        def run(self, name: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
            out = super().run(name, **inputs)
            if name == "qpm":
                out["quantized"] = out["quantized"].copy()
                out["quantized"][0, 0, 0, 0, 0] += 1  # a DC coefficient: nowhere near x.5 here
            return out

    image = sample_images(96, 128)["smooth 128x96"]
    with torch.no_grad():
        coef = image_to_coefficients(model.encoder(torch.from_numpy(image)))
    tables = model.encode(torch.from_numpy(image))[1].float()
    frac = abs(float(coef[0, 0, 0, 0, 0] / tables[0, 0, 0])) % 1
    assert abs(frac - 0.5) > TIE_MARGIN  # precondition of the tamper above
    r = compare_with_torch(model, OffByOne(graphs), image, "tampered")
    assert r.mismatches == 1 and r.worst_tie_distance > TIE_MARGIN
    assert not r.ok


def test_dynamic_batch_and_sizes(model: HyperThumbnail, graphs: OnnxGraphs) -> None:
    landscape = np.concatenate(list(sample_images(192, 256, seed=2).values()))  # batch 2
    q, tables = graphs.encode(landscape, np.array([0.5, 2.0], np.float32))
    assert q.shape == (2, 3, 64, 6, 8) and q.dtype == np.int32
    assert tables.shape == (2, 2, 64) and tables.dtype == np.int32
    assert not np.array_equal(tables[0], tables[1])  # per-image table_scale applied
    assert graphs.decode(q, tables).shape == (2, 3, 192, 256)
    r = compare_with_torch(model, graphs, landscape, "batch 2", np.array([0.5, 2.0], np.float32))
    assert r.ok, r

    portrait = sample_images(160, 96, seed=3)["smooth 96x160"]  # batch 1, other size, same sessions
    q, tables = graphs.encode(portrait, np.ones(1, np.float32))
    assert q.shape == (1, 3, 64, 5, 3)
    assert graphs.decode(q, tables).shape == (1, 3, 160, 96)
    assert compare_with_torch(model, graphs, portrait, "portrait").ok


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")  # its 0/0 rel. error
def test_polygraphy_onnxrt_runner_matches_pytorch(model: HyperThumbnail, onnx_dir: Path) -> None:
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.comparator import Comparator, SimpleCompareFunc

    image = np.concatenate(list(sample_images(96, 128, seed=4).values()))
    hr = torch.from_numpy(image)
    with torch.no_grad():
        coef = image_to_coefficients(model.encoder(hr))
        q, tables = model.encode(hr)
        hr_hat = model.decode(q, tables)
    q, tables = q.to(torch.int32).numpy(), tables.to(torch.int32).numpy()
    cases = {
        "encoder": ({"image": image}, {"coefficients": coef.numpy()}),
        "qpm": ({"coefficients": coef.numpy(), "table_scale": np.ones(2, np.float32)},
                {"quantized": q, "tables": tables}),
        "decoder": ({"quantized": q, "tables": tables}, {"image": hr_hat.numpy()}),
    }
    atol = {"coefficients": 1e-2, "quantized": 0, "tables": 0, "image": HR_TOLERANCE}
    for name, (feed, expected) in cases.items():
        runner = OnnxrtRunner(SessionFromOnnx(str(onnx_dir / f"{name}.onnx"), providers=["CPUExecutionProvider"]))
        results = Comparator.run([runner], data_loader=[feed])
        results.add([expected], runner_name="pytorch")
        accuracy = Comparator.compare_accuracy(results, compare_func=SimpleCompareFunc(atol=atol, rtol=0.0))
        assert bool(accuracy), name


@pytest.mark.gpu
def test_tensorrt_plans_match_onnxruntime(model: HyperThumbnail, onnx_dir: Path, graphs: OnnxGraphs,
                                          tmp_path: Path) -> None:
    problem = _gpu_problem()
    if problem:
        pytest.skip(f"no TensorRT here: {problem}")
    profiles = plan_profiles(scale=4, max_batch=2, max_hr_side=512, opt_hr_size=(192, 256))  # fast builds
    image = np.concatenate(list(sample_images(192, 256).values()))
    coef = graphs.run("encoder", image=image)["coefficients"]
    scale = np.ones(2, np.float32)
    q = graphs.run("qpm", coefficients=coef, table_scale=scale)
    inputs = {"encoder": {"image": image}, "qpm": {"coefficients": coef, "table_scale": scale},
              "decoder": {"quantized": q["quantized"], "tables": q["tables"]}}
    for name in GRAPH_NAMES:  # fp32 without TF32: TensorRT must agree with ONNX Runtime closely
        plan = build_plan(onnx_dir / f"{name}.onnx", tmp_path / f"{name}.plan", profiles[name], fp16=False, tf32=False)
        diffs = check_plan(plan, onnx_dir / f"{name}.onnx", inputs[name])
        limits = {"coefficients": 1e-2, "quantized": 1, "tables": 0, "image": HR_TOLERANCE}
        assert all(diffs[k] <= limits[k] for k in diffs), (name, diffs)
    plan = build_plan(onnx_dir / "decoder.onnx", tmp_path / "decoder_fp16.plan", profiles["decoder"], fp16=True)
    assert check_plan(plan, onnx_dir / "decoder.onnx", inputs["decoder"])["image"] <= 8 / 255


def test_fp16_graphs_for_tensorrt11_run_in_onnxruntime(graphs: OnnxGraphs, onnx_dir: Path) -> None:
    """The fp16 copies TensorRT 11 builds from are valid graphs that compute the same thing."""
    import onnxruntime as ort

    pytest.importorskip("onnxconverter_common")
    image = sample_images(96, 128)["smooth 128x96"]
    q, tables = graphs.encode(image, np.ones(1, np.float32))
    cases = {"encoder": ({"image": image}, 1.0), "decoder": ({"quantized": q, "tables": tables}, 4 / 255)}
    for name, (feed, tolerance) in cases.items():
        proto = fp16_graph(onnx_dir / f"{name}.onnx")
        onnx.checker.check_model(proto, full_check=True)
        assert sum(t.data_type == TensorProto.FLOAT16 for t in proto.graph.initializer) > 10
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        (half,) = session.run(None, feed)
        (full,) = graphs.run(name, **feed).values()
        assert half.dtype == np.float32 and half.shape == full.shape
        assert np.abs(half - full).max() <= tolerance, name  # coefficients span +-1024; images [0,1]


def test_export_target_gpu_fails_fast_without_gpu(tmp_path: Path) -> None:
    if _gpu_problem() is None:
        pytest.skip("a GPU and TensorRT are present: the refusal path does not apply")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "hyperthumbnail", "export", "--out", str(tmp_path / "out"),
                           "--target", "gpu"], capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - start
    assert proc.returncode != 0
    assert "TensorRT plans need an NVIDIA GPU" in proc.stderr
    assert "pip install 'hyperthumbnail[gpu]'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert elapsed < 15, f"took {elapsed:.1f} s: the check must come before any export work"
    assert not (tmp_path / "out").exists()


def test_export_cli_writes_graphs_and_checks(model: HyperThumbnail, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    weights = tmp_path / "w.safetensors"
    save_weights(model, weights, {"note": "random init, for the export test"})
    assert cli_main(["export", "--out", str(tmp_path / "out"), "--fp16"]) == 1  # fp16 is for TensorRT only
    assert "--target gpu" in capsys.readouterr().err
    assert cli_main(["export", "--out", str(tmp_path / "out"), "--weights", str(weights), "--check"]) == 0
    printed = capsys.readouterr().out
    assert "ONNX Runtime (CPU) vs PyTorch" in printed and "NO" not in printed
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["weights_sha256"] == file_sha256(weights)
    assert all((tmp_path / "out" / f"{name}.onnx").is_file() for name in GRAPH_NAMES)


def _tiny_graph() -> onnx.ModelProto:
    """Every counted op once, with dynamic N/H/W inputs; MACs worked out by hand in the test."""
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return onnx.numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),  # 3->8, 3x3
        helper.make_node("Conv", ["a", "w2"], ["b"], pads=[1, 1, 1, 1], group=8),  # depthwise 3x3
        helper.make_node("ConvTranspose", ["b", "w3"], ["c"], strides=[2, 2]),  # 8->4, 2x2, x2 up
        helper.make_node("Conv", ["c", "w4"], ["d"], strides=[2, 2], pads=[1, 1, 1, 1]),  # 4->6, 3x3, /2
        helper.make_node("Flatten", ["d"], ["e"], axis=1),
        helper.make_node("MatMul", ["e", "m"], ["f"]),  # 384 -> 10
        helper.make_node("Gemm", ["f", "g"], ["h"], transB=1),  # 10 -> 5
        helper.make_node("Einsum", ["h", "k"], ["y"], equation="nk,kj->nj"),  # 5 -> 7
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 7])],
        [init("w1", 8, 3, 3, 3), init("w2", 8, 1, 3, 3), init("w3", 8, 4, 2, 2), init("w4", 6, 4, 3, 3),
         init("m", 384, 10), init("g", 5, 10), init("k", 5, 7)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_count_macs_tiny_graph_by_hand(tmp_path: Path) -> None:
    path = tmp_path / "tiny.onnx"
    onnx.save(_tiny_graph(), str(path))
    onnx.checker.check_model(str(path), full_check=True)
    n, h, w = 2, 8, 8
    want = {
        "Conv": n * 8 * h * w * (3 * 3 * 3)  # standard conv: out elements x Cin*kh*kw
        + n * 8 * h * w * (1 * 3 * 3)  # depthwise: Cin/groups = 1
        + n * 6 * h * w * (4 * 3 * 3),  # strided conv back to 8x8
        "ConvTranspose": n * 8 * h * w * (4 * 2 * 2),  # in elements x Cout*kh*kw
        "MatMul": n * 10 * 384,
        "Gemm": n * 5 * 10,
        "Einsum": n * 5 * 7,
    }
    got = count_macs(path, {"x": (n, 3, h, w)})
    assert got["by_op"] == want
    assert got["total"] == sum(want.values()) == 27648 + 9216 + 27648 + 16384 + 7680 + 100 + 70
    with pytest.raises(ValueError, match="missing"):
        count_macs(path, {})


def test_decoder_macs_match_module_count(model: HyperThumbnail, onnx_dir: Path) -> None:
    """The graph count equals an independent count from PyTorch conv hooks (+ the functional IDCT
    and colour transform), and the 6K figure is the same per-pixel cost scaled to 6144x4096."""
    grid = (4, 6)
    counted = 0

    def hook(module: nn.Conv2d, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        nonlocal counted
        counted += output.numel() * math.prod(module.weight.shape[1:])

    handles = [m.register_forward_hook(hook) for m in model.decoder.modules() if isinstance(m, nn.Conv2d)]
    try:
        q = torch.zeros(1, 3, 64, *grid, dtype=torch.int32)
        model.decode(q, torch.ones(1, 2, 64, dtype=torch.int32))
    finally:
        for handle in handles:
            handle.remove()
    blocks = grid[0] * grid[1]
    counted += 3 * blocks * 64 * 64  # IDCT: a 64x64 matrix per 8x8 block and component
    counted += 3 * 3 * blocks * 64  # YCbCr -> RGB: 3x3 per LR pixel
    # the bicubic skip folded into the tail: 48 phases x 5x5 taps per LR pixel, three times (the
    # thumbnail and the kernel each in two parts, fold.py)
    counted += 3 * blocks * 64 * 3 * 16 * 25
    macs = count_macs(onnx_dir / "decoder.onnx", {"quantized": (1, 3, 64, *grid), "tables": (1, 2, 64)})
    assert macs["total"] == counted

    six_k = decoder_gmacs_6k(onnx_dir / "decoder.onnx")
    per_block = counted / blocks
    assert six_k["6144x4096"] == six_k["4096x6144"] == pytest.approx(per_block * 128 * 192 / 1e9, rel=1e-12)


def test_model_id_names_the_encoder_and_the_card_records_it(model: HyperThumbnail, tmp_path: Path) -> None:
    """The id a thumbnail's marker carries: the same for the model, its file and its card; moved by
    the encoder or QPM, not by the decoder; `also_decodes` adds older encoders the decoder serves."""
    import copy

    from hyperthumbnail.weights import WEIGHTS_DIR, card_path, model_id, served_model_ids

    path = tmp_path / "w.safetensors"
    save_weights(model, path, {}, also_decodes=("0123456789abcdef",))
    own = model_id(model)
    assert model_id(path) == own and len(own) == 16
    assert served_model_ids(path) == (own, "0123456789abcdef")
    card = json.loads(card_path(path).read_text())
    assert card["model_id"] == own and card["served_model_ids"] == [own, "0123456789abcdef"]
    save_weights(model, path, {}, also_decodes=("fedcba9876543210",))  # the file rewritten: not the cached answer
    assert served_model_ids(path) == (own, "fedcba9876543210")
    changed = copy.deepcopy(model)
    with torch.no_grad():
        next(changed.decoder.parameters()).add_(1.0)
    assert model_id(changed) == own
    with torch.no_grad():
        next(changed.qpm.parameters()).add_(1.0)
    assert model_id(changed) != own
    for shipped in sorted(WEIGHTS_DIR.glob("hyperthumbnail_x*.safetensors")):
        card = json.loads(card_path(shipped).read_text())
        assert card["served_model_ids"] == list(served_model_ids(shipped)), shipped.name
        assert card["model_id"] == model_id(shipped), shipped.name
