"""The Python-backend model classes without a server: `hyperthumbnail.serving.backends` runs on a
fake `triton_python_backend_utils` (tests/fakes), fed the repository templates' real configs."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import photo_like
from fakes import triton_python_backend_utils as pb_utils
from google.protobuf import json_format, text_format
from onnx import TensorProto, helper
from tritonclient.grpc import model_config_pb2

from hyperthumbnail.codec import steps
from hyperthumbnail.pipeline import Pipeline
from hyperthumbnail.ratecontrol import encode_at_bpp
from hyperthumbnail.serving.repository import template_dir

SCALE = 4


@pytest.fixture
def backends(monkeypatch):
    """The backends module imported against the fake (and forgotten afterwards)."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb_utils)
    monkeypatch.delitem(sys.modules, "hyperthumbnail.serving.backends", raising=False)
    module = importlib.import_module("hyperthumbnail.serving.backends")
    yield module
    sys.modules.pop("hyperthumbnail.serving.backends", None)
    pb_utils.bls_handler = None


def template_config(name: str) -> dict:
    """A template's config.pbtxt as the JSON dict Triton hands `initialize`."""
    config = text_format.Parse((template_dir() / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def make_model(cls, name: str, config: dict, repository: Path | None = None):
    model = cls()
    model.initialize({"model_config": json.dumps(config), "model_name": name,
                      "model_repository": str(repository or template_dir() / name), "model_version": "1"})
    return model


def outputs(response) -> dict[str, np.ndarray]:
    assert not response.has_error(), response.error().message()
    return {t.name(): t.as_numpy() for t in response.output_tensors()}


def test_a_bad_request_fails_alone(backends):
    """One execute call, three requests: the malformed one gets INVALID_ARG naming the model."""
    model = make_model(backends.PreprocessModel, "preprocess", template_config("preprocess"))
    good = photo_like(70, 50)[None]
    responses = model.execute([pb_utils.Request(IMAGE=good), pb_utils.Request(IMAGE=np.zeros((1, 8, 8), np.uint8)),
                               pb_utils.Request(IMAGE=good, TABLE_SCALE=np.array([[2.0]], np.float32))])
    expected_image, expected_size = steps.pad_batch(good, SCALE)
    first, bad, third = responses
    np.testing.assert_array_equal(outputs(first)["IMAGE_PADDED"], expected_image)
    np.testing.assert_array_equal(outputs(first)["HR_SIZE"], expected_size)
    assert outputs(first)["TABLE_SCALE"].tolist() == [[1.0]]  # the config's default where the request has none
    assert outputs(third)["TABLE_SCALE"].tolist() == [[2.0]]
    assert bad.has_error() and bad.error().code == pb_utils.TritonError.INVALID_ARG
    assert bad.error().message().startswith("preprocess: ")


def test_jpeg_models_round_trip(backends):
    encode = make_model(backends.JpegEncodeModel, "jpeg_encode", template_config("jpeg_encode"))
    decode = make_model(backends.JpegDecodeModel, "jpeg_decode", template_config("jpeg_decode"))
    rng = np.random.default_rng(0)
    quantized = rng.integers(-20, 21, (2, 3, 64, 3, 4)).astype(np.int32)
    tables = rng.integers(1, 60, (2, 2, 64)).astype(np.int32)
    hr_size = np.array([[120, 90], [128, 96]], np.int32)
    (thumbnails,) = outputs(encode.execute([pb_utils.Request(QUANTIZED=quantized, TABLES=tables, HR_SIZE=hr_size)])[0]).values()
    assert thumbnails.shape == (2, 1) and thumbnails[0, 0][:2] == b"\xff\xd8"
    assert thumbnails[0, 0] == steps.encode_thumbnail(quantized[0], tables[0], (120, 90), SCALE)
    decoded = outputs(decode.execute([pb_utils.Request(THUMBNAIL=thumbnails)])[0])
    np.testing.assert_array_equal(decoded["QUANTIZED"], quantized)
    np.testing.assert_array_equal(decoded["TABLES"], tables)
    np.testing.assert_array_equal(decoded["HR_SIZE"], hr_size)
    broken = decode.execute([pb_utils.Request(THUMBNAIL=np.array([[b"not a jpeg"]], np.object_))])[0]
    assert broken.has_error() and broken.error().code == pb_utils.TritonError.INVALID_ARG


def test_onnx_model_merges_same_shape_requests_and_isolates_failures(backends, tmp_path):
    """Requests of one shape run as one batch; a request that breaks the graph fails alone."""
    graph = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["y"])], "double",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 3])],
                              [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])])
    (tmp_path / "1").mkdir()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "1" / "model.onnx")
    config = {"name": "double", "max_batch_size": 8, "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": ["3"]}],
              "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": ["3"]}]}
    model = make_model(backends.OnnxModel, "double", config, tmp_path)
    a, b = np.ones((1, 3), np.float32), np.arange(6, dtype=np.float32).reshape(2, 3)
    wrong = np.ones((1, 4), np.float32)  # the graph takes 3 values per item
    responses = model.execute([pb_utils.Request(x=a), pb_utils.Request(x=wrong), pb_utils.Request(x=b)])
    np.testing.assert_array_equal(outputs(responses[0])["y"], 2 * a)
    np.testing.assert_array_equal(outputs(responses[2])["y"], 2 * b)
    assert responses[1].has_error() and responses[1].error().code == pb_utils.TritonError.INTERNAL


