"""The shipped 2x model end to end: CLI encode/decode, rate control, ONNX export parity and a
real tritonserver serving the 2x repository (its own server: the session's one is 4x)."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
from conftest import photo_like
from PIL import Image

from hyperthumbnail.cli import main
from hyperthumbnail.codec.images import load_image, save_image
from hyperthumbnail.codec.thumbnail import read_thumbnail
from hyperthumbnail.metrics import bpp
from hyperthumbnail.pipeline import Pipeline
from hyperthumbnail.ratecontrol import encode_at_bpp
from hyperthumbnail.weights import default_weights_path, file_sha256, load_model, model_id, shipped_weights

pytestmark = pytest.mark.timeout(600)

WIDTH, HEIGHT = 250, 170  # off the 16-pixel block grid of 2x: padding and cropping


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return photo_like(WIDTH, HEIGHT, seed=11)


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return Pipeline(scale=2, threads=2)


def test_shipped_2x_weights_and_card():
    model = load_model(scale=2)
    assert model.scale == 2
    card = json.loads(default_weights_path(2).with_suffix(".json").read_text())
    assert card["config"]["scale"] == 2 and card["runs"][-1]["command"] and card["measured"]["kodak"]["bpp"] > 0
    assert card["model_id"] == model_id(default_weights_path(2)) and card["sha256"] == file_sha256(default_weights_path(2))


def test_v1s_stored_thumbnails_decode_with_v1s_shipped_decoder(image, pipeline):
    """2x v2 moved the encoder; v1's thumbnails (users' stored data) are routed by the model id in
    their marker to v1's decoder, shipped in weights/older/: exactly what v1 rebuilds."""
    older = shipped_weights(2)[1:]
    assert [model_id(path) for path in older] == ["e77aebddff98e464"]
    v1 = Pipeline(older[0], threads=2)
    stored = v1.encode(image)
    assert pipeline.model_id not in v1.served_models and pipeline.for_thumbnail(stored).weights == older[0]
    assert np.array_equal(pipeline.decode(stored), v1.decode(stored))


def test_cli_encode_decode_at_scale_2(tmp_path, image, pipeline):
    source, jpg, png = tmp_path / "in.png", tmp_path / "t.jpg", tmp_path / "out.png"
    save_image(image, source)
    assert main(["encode", str(source), "-o", str(jpg), "--scale", "2", "--threads", "2"]) == 0
    with Image.open(jpg) as thumb:  # a plain JPEG any viewer opens, half the size per side
        assert thumb.format == "JPEG" and thumb.size == (125, 85)
        thumb.load()
    assert read_thumbnail(jpg.read_bytes()).scale == 2
    assert jpg.read_bytes() == pipeline.encode(image)  # CLI == in-process 2x pipeline
    assert main(["decode", str(jpg), "-o", str(png), "--threads", "2"]) == 0  # scale read from the file
    assert load_image(png).shape == image.shape
    # 4x weights refuse a 2x request with a clear error
    assert main(["encode", str(source), "-o", str(tmp_path / "x.jpg"), "--scale", "2",
                 "--weights", str(default_weights_path(4))]) == 1


def test_target_bpp_at_scale_2(pipeline, image):
    target = 1.1 * bpp(len(pipeline.encode(image)), WIDTH, HEIGHT)
    data, _, achieved = encode_at_bpp(pipeline, image, target)
    assert abs(achieved / target - 1) <= 0.03 and read_thumbnail(data).scale == 2


def test_export_scale_2_parity(tmp_path):
    out = tmp_path / "onnx"
    assert main(["export", "--scale", "2", "--out", str(out), "--check"]) == 0  # --check: exit 1 on a parity miss
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["scale"] == 2
    assert {p.name for p in out.glob("*.onnx")} >= {"encoder.onnx", "qpm.onnx", "decoder.onnx"}


@pytest.mark.server
def test_served_2x_repository_matches_the_pipeline(tmp_path, image, pipeline):
    """`serve --scale 2`'s repository in a real tritonserver: same bytes and pixels as in-process."""
    pytest.importorskip("tritonclient.http")
    from hyperthumbnail.client import HyperThumbnailClient
    from hyperthumbnail.client.errors import InvalidInputError
    from hyperthumbnail.serving.repository import build_repository
    from hyperthumbnail.serving.server_process import TritonServer, free_port

    repo = build_repository(tmp_path / "model_repository", scale=2)
    server = TritonServer(repo, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())
    started = time.monotonic()
    server.start(timeout=240)
    print(f"2x tritonserver ready in {time.monotonic() - started:.1f} s")
    try:
        with HyperThumbnailClient(server.http_url) as client:
            data = client.encode(image)
            assert data == pipeline.encode(image)
            assert read_thumbnail(data).scale == 2
            np.testing.assert_array_equal(client.decode(data), pipeline.decode(data))
            # a 4x thumbnail is refused by the 2x decoder with a clear error, and the server lives on
            four_x = Pipeline(scale=4, threads=2).encode(image)
            with pytest.raises(InvalidInputError, match="scale 4"):
                client.decode(four_x)
            assert client.encode(image) == data
    finally:
        server.stop()


def test_bench_rd_at_scale_2_writes_its_own_files(tmp_path, image):
    (tmp_path / "data" / "tiny").mkdir(parents=True)
    save_image(image, tmp_path / "data" / "tiny" / "a.png")
    out = tmp_path / "out"
    assert main(["bench", "rd", "--scale", "2", "--datasets", "tiny", "--data-root", str(tmp_path / "data"),
                 "--out", str(out)]) == 0
    results = json.loads((out / "rd_x2.json").read_text())
    assert results["meta"]["scale"] == 2 and not (out / "rd.json").exists()
    assert set(results["tiny"]) == {"hyperthumbnail", "bicubic_jpeg", "bicubic_jpeg_420"}  # no 4x SR baseline
    ours, base = results["tiny"]["hyperthumbnail"], results["tiny"]["bicubic_jpeg"]
    assert abs(base["bpp"] / ours["bpp"] - 1) < 0.25  # the baseline is matched to our bitrate
    for name in ("rd_x2.csv", "rd_x2_images.csv", "rd_x2_psnr.png"):
        assert (out / name).stat().st_size > 0
