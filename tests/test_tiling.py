"""Tiled encoder and decoder against untiled runs of the same graphs, with small tiles; the
receptive fields the margins rest on; the tile planner's guarantees.

What holds on every x86 CPU: in f32 a tiled run is bit-exact (coefficients, file bytes, decoder
features and pixels). Under bf16 (the default where the CPU has native bf16) OpenVINO/oneDNN pick
kernels per CPU and per tensor shape, and a tile is another shape than the whole photo: on an
Intel Xeon with AMX 32 of 589,824 unquantized coefficients of this test's photo differed by one
bf16 step (1/128), on AMD Zen 4 (AVX-512 BF16) none did. So under bf16 the tests bound the
difference instead: quantized coefficients (what the file stores) agree except at rare rounding
ties, by at most one step; decoded pixels by at most one level. `bench tiling` measures the count
and the dB effect on real photos.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SCALE, photo_like

from hyperthumbnail.codec.images import pad_to_multiple
from hyperthumbnail.codec.steps import encode_thumbnail
from hyperthumbnail.export.onnx_export import export_graph
from hyperthumbnail.runtime import tiling
from hyperthumbnail.runtime.graphs import Graphs, default_body_whole_pixels
from hyperthumbnail.runtime.onnx import OnnxRunner
from hyperthumbnail.runtime.openvino import OpenVinoRunner, resolve_precision
from hyperthumbnail.runtime.tiling import decode_body_tiled, decode_features_tiled, decode_tiled, encode_tiled, plan_tiles

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
def runners_f32(graphs):
    return {name: OpenVinoRunner(graphs / f"{graph}.onnx", precision="f32")
            for name, graph in (("encoder", "encoder"), ("qpm", "qpm"), ("features", "decoder_features"),
                                ("body", "decoder_body"))}


# Under bf16: at most this share of the quantized coefficients may sit on a rounding tie that a
# last-bit difference flips (measured: 0 on AMD Zen 4; the AMX case above moved 32 raw values).
BF16_TIE_SHARE = 1e-4
# ... and at most this share of decoded pixel values may differ (by one level).
BF16_PIXEL_SHARE = 1e-3


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


def _quantize(runners, coefficients) -> dict[str, np.ndarray]:
    return runners["qpm"].run({"coefficients": coefficients[None], "table_scale": np.ones((1, 1), np.float32)})


def test_tiled_encode_is_bit_exact_in_f32(runners_f32, photo):
    padded = pad_to_multiple(photo, 8 * SCALE)
    whole = encode_tiled(_encoder(runners_f32), padded, SCALE, max_tile_pixels=None)
    tiled = encode_tiled(_encoder(runners_f32), padded, SCALE, max_tile_pixels=SMALL_TILE)
    assert len(plan_tiles(48, 64, tiling.ENCODER_MARGIN_BLOCKS, SMALL_TILE // (8 * SCALE) ** 2)) >= 4
    np.testing.assert_array_equal(tiled, whole)
    size = (photo.shape[1], photo.shape[0])
    assert _thumbnail(runners_f32, tiled, size) == _thumbnail(runners_f32, whole, size)


def test_tiled_encode_at_the_default_precision_differs_only_at_rounding_ties(runners, photo):
    """bf16 where native (the CLI's default): see the module docstring for why not bit-exact."""
    padded = pad_to_multiple(photo, 8 * SCALE)
    whole = _quantize(runners, encode_tiled(_encoder(runners), padded, SCALE, max_tile_pixels=None))
    tiled = _quantize(runners, encode_tiled(_encoder(runners), padded, SCALE, max_tile_pixels=SMALL_TILE))
    np.testing.assert_array_equal(tiled["tables"], whole["tables"])  # means over 12k blocks: ties move nothing
    flipped = tiled["quantized"].astype(np.int64) - whole["quantized"]
    assert np.abs(flipped).max() <= 1
    assert np.count_nonzero(flipped) <= BF16_TIE_SHARE * flipped.size


def test_tiled_encode_needs_its_margin(runners_f32, photo, monkeypatch):
    """A margin below the receptive field changes the coefficients: the test above can fail."""
    padded = pad_to_multiple(photo, 8 * SCALE)
    whole = encode_tiled(_encoder(runners_f32), padded, SCALE, max_tile_pixels=None)
    monkeypatch.setattr(tiling, "ENCODER_MARGIN_BLOCKS", 1)
    assert not np.array_equal(encode_tiled(_encoder(runners_f32), padded, SCALE, max_tile_pixels=SMALL_TILE), whole)


@pytest.mark.parametrize("precision", ["f32", "default"])
def test_tiled_decode(runners_f32, runners, photo, monkeypatch, precision):
    """f32: bit-exact, and a margin below the receptive field breaks it. Default precision (bf16
    where native): within one level in at most `BF16_PIXEL_SHARE` of the values."""
    chosen = runners_f32 if precision == "f32" else runners
    padded = pad_to_multiple(photo, 8 * SCALE)
    q = _quantize(runners_f32, encode_tiled(_encoder(runners_f32), padded, SCALE, max_tile_pixels=None))
    features = runners_f32["features"].run({"quantized": q["quantized"], "tables": q["tables"]})["features"][0]
    whole = decode_body_tiled(_body(chosen), features, SCALE, max_tile_pixels=None)
    tiled = decode_body_tiled(_body(chosen), features, SCALE, max_tile_pixels=SMALL_TILE)
    assert whole.shape == padded.shape and whole.dtype == np.uint8
    if precision == "f32":
        np.testing.assert_array_equal(tiled, whole)
        monkeypatch.setattr(tiling, "DECODER_BODY_MARGIN_BLOCKS", 1)
        assert not np.array_equal(decode_body_tiled(_body(chosen), features, SCALE, max_tile_pixels=SMALL_TILE), whole)
    else:
        moved = np.abs(tiled.astype(np.int16) - whole)
        assert moved.max() <= 1 and np.count_nonzero(moved) <= BF16_PIXEL_SHARE * moved.size


def test_plan_covers_once_and_respects_the_area():
    for rows, cols, margin, area in [(48, 64, 9, 500), (7, 300, 5, 400), (100, 3, 2, 60), (5, 5, 9, 1000)]:
        tiles = plan_tiles(rows, cols, margin, area)
        owner = np.zeros((rows, cols), int)
        for tile in tiles:
            owner[tile.core] += 1
            ey, ex = tile.extent
            assert (ey.stop - ey.start) * (ex.stop - ex.start) <= area
            # at least the margin on every side that is not the grid's border
            assert ey.start == 0 or ey.start <= tile.core[0].start - margin
            assert ey.stop == rows or ey.stop >= tile.core[0].stop + margin
            assert ex.start == 0 or ex.start <= tile.core[1].start - margin
            assert ex.stop == cols or ex.stop >= tile.core[1].stop + margin
        assert (owner == 1).all()
        # one extent size for every tile: one input shape per graph (OpenVINO prepares each new one)
        assert len({(e[0].stop - e[0].start, e[1].stop - e[1].start) for e in (t.extent for t in tiles)}) == 1
    assert len(plan_tiles(10, 10, 3, None)) == 1
    with pytest.raises(ValueError, match="cannot hold"):
        plan_tiles(100, 100, 9, 100)


def test_exported_body_with_the_folded_skip_equals_the_readable_body(graphs, runners_f32):
    """The exported body adds the bicubic skip as a conv at LR before its pixel shuffle
    (`export/fold.py`); the model keeps the readable full-resolution skip. On a real photo's
    thumbnail, whole and in small tiles (borders and tile seams), the f32 graph equals the torch
    body within float rounding: uint8 within one level, >= 50 dB apart."""
    import torch

    from hyperthumbnail.codec.images import load_image
    from hyperthumbnail.export.onnx_export import to_uint8_hwc
    from hyperthumbnail.metrics import psnr
    from hyperthumbnail.serving.demo import SAMPLE_PHOTOS
    from hyperthumbnail.weights import default_weights_path, load_model

    photo = load_image(SAMPLE_PHOTOS / "maple.jpg")[:1016, :1400]  # edges not on the block grid
    padded = pad_to_multiple(photo, 8 * SCALE)
    q = _quantize(runners_f32, encode_tiled(_encoder(runners_f32), padded, SCALE, max_tile_pixels=None))
    features = runners_f32["features"].run({"quantized": q["quantized"], "tables": q["tables"]})["features"]
    with torch.no_grad():
        readable = load_model(default_weights_path(SCALE), SCALE).decoder.body_from_head_features(torch.from_numpy(features))
        reference = to_uint8_hwc(readable.clamp(0.0, 1.0))[0].numpy()
    for tile in (None, 512 * 512):
        folded = decode_body_tiled(_body(runners_f32), features[0], SCALE, max_tile_pixels=tile)
        assert np.abs(folded.astype(np.int16) - reference).max() <= 1
        assert psnr(folded, reference) >= 50.0


def test_tiles_converted_to_float_one_by_one_equal_the_whole_float_image(runners_f32, photo):
    """Each uint8 tile is converted with `steps.preprocess`'s float32 arithmetic: the same
    coefficients as the graph run on the whole float image (the torch path's input). In f32, so
    that only the conversion is compared (see the module docstring)."""
    from hyperthumbnail.codec.steps import preprocess

    chw, _ = preprocess(photo, SCALE)
    whole_float = _encoder(runners_f32)(chw[None])[0]
    tiled = encode_tiled(_encoder(runners_f32), pad_to_multiple(photo, 8 * SCALE), SCALE, max_tile_pixels=SMALL_TILE)
    np.testing.assert_array_equal(tiled, whole_float)


def _features_runner(graphs: Path, runtime: str):
    path = graphs / "decoder_features.onnx"
    return OpenVinoRunner(path, precision="f32") if runtime == "openvino" else OnnxRunner(path)


def _run_features(runner):
    return lambda q, t: runner.run({"quantized": q, "tables": t})["features"]


def _quantized(rows: int, cols: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A photo-like thumbnail's quantized coefficients (3, 64, rows, cols) and tables (2, 64)."""
    import torch

    from hyperthumbnail.model.dct import image_to_coefficients

    lr = photo_like(cols * 8, rows * 8, seed=seed).transpose(2, 0, 1)[None].astype(np.float32) / 255
    coefficients = image_to_coefficients(torch.from_numpy(lr))[0].numpy()
    tables = np.stack([np.full(64, 6), np.full(64, 10)]).astype(np.int32)
    expanded = tables[[0, 1, 1]][:, :, None, None]
    return np.round(coefficients / expanded).astype(np.int32), tables


@pytest.mark.parametrize("runtime", ["openvino", "onnx"])
def test_decoder_features_receptive_field(graphs, runtime):
    """One block's coefficients change the features of exactly the blocks within the margin."""
    runner = _features_runner(graphs, runtime)
    quantized, tables = _quantized(80, 80)
    base = runner.run({"quantized": quantized[None], "tables": tables[None]})["features"][0]
    quantized[:, :, 40, 40] += 3
    moved = runner.run({"quantized": quantized[None], "tables": tables[None]})["features"][0]
    changed = np.abs(moved - base).reshape(base.shape[0], 80, 8, 80, 8).max(axis=(0, 2, 4)) > 0
    rows, cols = np.nonzero(changed)
    reach = max(40 - rows.min(), rows.max() - 40, 40 - cols.min(), cols.max() - 40)
    # The margin must cover the reach; the farthest block's change can round to exactly 0 (one
    # CI run saw 34 with ONNX Runtime), so the measured reach may fall a block or two short of 36.
    assert tiling.DECODER_FEATURES_MARGIN_BLOCKS - 2 <= reach <= tiling.DECODER_FEATURES_MARGIN_BLOCKS


@pytest.mark.parametrize("runtime", ["openvino", "onnx"])
def test_tiled_decoder_features_are_bit_exact(graphs, runtime, monkeypatch):
    """80x240 blocks in 3 tiles of 80x127 (at most 80x130; the middle one has margins on both sides)."""
    run = _run_features(_features_runner(graphs, runtime))
    quantized, tables = _quantized(80, 240, seed=4)
    whole = decode_features_tiled(run, quantized, tables, max_tile_blocks=None)
    area = 80 * 130  # columns: a 58-block core + 2 x 36
    assert len(plan_tiles(80, 240, tiling.DECODER_FEATURES_MARGIN_BLOCKS, area)) == 3
    assert whole.shape == (30, 640, 1920)  # the thumbnail in 2 x 3 + 24 head channels and whole.dtype == np.float32
    np.testing.assert_array_equal(decode_features_tiled(run, quantized, tables, max_tile_blocks=area), whole)
    monkeypatch.setattr(tiling, "DECODER_FEATURES_MARGIN_BLOCKS", 30)  # below the receptive field
    assert not np.array_equal(decode_features_tiled(run, quantized, tables, max_tile_blocks=area), whole)


@pytest.mark.parametrize("runtime", ["openvino", "onnx"])
def test_graph_set_decodes_tiled_features_like_untiled(graphs, runtime):
    """Through `Graphs` (the CLI's and the server's decode path): the same pixels with the
    features in tiles (and the features runtime's buffers released between the graphs) as
    whole, twice in a row; small photos (up to the default tile) take the untiled path."""
    quantized, tables = _quantized(8, 110, seed=5)  # 256x3520 HR
    tiled_graphs = Graphs(graphs, SCALE, runtime, precision="f32", feature_tile_blocks=8 * 92)
    assert len(plan_tiles(8, 110, tiling.DECODER_FEATURES_MARGIN_BLOCKS, 8 * 92)) == 2
    whole = Graphs(graphs, SCALE, runtime, precision="f32", feature_tile_blocks=None).reconstruct(quantized, tables)
    assert whole.shape == (256, 3520, 3)
    np.testing.assert_array_equal(tiled_graphs.reconstruct(quantized, tables), whole)
    np.testing.assert_array_equal(tiled_graphs.reconstruct(quantized, tables), whole)
    # a 6144x4096 photo (scale 4) is one features tile; a 48 MP one is four
    assert len(plan_tiles(128, 192, tiling.DECODER_FEATURES_MARGIN_BLOCKS, tiling.DEFAULT_FEATURE_TILE_BLOCKS)) == 1
    assert len(plan_tiles(192, 256, tiling.DECODER_FEATURES_MARGIN_BLOCKS, tiling.DEFAULT_FEATURE_TILE_BLOCKS)) == 4


def test_runtime_memory_is_released_only_after_tiled_runs():
    calls = []

    def run_features(q, t):
        return np.zeros((27, q.shape[3] * 8, q.shape[4] * 8), np.float32)[None]

    def run_body(f):
        return np.zeros((1, f.shape[2] * SCALE, f.shape[3] * SCALE, 3), np.uint8)

    tables = np.ones((2, 64), np.int32)
    for cols, expected in ((100, []), (110, ["features", "body"])):
        calls.clear()
        decode_tiled(run_features, run_body, np.zeros((3, 64, 8, cols), np.int32), tables, SCALE,
                     max_feature_tile_blocks=8 * 100, release_features=lambda: calls.append("features"),
                     release_body=lambda: calls.append("body"))
        assert calls == expected
    padded = np.zeros((8 * 8 * SCALE, 30 * 8 * SCALE, 3), np.uint8)  # 8x30 blocks
    for tile_pixels, expected in ((None, []), (8 * 24 * (8 * SCALE) ** 2, ["encoder"])):
        calls.clear()
        encode_tiled(lambda image: np.zeros((1, 3, 64, image.shape[2] // 32, image.shape[3] // 32), np.float32),
                     padded, SCALE, tile_pixels, release=lambda: calls.append("encoder"))
        assert calls == expected


def test_decoder_body_runs_whole_up_to_6k_and_in_tiles_above():
    """`whole_pixels`: one call on the whole features up to that many HR pixels (the paper's 6K by
    default, 6028x3391 included; its tensors are at LR), tiles of `max_tile_pixels` above (48 MP)."""
    shapes = []

    def run_body(f):
        shapes.append(f.shape)
        return np.zeros((1, f.shape[2] * SCALE, f.shape[3] * SCALE, 3), np.uint8)

    features = np.zeros((27, 8 * 8, 30 * 8), np.float32)  # 8x30 blocks
    hr_pixels, small_tile = 8 * 30 * (8 * SCALE) ** 2, 8 * 20 * (8 * SCALE) ** 2  # 2 tiles of 8x20 blocks
    for whole_pixels, calls in ((hr_pixels, 1), (hr_pixels - 1, 2), (0, 2)):
        shapes.clear()
        image = decode_body_tiled(run_body, features, SCALE, small_tile, whole_pixels)
        assert len(shapes) == calls and image.shape == (8 * 8 * SCALE, 30 * 8 * SCALE, 3)
    assert 6048 * 3392 <= tiling.DEFAULT_BODY_WHOLE_PIXELS < 8192 * 6144  # 6028x3391 padded; 48 MP
    # OpenVINO runs it whole up to there; ONNX Runtime always in tiles (its f32 arena)
    assert default_body_whole_pixels("openvino") == tiling.DEFAULT_BODY_WHOLE_PIXELS
    assert default_body_whole_pixels("onnx") == 0
