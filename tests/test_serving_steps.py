"""The steps around the graphs (`codec.steps`, shared by the server and the in-process pipeline) and
the model repository templates, without starting a server."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from hyperthumbnail.codec import steps
from hyperthumbnail.codec.thumbnail import thumbnail_size
from hyperthumbnail.interface import DEFAULT_MAX_PIXELS
from hyperthumbnail.serving import repository

SCALE = 4


def gradient(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], -1).astype(np.uint8)


# ----------------------------------------------------------------------------- pixels


@pytest.mark.parametrize("width,height", [(96, 64), (130, 77), (1, 1), (33, 31)])
def test_preprocess_pads_to_block_grid(width, height):
    image = gradient(width, height)
    chw, size = steps.preprocess(image, SCALE)
    block = 8 * SCALE
    assert size == (width, height)
    assert chw.dtype == np.float32 and chw.shape[0] == 3
    assert chw.shape[1] % block == 0 and chw.shape[2] % block == 0
    assert chw.shape[1] - height < block and chw.shape[2] - width < block
    np.testing.assert_array_equal(chw[:, :height, :width], image.transpose(2, 0, 1) / np.float32(255))
    np.testing.assert_array_equal(chw[:, height:, :width], np.repeat(chw[:, height - 1:height, :width],
                                                                     chw.shape[1] - height, axis=1))
    np.testing.assert_array_equal(chw[:, :, width:], np.repeat(chw[:, :, width - 1:width], chw.shape[2] - width, axis=2))
    # the grid matches the thumbnail's declared size in whole 8x8 blocks
    thumb_w, thumb_h = thumbnail_size(size, SCALE)
    assert chw.shape[1] // block == -(-thumb_h // 8) and chw.shape[2] // block == -(-thumb_w // 8)


def test_postprocess_inverts_preprocess():
    image = gradient(130, 77)
    chw, size = steps.preprocess(image, SCALE)
    np.testing.assert_array_equal(steps.postprocess(chw, size), image)


def test_postprocess_rounds_and_clamps():
    chw = np.array([-0.5, 0.0, 0.4 / 255, 0.6 / 255, 1.0, 1.7, np.nan], np.float32).reshape(1, 1, 7).repeat(3, 0)
    out = steps.postprocess(chw, (7, 1))
    assert out.shape == (1, 7, 3) and out.dtype == np.uint8
    assert out[0, :, 0].tolist() == [0, 0, 0, 1, 255, 255, 0]


@pytest.mark.parametrize("image,match", [
    (np.zeros((8, 8), np.uint8), "HxWx3"),
    (np.zeros((8, 8, 4), np.uint8), "HxWx3"),
    (np.zeros((8, 8, 3), np.float32), "uint8"),
    (np.zeros((0, 8, 3), np.uint8), "no pixels"),
    (np.zeros((100, 101, 3), np.uint8), "limit of 10000 pixels"),
])
def test_preprocess_rejects(image, match):
    with pytest.raises(steps.StepError, match=match):
        steps.preprocess(image, SCALE, max_pixels=10_000)


def test_postprocess_rejects_crop_larger_than_image():
    with pytest.raises(steps.StepError, match="cannot crop"):
        steps.postprocess(np.zeros((3, 32, 32), np.float32), (33, 10))


# ----------------------------------------------------------------------------- JPEG entropy coding


def coefficients_for(size: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    tw, th = thumbnail_size(size, SCALE)
    q = rng.integers(-20, 21, (3, 64, -(-th // 8), -(-tw // 8))).astype(np.int32)
    tables = rng.integers(1, 60, (2, 64)).astype(np.int32)
    return q, tables


def test_thumbnail_round_trip():
    q, tables = coefficients_for((130, 77))
    data = steps.encode_thumbnail(q, tables, (130, 77), SCALE)
    q2, tables2, size = steps.decode_thumbnail(data, SCALE)
    assert size == (130, 77) and q2.dtype == np.int32 and tables2.dtype == np.int32
    np.testing.assert_array_equal(q2, q)
    np.testing.assert_array_equal(tables2, tables)


def test_thumbnail_errors_are_step_errors():
    q, tables = coefficients_for((96, 64))
    with pytest.raises(steps.StepError, match="cannot write"):
        steps.encode_thumbnail(q, tables * 0, (96, 64), SCALE)
    data = steps.encode_thumbnail(q, tables, (96, 64), SCALE)
    with pytest.raises(steps.StepError, match="scale 4, this decoder rebuilds scale 2"):
        steps.decode_thumbnail(data, 2)
    with pytest.raises(steps.StepError, match="not a JPEG"):
        steps.decode_thumbnail(b"nope", SCALE)
    with pytest.raises(steps.StepError, match="exceeds the limit"):
        steps.decode_thumbnail(data, SCALE, max_pixels=1000)
    with pytest.raises(steps.StepError, match="expected thumbnail bytes"):
        steps.decode_thumbnail("text", SCALE)


def test_batches():
    images = np.stack([gradient(130, 77)] * 2)
    padded, sizes = steps.pad_batch(images, SCALE)
    assert padded.shape == (2, 96, 160, 3) and sizes.tolist() == [[130, 77], [130, 77]] and sizes.dtype == np.int32
    np.testing.assert_array_equal(steps.crop_batch(padded, sizes), images)

    q, tables = coefficients_for((130, 77))
    thumbs = steps.encode_thumbnail_batch(np.stack([q, q]), np.stack([tables, tables]), sizes, SCALE)
    assert thumbs.shape == (2, 1) and thumbs.dtype == np.object_
    q2, tables2, sizes2 = steps.decode_thumbnail_batch(thumbs, SCALE)
    assert q2.shape == (2, *q.shape) and tables2.shape == (2, 2, 64) and sizes2.tolist() == sizes.tolist()

    other = steps.encode_thumbnail(*coefficients_for((300, 200)), (300, 200), SCALE)
    mixed = np.array([[thumbs[0, 0]], [other]], dtype=np.object_)
    with pytest.raises(steps.StepError, match="separate requests"):
        steps.decode_thumbnail_batch(mixed, SCALE)


# ----------------------------------------------------------------------------- repository templates


def parse_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def configs(root: Path, gpu: bool | str) -> dict[str, model_config_pb2.ModelConfig]:
    """The configs of a target: False/'cpu' the templates, True/'gpu' or 'openvino' their variants."""
    variant = {False: "cpu", True: "gpu"}.get(gpu, gpu)
    out = {}
    for config in sorted(root.glob("*/config.pbtxt")):
        other = config.parent / "configs" / f"{variant}.pbtxt"
        out[config.parent.name] = parse_config(other if variant != "cpu" and other.exists() else config)
    return out


@pytest.mark.parametrize("gpu", [False, True, "openvino"], ids=["cpu", "gpu", "openvino"])
def test_template_configs_parse_and_ensembles_are_wired(gpu):
    models = configs(repository.template_dir(), gpu)
    assert {"preprocess", "encoder", "qpm", "jpeg_encode", "jpeg_decode", "decoder", "postprocess",
            "hyperthumbnail_encode", "hyperthumbnail_decode"} <= set(models)
    for name, config in models.items():
        assert config.name == name
        assert config.max_batch_size >= 8
    for name in ("hyperthumbnail_encode", "hyperthumbnail_decode"):
        ensemble = models[name]
        assert ensemble.platform == "ensemble"
        # tensor name -> (dtype, dims) as produced so far, starting from the ensemble inputs
        produced = {t.name: (t.data_type, list(t.dims)) for t in ensemble.input}
        for step in ensemble.ensemble_scheduling.step:
            model = models[step.model_name]
            assert model.max_batch_size >= ensemble.max_batch_size
            inputs = {t.name: (t.data_type, list(t.dims)) for t in model.input}
            outputs = {t.name: (t.data_type, list(t.dims)) for t in model.output}
            assert set(step.input_map) == set(inputs), (name, step.model_name)
            for key, tensor in step.input_map.items():
                assert produced[tensor] == inputs[key], (step.model_name, key)
            for key, tensor in step.output_map.items():
                produced[tensor] = outputs[key]
        for output in ensemble.output:
            assert produced[output.name] == (output.data_type, list(output.dims))


def test_interface_of_the_ensembles():
    models = configs(repository.template_dir(), gpu=False)
    enc, dec = models["hyperthumbnail_encode"], models["hyperthumbnail_decode"]
    uint8, string, fp32 = model_config_pb2.TYPE_UINT8, model_config_pb2.TYPE_STRING, model_config_pb2.TYPE_FP32
    # IMAGE, plus the optional rate-control and metadata inputs (requests without them keep working)
    assert [(t.name, t.data_type, list(t.dims), t.optional) for t in enc.input] == [
        ("IMAGE", uint8, [-1, -1, 3], False), ("TABLE_SCALE", fp32, [1], True),
        ("ICC_PROFILE", string, [1], True), ("EXIF", string, [1], True)]
    assert [(t.name, t.data_type, list(t.dims)) for t in enc.output] == [("THUMBNAIL", string, [1])]
    assert [(t.name, t.data_type, list(t.dims)) for t in dec.input] == [("THUMBNAIL", string, [1])]
    # IMAGE, plus the metadata the thumbnail carries (a client asking for IMAGE only gets IMAGE)
    assert [(t.name, t.data_type, list(t.dims)) for t in dec.output] == [
        ("IMAGE", uint8, [-1, -1, 3]), ("ICC_PROFILE", string, [1]), ("EXIF", string, [1])]


def test_gpu_model_conversion(tmp_path):
    for name in repository.NEURAL_MODELS:
        shutil.copytree(repository.template_dir() / name, tmp_path / name)
        (tmp_path / name / "1" / "model.onnx").write_bytes(b"onnx")
    plan = tmp_path / "decoder.plan"
    plan.write_bytes(b"plan")
    for name in repository.NEURAL_MODELS:
        repository._make_gpu_model(tmp_path / name, plan if name == "decoder" else None)
        config = parse_config(tmp_path / name / "config.pbtxt")
        assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]
        assert not (tmp_path / name / "1" / "model.py").exists() and not (tmp_path / name / "configs").exists()
        expected = "tensorrt_plan" if name == "decoder" else "onnxruntime_onnx"
        assert config.platform == expected and not config.backend
        # a plan takes only its profile's batch sizes (here the default 2)
        assert config.max_batch_size == (2 if name == "decoder" else 8)
        assert max(config.dynamic_batching.preferred_batch_size) <= config.max_batch_size
    assert sorted(p.name for p in (tmp_path / "decoder" / "1").iterdir()) == ["model.plan"]
    qpm = parse_config(tmp_path / "qpm" / "config.pbtxt")
    assert qpm.input[1].name == "table_scale" and qpm.input[1].HasField("reshape")


def test_openvino_model_conversion(tmp_path):
    """The NGC CPU target: each neural model is the same graph on Triton's openvino backend."""
    for name in repository.NEURAL_MODELS:
        shutil.copytree(repository.template_dir() / name, tmp_path / name)
        (tmp_path / name / "1" / "model.onnx").write_bytes(b"onnx")
        repository._make_openvino_model(tmp_path / name)
        config = parse_config(tmp_path / name / "config.pbtxt")
        assert config.backend == "openvino" and not config.platform
        assert config.default_model_filename == "model.onnx"
        assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
        assert config.parameters["PERFORMANCE_HINT"].string_value == "LATENCY"
        assert ("HINT_BF16" in config.parameters) == (name != "qpm")  # the QPM rounds its tables
        assert sorted(p.name for p in (tmp_path / name / "1").iterdir()) == ["model.onnx"]
        assert not (tmp_path / name / "configs").exists()


