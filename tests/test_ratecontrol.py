"""Rate control (table-scale search, --rate), optimization-based encoding, and the served
TABLE_SCALE input, on real files and a real tritonserver (the session's shared one)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import SCALE, photo_like, served_model_id, served_runner

from hyperthumbnail.cli import main
from hyperthumbnail.codec import steps
from hyperthumbnail.codec.images import save_image
from hyperthumbnail.codec.thumbnail import read_thumbnail
from hyperthumbnail.metrics import bpp, psnr
from hyperthumbnail.pipeline import Pipeline
from hyperthumbnail.ratecontrol import RateControlWarning, encode_at_bpp, search_table_scale

pytestmark = pytest.mark.timeout(300)

WIDTH, HEIGHT = 384, 256


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return photo_like(WIDTH, HEIGHT, seed=7)


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return Pipeline(threads=2)


def test_analyze_then_write_is_encode(pipeline, image):
    coefficients, hr_size = pipeline.analyze(image)
    assert coefficients.shape == (3, 64, HEIGHT // (8 * SCALE), WIDTH // (8 * SCALE))
    assert hr_size == (WIDTH, HEIGHT)
    for table_scale in (1.0, 2.5):
        assert pipeline.quantize_and_write(coefficients, hr_size, table_scale) == pipeline.encode(image, table_scale)


def test_rate_is_monotonic_and_scales_the_tables(pipeline, image):
    coefficients, hr_size = pipeline.analyze(image)
    scales = [0.25, 0.5, 1.0, 1.5, 2.0, 4.0]
    files = [pipeline.quantize_and_write(coefficients, hr_size, s) for s in scales]
    sizes = [len(f) for f in files]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes), sizes
    base = read_thumbnail(files[2]).tables.astype(np.float64)
    for s, f in zip(scales, files):
        expected = np.clip(np.round(base * s), 1, 255)
        np.testing.assert_array_equal(read_thumbnail(f).tables, expected)


@pytest.mark.parametrize("factor", [0.7, 1.5])
def test_target_bpp_lands_within_tolerance(pipeline, image, factor):
    # The size of a real file written at a nearby table scale: achievable whatever the weights
    # (a fixed multiple of the model's rate can fall in a size step of the integer tables).
    target = bpp(len(pipeline.encode(image, 1 / factor)), WIDTH, HEIGHT)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RateControlWarning)
        data, table_scale, achieved = encode_at_bpp(pipeline, image, target)
    assert abs(achieved / target - 1) <= 0.03
    assert achieved == bpp(len(data), WIDTH, HEIGHT)
    assert (table_scale > 1) == (factor < 1)
    assert data == pipeline.encode(image, table_scale)  # the reported scale reproduces the file
    assert read_thumbnail(data).hr_size == (WIDTH, HEIGHT)


def test_unreachable_target_warns_and_returns_the_closest(pipeline, image):
    with pytest.warns(RateControlWarning, match="largest file"):
        data, table_scale, achieved = encode_at_bpp(pipeline, image, 50.0)
    assert achieved < 50.0 and len(data) == len(pipeline.encode(image, 1.0 / 512))


def test_search_stops_on_a_size_step():
    sizes = {True: b"x" * 1000, False: b"x" * 2000}  # the size jumps at table scale 3
    with pytest.warns(RateControlWarning, match="jumps"):
        data, table_scale = search_table_scale(lambda s: sizes[s >= 3.0], 1500)
    assert len(data) in (1000, 2000) and table_scale == pytest.approx(3.0, rel=1e-3)


def test_write_with_tables_matches_the_qpm_graph(pipeline, image):
    coefficients, hr_size = pipeline.analyze(image)
    for table_scale in (1.0, 1.7):
        data = pipeline.quantize_and_write(coefficients, hr_size, table_scale)
        assert pipeline.write_with_tables(coefficients, hr_size, read_thumbnail(data).tables) == data


def test_size_step_is_crossed_by_blending_the_tables(pipeline, image):
    """A size step (here made by switching tables at scale 3) is crossed one table entry at a
    time: the file lands within ±3% with tables between the two bracketing ones."""
    coefficients, hr_size = pipeline.analyze(image)
    fine, coarse = (pipeline.quantize_and_write(coefficients, hr_size, s) for s in (1.0, 1.4))
    target = (len(fine) + len(coarse)) / 2
    assert len(fine) > 1.05 * target and len(coarse) < 0.95 * target  # a real jump over the tolerance
    with warnings.catch_warnings():
        warnings.simplefilter("error", RateControlWarning)
        data, table_scale = search_table_scale(
            lambda s: fine if s < 3.0 else coarse, target,
            write_tables=lambda t: pipeline.write_with_tables(coefficients, hr_size, t))
    assert abs(len(data) / target - 1) <= 0.03 and table_scale == pytest.approx(3.0, rel=1e-3)
    tables = read_thumbnail(data).tables
    assert (read_thumbnail(fine).tables <= tables).all() and (tables <= read_thumbnail(coarse).tables).all()
    decoded = pipeline.decode(data)  # a valid file of the same image
    assert decoded.shape == image.shape


def test_cli_target_bpp_and_rate(tmp_path, pipeline, image, capsys):
    source = tmp_path / "photo.png"
    save_image(image, source)
    target = round(bpp(len(pipeline.encode(image, 1.25)), WIDTH, HEIGHT), 4)  # a reachable size
    out = tmp_path / "target.jpg"
    assert main(["encode", str(source), "-o", str(out), "--target-bpp", str(target), "--threads", "2"]) == 0
    assert abs(bpp(out.stat().st_size, WIDTH, HEIGHT) / target - 1) <= 0.03
    assert "table scale" in capsys.readouterr().out
    sizes = []
    for rate in ("0.5", "1", "2"):
        out = tmp_path / f"rate{rate}.jpg"
        assert main(["encode", str(source), "-o", str(out), "--rate", rate, "--threads", "2"]) == 0
        sizes.append(out.stat().st_size)
    assert sizes[0] > sizes[1] > sizes[2]
    assert main(["encode", str(source), "-o", str(out), "--rate", "0"]) == 1


def test_optimize_three_steps_gives_a_valid_file(tmp_path, capsys):
    from hyperthumbnail.optimize import optimize_encoding

    image = photo_like(128, 96, seed=3)
    torch_pipeline = Pipeline(runtime="torch", threads=2)
    plain = torch_pipeline.encode(image)
    result = optimize_encoding(torch_pipeline.model, image, steps=3)
    assert len(result.history) == 4 and 0 <= result.best_step <= 3
    thumb = read_thumbnail(result.data)
    assert thumb.hr_size == (128, 96) and thumb.tables.tolist() == read_thumbnail(plain).tables.tolist()
    assert len(result.data) <= len(plain)  # the rate constraint holds on the real file
    kept = result.history[result.best_step]
    assert kept["hr_psnr"] >= result.history[0]["hr_psnr"]  # the kept step is the best measured one
    decoded = torch_pipeline.decode(result.data)
    assert decoded.shape == (96, 128, 3)
    assert psnr(decoded, image) >= psnr(torch_pipeline.decode(plain), image) - 0.05  # 8-bit rounding
    # through the CLI (which switches to the torch runtime itself)
    source, out = tmp_path / "small.png", tmp_path / "opt.jpg"
    save_image(image, source)
    assert main(["encode", str(source), "-o", str(out), "--optimize", "2", "--threads", "2"]) == 0
    assert read_thumbnail(out.read_bytes()).hr_size == (128, 96)
    assert "optimize:" not in capsys.readouterr().err  # the step bar is for terminals, not logs


def test_optimize_refuses_a_photo_whose_gradients_do_not_fit(tmp_path, monkeypatch):
    import psutil

    from hyperthumbnail.codec.steps import StepError
    from hyperthumbnail.optimize import BYTES_PER_PIXEL, check_memory

    check_memory(6028, 3391, available=BYTES_PER_PIXEL * 6028 * 3391)  # fits exactly
    with pytest.raises(StepError, match=r"optimizing a 6028x3391 photo needs about 8\.8 GiB .* 2\.0 GiB is available"):
        check_memory(6028, 3391, available=2 * 2**30)
    # The CLI says so in one line; nothing is written.
    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("Memory", (), {"available": 2**20})())
    source, out = tmp_path / "small.png", tmp_path / "opt.jpg"
    save_image(photo_like(128, 96, seed=3), source)
    assert main(["encode", str(source), "-o", str(out), "--optimize", "2"]) == 1
    assert not out.exists()


def test_bench_optimize_measures_what_the_cli_writes_and_decodes(tmp_path, monkeypatch):
    """`bench optimize` reports files as a user gets them: its plain row is the CLI's default
    encode, decoded by the default runtime; the optimized rows are PyTorch's files, same decoder."""
    import json

    from conftest import small_weights

    monkeypatch.setenv("HYPERTHUMBNAIL_CACHE", str(tmp_path / "graphs"))
    weights = small_weights(tmp_path / "w.safetensors", 1)
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    image = photo_like(96, 64, seed=4)
    save_image(image, data / "a.png")
    assert main(["bench", "optimize", "--data", str(data), "--limit", "1", "--steps", "2", "--weights", str(weights),
                 "--threads", "1", "--out", str(out)]) == 0
    result = json.loads((out / "optimize.json").read_text())
    assert result["meta"]["runtime"] == "openvino"
    plain, optimized = result["rows"]
    assert main(["encode", str(data / "a.png"), "-o", str(tmp_path / "a.jpg"), "--weights", str(weights)]) == 0
    written = (tmp_path / "a.jpg").read_bytes()
    assert plain["bpp"] == pytest.approx(bpp(len(written), 96, 64))
    assert plain["psnr"] == pytest.approx(psnr(Pipeline(weights).decode(written), image))
    assert optimized["steps"] == 2 and 0 <= optimized["best_step"] <= 2 and len(optimized["history"]) == 3
    assert [p["steps"] for p in result["points"]] == [0, 2]