def test_graph_models_say_how_to_build_a_missing_graph(backends, tmp_path):
    (tmp_path / "1").mkdir()
    for cls, name in ((backends.OnnxModel, "qpm"), (backends.EncoderModel, "encoder"), (backends.DecoderModel, "decoder")):
        with pytest.raises(FileNotFoundError, match="hyperthumbnail serve"):
            make_model(cls, name, template_config(name), tmp_path)


def test_encode_at_bpp_model_searches_like_the_pipeline(backends):
    """The served rate control (BLS into the neural models) gives the in-process search's bytes."""
    pipeline = Pipeline(scale=SCALE)
    # The served encoder takes the padded uint8 photo (what Graphs.coefficients takes), the QPM its graph's tensors.
    pb_utils.bls_handler = lambda model, inputs: (
        {"coefficients": pipeline.graph_set.coefficients(inputs["image"][0])[None]} if model == "encoder"
        else pipeline.graphs[model].run(inputs))
    config = template_config("hyperthumbnail_encode_at_bpp")
    config["parameters"]["model_id"] = {"string_value": pipeline.model_id}  # as the repository builder writes it
    model = make_model(backends.EncodeAtBppModel, "hyperthumbnail_encode_at_bpp", config)
    image = photo_like(160, 96, seed=3)
    target = 0.5
    result = outputs(model.execute([pb_utils.Request(IMAGE=image[None], TARGET_BPP=np.array([[target]], np.float32))])[0])
    expected, table_scale, achieved = encode_at_bpp(pipeline, image, target)
    assert result["THUMBNAIL"][0, 0] == expected
    assert result["TABLE_SCALE"][0, 0] == pytest.approx(table_scale)
    assert result["BPP"][0, 0] == pytest.approx(achieved, rel=1e-6)
    refused = model.execute([pb_utils.Request(IMAGE=image[None], TARGET_BPP=np.array([[-1.0]], np.float32))])[0]
    assert refused.has_error() and "TARGET_BPP" in refused.error().message()


def test_encoder_and_decoder_models_pad_and_crop_as_the_pipeline(backends, tmp_path):
    """The CPU repository's encoder takes the photo as sent (pads it itself) and its decoder crops:
    the same coefficients and pixels as the in-process pipeline, on the same graph files."""
    from hyperthumbnail.runtime.graphs import graph_cache_dir

    pipeline = Pipeline(scale=SCALE)
    cache = graph_cache_dir(pipeline.weights)
    for model, graphs in (("encoder", {"model.onnx": "encoder"}),
                          ("decoder", {f"{g}.onnx": g for g in ("decoder_features", "decoder_body")})):
        (tmp_path / model / "1").mkdir(parents=True)
        for file, graph in graphs.items():
            (tmp_path / model / "1" / file).symlink_to(cache / f"{graph}.onnx")
    encoder = make_model(backends.EncoderModel, "encoder", template_config("encoder"), tmp_path / "encoder")
    decoder = make_model(backends.DecoderModel, "decoder", template_config("decoder"), tmp_path / "decoder")

    image = photo_like(150, 90, seed=4)  # not a multiple of 32: padded by the encoder, cropped by the decoder
    encoded = outputs(encoder.execute([pb_utils.Request(image=image[None])])[0])
    coefficients, hr_size = pipeline.analyze(image)
    np.testing.assert_array_equal(encoded["coefficients"][0], coefficients)
    assert encoded["HR_SIZE"].tolist() == [list(hr_size)] and encoded["TABLE_SCALE"].tolist() == [[1.0]]
    bad = encoder.execute([pb_utils.Request(image=np.zeros((1, 8, 8), np.uint8))])[0]
    assert bad.has_error() and bad.error().message().startswith("encoder: expected a (batch, H, W, 3) image tensor")

    data = pipeline.encode(image)
    quantized, tables, size = steps.decode_thumbnail(data, SCALE)
    decoded = outputs(decoder.execute([pb_utils.Request(
        quantized=quantized[None].astype(np.int32), tables=tables[None].astype(np.int32),
        HR_SIZE=np.array([size], np.int32))])[0])
    np.testing.assert_array_equal(decoded["IMAGE"][0], pipeline.decode(data))