def test_set_max_batch_size():
    text = (repository.template_dir() / "encoder" / "configs" / "gpu.pbtxt").read_text()
    config = parse_config_text(repository.set_max_batch_size(text, 4))
    assert config.max_batch_size == 4 and list(config.dynamic_batching.preferred_batch_size) == [4]
    config = parse_config_text(repository.set_max_batch_size(text, 1))
    assert config.max_batch_size == 1 and list(config.dynamic_batching.preferred_batch_size) == [1]


def parse_config_text(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_set_parameter():
    text = (repository.template_dir() / "preprocess" / "config.pbtxt").read_text()
    changed = repository.set_parameter(text, "scale", "2")
    config = text_format.Parse(changed, model_config_pb2.ModelConfig())
    assert config.parameters["scale"].string_value == "2"
    assert config.parameters["max_pixels"].string_value == str(DEFAULT_MAX_PIXELS)
    with pytest.raises(repository.RepositoryError):
        repository.set_parameter(text, "no_such_key", "1")


# ----------------------------------------------------------------------------- builder (export stubbed)


@pytest.fixture
def fake_export(monkeypatch, tmp_path_factory):
    """Skip the real ONNX export (tests/test_server.py runs it): write placeholder graphs, into a
    graph cache of their own (the builder exports into the weights' cache: placeholders in the
    shared one would break every later test that runs the shipped weights' graphs)."""
    import hyperthumbnail.export.onnx_export as onnx_export

    monkeypatch.setenv("HYPERTHUMBNAIL_CACHE", str(tmp_path_factory.mktemp("graph-cache")))

    calls = []

    def export_graph(model, name, path, opset=None):
        calls.append(name)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(b"onnx " + name.encode())
        return Path(path)

    monkeypatch.setattr(onnx_export, "export_graph", export_graph)
    return calls


@pytest.fixture(scope="module")
def small_model():
    import torch

    from hyperthumbnail.model import HyperThumbnail

    torch.manual_seed(0)
    return HyperThumbnail().eval()


def test_build_cpu_repository_and_stamp(tmp_path, fake_export):
    from hyperthumbnail.model import HyperThumbnail, ModelConfig

    small_model = HyperThumbnail(ModelConfig(scale=2)).eval()
    out = repository.build_repository(tmp_path / "repo", weights=small_model, scale=2)
    assert fake_export == ["encoder", "qpm", "decoder_features", "decoder_body"]  # the decoder split for tiling
    for name in ("jpeg_decode", "decoder"):
        assert parse_config(out / name / "config.pbtxt").parameters["scale"].string_value == "2"
    for name in ("encoder", "qpm"):
        assert (out / name / "1" / "model.onnx").is_file() and (out / name / "1" / "model.py").is_file()
    assert sorted(p.name for p in (out / "decoder" / "1").iterdir()) == [
        "decoder_body.onnx", "decoder_features.onnx", "model.py"]
    for name in repository.NEURAL_MODELS:  # the in-process pipeline's defaults
        parameters = parse_config(out / name / "config.pbtxt").parameters
        assert (parameters["runtime"].string_value, parameters["precision"].string_value) == ("openvino", "auto")
    assert (out / "hyperthumbnail_encode" / "1").is_dir() and (out / "manifest.json").is_file()
    # the encoder pads and the decoder crops: no pixel steps, no NGC ensembles left behind
    assert not (out / "preprocess").exists() and not (out / "postprocess").exists()
    assert [s.model_name for s in parse_config(out / "hyperthumbnail_encode" / "config.pbtxt").ensemble_scheduling.step] == [
        "encoder", "qpm", "jpeg_encode"]
    assert not (out / "hyperthumbnail_encode" / "configs").exists()
    assert repository.read_stamp(out)["scale"] == 2
    repository.build_repository(out, weights=small_model, scale=2)  # current: nothing to do
    assert len(fake_export) == 4
    repository.build_repository(out, weights=small_model, scale=2, rebuild=True)
    assert len(fake_export) == 8
    (out / "decoder" / "1" / "decoder_body.onnx").unlink()  # incomplete: rebuilt
    repository.build_repository(out, weights=small_model, scale=2)
    assert len(fake_export) == 12 and not list(tmp_path.glob(".repo*"))  # no staging dirs left
    repository.build_repository(out, weights=small_model, scale=2, runtime="onnx", precision="f32")  # changed
    assert len(fake_export) == 16
    for name in repository.NEURAL_MODELS:
        parameters = parse_config(out / name / "config.pbtxt").parameters
        assert (parameters["runtime"].string_value, parameters["precision"].string_value) == ("onnx", "f32")


def test_build_openvino_repository(tmp_path, fake_export, small_model):
    out = repository.build_repository(tmp_path / "repo", weights=small_model, target="openvino")
    assert fake_export == ["encoder_u8", "qpm", "decoder_u8"]  # uint8 in, uint8 out: no float HR image travels
    models = configs(out, gpu=False)
    assert {models[name].backend for name in repository.NEURAL_MODELS} == {"openvino"}
    assert (out / "decoder" / "1" / "model.onnx").read_bytes() == b"onnx decoder_u8"
    assert (out / "encoder" / "1" / "model.onnx").read_bytes() == b"onnx encoder_u8"
    assert models["preprocess"].backend == "python" and not list(out.glob("*/configs"))
    assert [s.model_name for s in models["hyperthumbnail_decode"].ensemble_scheduling.step] == [
        "jpeg_decode", "decoder", "postprocess"]


def test_build_gpu_repository_with_plans(tmp_path, fake_export, small_model):
    plans = tmp_path / "plans"
    plans.mkdir()
    for name in ("encoder", "decoder"):
        (plans / f"{name}.plan").write_bytes(b"plan")
    out = repository.build_repository(tmp_path / "repo", weights=small_model, target="gpu", plans=plans,
                                      plan_max_batch=2)
    models = configs(out, gpu=False)
    assert models["encoder"].platform == models["decoder"].platform == "tensorrt_plan"
    assert models["qpm"].platform == "onnxruntime_onnx" and models["qpm"].max_batch_size == 8
    assert models["hyperthumbnail_encode"].max_batch_size == models["hyperthumbnail_decode"].max_batch_size == 2
    assert models["preprocess"].backend == "python"
    assert not list(out.glob("*/configs"))


def test_build_errors(tmp_path, fake_export, small_model):
    with pytest.raises(repository.RepositoryError, match="weights not found"):
        repository.build_repository(tmp_path / "a", weights=tmp_path / "missing.safetensors")
    with pytest.raises(repository.RepositoryError, match="target"):
        repository.build_repository(tmp_path / "a", weights=small_model, target="tpu")
    with pytest.raises(repository.RepositoryError, match="GPU target"):
        repository.build_repository(tmp_path / "a", weights=small_model, plans=tmp_path)
    with pytest.raises(repository.RepositoryError, match="unknown runtime"):
        repository.build_repository(tmp_path / "a", weights=small_model, runtime="tvm")
    with pytest.raises(repository.RepositoryError, match="needs --runtime openvino"):
        repository.build_repository(tmp_path / "a", weights=small_model, runtime="onnx", precision="bf16")
    with pytest.raises(repository.RepositoryError, match="for scale 4, not 2"):
        repository.build_repository(tmp_path / "a", weights=small_model, scale=2)
    assert fake_export == []


def test_serve_cli_builds_every_target(tmp_path, fake_export, capsys, monkeypatch):
    """`hyperthumbnail serve --target` offers every repository target; the NGC ones are build-only."""
    from hyperthumbnail.cli import build_parser, main

    monkeypatch.setenv("HYPERTHUMBNAIL_CACHE", str(tmp_path / "cache"))  # placeholder graphs stay here

    for target in repository.TARGETS:
        assert build_parser().parse_args(["serve", "--target", target]).target == target
    assert main(["serve", "--target", "openvino", "--model-repository", str(tmp_path / "repo")]) == 1
    assert "--target openvino --build-only" in capsys.readouterr().err
    assert main(["serve", "--target", "openvino", "--build-only", "--model-repository", str(tmp_path / "repo")]) == 0
    assert fake_export == ["encoder_u8", "qpm", "decoder_u8"]
    models = configs(tmp_path / "repo", gpu=False)
    assert {models[name].backend for name in repository.NEURAL_MODELS} == {"openvino"}