# ----------------------------------------------------------------------------- served TABLE_SCALE


class _Reference:
    """In-process encodes with the served repository's own graphs, at its runtime and precision."""

    def __init__(self, repository, image: np.ndarray):
        hr, self.size = steps.preprocess(image, SCALE)
        self.coefficients = served_runner(repository, "encoder").run({"image": hr[None]})["coefficients"]
        self.qpm = served_runner(repository, "qpm")

    def write(self, table_scale: float) -> bytes:
        out = self.qpm.run({"coefficients": self.coefficients, "table_scale": np.array([table_scale], np.float32)})
        return steps.encode_thumbnail(out["quantized"][0], out["tables"][0], self.size, SCALE, served_model_id())

    def write_tables(self, tables: np.ndarray) -> bytes:
        quantized = steps.quantize_with_tables(self.coefficients[0], tables)
        return steps.encode_thumbnail(quantized, tables, self.size, SCALE, served_model_id())


def _reference(repository, image: np.ndarray, table_scale: float) -> bytes:
    return _Reference(repository, image).write(table_scale)


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_table_scale(triton_server, served_repository, protocol):
    from tritonclient.utils import InferenceServerException

    module = pytest.importorskip(f"tritonclient.{protocol}")
    url = triton_server.http_url if protocol == "http" else triton_server.grpc_url
    client = module.InferenceServerClient(url)

    def encode(images: np.ndarray, scales: np.ndarray | None) -> list[bytes]:
        inputs = [module.InferInput("IMAGE", list(images.shape), "UINT8")]
        inputs[0].set_data_from_numpy(images)
        if scales is not None:
            inputs.append(module.InferInput("TABLE_SCALE", list(scales.shape), "FP32"))
            inputs[1].set_data_from_numpy(scales)
        return [bytes(x) for x in client.infer("hyperthumbnail_encode", inputs).as_numpy("THUMBNAIL")[:, 0]]

    try:
        image = photo_like(130, 77, seed=5)
        without = encode(image[None], None)[0]
        assert without == _reference(served_repository, image, 1.0)
        coarse = encode(image[None], np.array([[3.0]], np.float32))[0]
        assert coarse == _reference(served_repository, image, 3.0) and len(coarse) < len(without)
        pair = encode(np.stack([image, image]), np.array([[1.0], [3.0]], np.float32))  # one scale per image
        assert pair == [without, coarse]
        for bad in (0.0, np.nan):
            with pytest.raises(InferenceServerException, match="TABLE_SCALE must be positive"):
                encode(image[None], np.array([[bad]], np.float32))
        assert encode(image[None], None)[0] == without  # still serving
    finally:
        client.close()


