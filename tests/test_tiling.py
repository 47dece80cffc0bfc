"""Tiled encoder and decoder body: bit-exact coefficients, file bytes and pixels against untiled
runs of the same graphs, on a 2K photo with small tiles; the tile planner's guarantees."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SCALE, photo_like

from hyperthumbnail.codec.images import pad_to_multiple
from hyperthumbnail.codec.steps import encode_thumbnail
from hyperthumbnail.export.onnx_export import export_graph
from hyperthumbnail.runtime import tiling
from hyperthumbnail.runtime.openvino import OpenVinoRunner, resolve_precision
from hyperthumbnail.runtime.tiling import decode_body_tiled, encode_tiled, plan_tiles

SMALL_TILE = 1024 * 768  # HR pixels per tile incl. margins: a 2040x1530 photo becomes 4+ tiles


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> Path:
    """The full-size architecture (the receptive field is what is tested), shipped weights."""
    from hyperthumbnail.weights import default_weights_path, load_model

    model = load_model(default_weights_path(SCALE), SCALE)
    out = tmp_path_factory.mktemp("graphs")
    for name in ("encoder", "qpm", "decoder_features", "decoder_body"):
        export_graph(model, name, out / f"{name}.onnx")
    return out


@pytest.fixture(scope="module")
def runners(graphs):
    # The runtime and precisions the CLI uses by default on this CPU (bf16 only where native).
    return {"encoder": OpenVinoRunner(graphs / "encoder.onnx", precision=resolve_precision("auto", "bf16")),
            "qpm": OpenVinoRunner(graphs / "qpm.onnx", precision="f32"),
            "features": OpenVinoRunner(graphs / "decoder_features.onnx", precision="f32"),
            "body": OpenVinoRunner(graphs / "decoder_body.onnx", precision=resolve_precision("auto", "bf16"))}


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return photo_like(2040, 1530, seed=3)  # not a multiple of the block: the padding is covered too


def _encoder(runners):
    return lambda image: runners["encoder"].run({"image": image})["coefficients"]


def _body(runners):
    return lambda features: runners["body"].run({"features": features})["image"]


def _thumbnail(runners, coefficients, size) -> bytes:
    q = runners["qpm"].run({"coefficients": coefficients[None], "table_scale": np.ones((1, 1), np.float32)})
    return encode_thumbnail(q["quantized"][0], q["tables"][0], size, SCALE)


def test_tiled_encode_is_bit_exact(runners, photo):
    padded = pad_to_multiple(photo, 8 * SCALE)
    whole = encode_tiled(_encoder(runners), padded, SCALE, max_tile_pixels=None)
    tiled = encode_tiled(_encoder(runners), padded, SCALE, max_tile_pixels=SMALL_TILE)
    assert len(plan_tiles(48, 64, tiling.ENCODER_MARGIN_BLOCKS, SMALL_TILE // (8 * SCALE) ** 2)) >= 4
    np.testing.assert_array_equal(tiled, whole)
    size = (photo.shape[1], photo.shape[0])
    assert _thumbnail(runners, tiled, size) == _thumbnail(runners, whole, size)


def test_tiled_encode_needs_its_margin(runners, photo, monkeypatch):
    """A margin below the receptive field changes the coefficients: the test above can fail."""
    padded = pad_to_multiple(photo, 8 * SCALE)
    whole = encode_tiled(_encoder(runners), padded, SCALE, max_tile_pixels=None)
    monkeypatch.setattr(tiling, "ENCODER_MARGIN_BLOCKS", 1)
    assert not np.array_equal(encode_tiled(_encoder(runners), padded, SCALE, max_tile_pixels=SMALL_TILE), whole)


def test_tiled_decode_is_bit_exact(runners, photo, monkeypatch):
    padded = pad_to_multiple(photo, 8 * SCALE)
    coefficients = encode_tiled(_encoder(runners), padded, SCALE, max_tile_pixels=None)
    q = runners["qpm"].run({"coefficients": coefficients[None], "table_scale": np.ones((1, 1), np.float32)})
    features = runners["features"].run({"quantized": q["quantized"], "tables": q["tables"]})["features"][0]
    whole = decode_body_tiled(_body(runners), features, SCALE, max_tile_pixels=None)
    tiled = decode_body_tiled(_body(runners), features, SCALE, max_tile_pixels=SMALL_TILE)
    assert whole.shape == padded.shape and whole.dtype == np.uint8
    np.testing.assert_array_equal(tiled, whole)
    monkeypatch.setattr(tiling, "DECODER_BODY_MARGIN_BLOCKS", 1)
    assert not np.array_equal(decode_body_tiled(_body(runners), features, SCALE, max_tile_pixels=SMALL_TILE), whole)


def test_plan_covers_once_and_respects_the_area():
    for rows, cols, margin, area in [(48, 64, 9, 500), (7, 300, 5, 400), (100, 3, 2, 60), (5, 5, 9, 1000)]:
        tiles = plan_tiles(rows, cols, margin, area)
        owner = np.zeros((rows, cols), int)
        for tile in tiles:
            owner[tile.core] += 1
            ey, ex = tile.extent
            assert (ey.stop - ey.start) * (ex.stop - ex.start) <= area
            # the margin is there on every side that is not the grid's border
            assert ey.start in (0, tile.core[0].start - margin) and ey.stop in (rows, tile.core[0].stop + margin)
            assert ex.start in (0, tile.core[1].start - margin) and ex.stop in (cols, tile.core[1].stop + margin)
        assert (owner == 1).all()
    assert len(plan_tiles(10, 10, 3, None)) == 1
    with pytest.raises(ValueError, match="cannot hold"):
        plan_tiles(100, 100, 9, 100)


def test_tiled_encode_of_float_chw_is_the_same(runners, photo):
    """The server's encoder tiles preprocess's float CHW image: the same coefficients."""
    from hyperthumbnail.codec.steps import preprocess

    chw, _ = preprocess(photo, SCALE)
    from_uint8 = encode_tiled(_encoder(runners), pad_to_multiple(photo, 8 * SCALE), SCALE, max_tile_pixels=None)
    np.testing.assert_array_equal(encode_tiled(_encoder(runners), chw, SCALE, max_tile_pixels=SMALL_TILE), from_uint8)