@pytest.mark.server
def test_target_bpp_through_the_server(triton_server, served_repository):
    """`hyperthumbnail_encode_at_bpp` runs the search next to the models: one request, the same
    file as the same search in-process on the served graphs."""
    from hyperthumbnail.client import HyperThumbnailClient

    image = photo_like(WIDTH, HEIGHT, seed=7)
    reference = _Reference(served_repository, image)
    with HyperThumbnailClient(triton_server.http_url) as client:
        assert client.encode(image, table_scale=2.0) == reference.write(2.0)
        target = bpp(len(client.encode(image)), WIDTH, HEIGHT) * 0.75
        with warnings.catch_warnings():
            warnings.simplefilter("error", RateControlWarning)
            data, table_scale, achieved = encode_at_bpp(client, image, target)
        assert abs(achieved / target - 1) <= 0.03 and achieved == pytest.approx(bpp(len(data), WIDTH, HEIGHT), rel=1e-6)
        expected, expected_scale = search_table_scale(reference.write, target * WIDTH * HEIGHT / 8, 0.03,
                                                      write_tables=reference.write_tables)
        assert data == expected and table_scale == pytest.approx(expected_scale, rel=1e-6)
        # out of reach: the closest file comes back, and the SDK warns
        with pytest.warns(RateControlWarning, match="server returned its closest file"):
            data, _, achieved = encode_at_bpp(client, image, 100.0)
        assert achieved < 100.0 and data == reference.write(1.0 / 512)


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_encode_at_bpp_with_plain_tritonclient(triton_server, protocol):
    from tritonclient.utils import InferenceServerException

    module = pytest.importorskip(f"tritonclient.{protocol}")
    url = triton_server.http_url if protocol == "http" else triton_server.grpc_url
    client = module.InferenceServerClient(url)

    def infer(images: np.ndarray, targets: list[float], tolerance: float | None = None):
        inputs = [module.InferInput("IMAGE", list(images.shape), "UINT8"),
                  module.InferInput("TARGET_BPP", [len(images), 1], "FP32")]
        inputs[0].set_data_from_numpy(images)
        inputs[1].set_data_from_numpy(np.array(targets, np.float32).reshape(-1, 1))
        if tolerance is not None:
            inputs.append(module.InferInput("TOLERANCE", [len(images), 1], "FP32"))
            inputs[2].set_data_from_numpy(np.full((len(images), 1), tolerance, np.float32))
        result = client.infer("hyperthumbnail_encode_at_bpp", inputs)
        return result.as_numpy("THUMBNAIL")[:, 0], result.as_numpy("BPP")[:, 0]

    try:
        image = photo_like(160, 96, seed=9)
        plain = bpp(len(Pipeline().encode(image)), 160, 96)
        targets = [0.8 * plain, 1.2 * plain]
        files, rates = infer(np.stack([image, image]), targets, tolerance=0.02)  # one target per image
        for data, rate, target in zip(files, rates, targets):
            assert abs(rate / target - 1) <= 0.02 and rate == pytest.approx(bpp(len(data), 160, 96), rel=1e-6)
            assert read_thumbnail(bytes(data)).hr_size == (160, 96)
        for bad_targets, bad_tolerance, message in (([0.0], None, "TARGET_BPP must be positive"),
                                                    ([np.nan], None, "TARGET_BPP must be positive"),
                                                    ([0.3], 1.5, "TOLERANCE must be below 1")):
            with pytest.raises(InferenceServerException, match=message):
                infer(image[None], bad_targets, bad_tolerance)
        assert infer(image[None], [targets[0]], 0.02)[0][0] == files[0]  # still serving, same answer
    finally:
        client.close()
