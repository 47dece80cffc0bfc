"""`hyperthumbnail bench rd|crops|speed` and the SR baseline's training, on tiny generated inputs.

The benchmarks run for real (real .jpg files, ONNX Runtime, a real tritonserver for `speed`);
the checks are about shapes, consistency and the baselines' definitions, never about quality
numbers of the (placeholder or trained) shipped weights.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import photo_like, small_weights
from PIL import Image
from safetensors import safe_open

from hyperthumbnail.benchmarks.compute_floor import floor_ms, probe_model
from hyperthumbnail.benchmarks.crops import parse_spec, thumbnail_box, zoom
from hyperthumbnail.benchmarks.jpeg import closest_quality, decode_jpeg, encode_jpeg, ijg_tables, read_coefficients
from hyperthumbnail.benchmarks.speed import (
    default_repeats,
    graph_precision_values,
    parse_repeats,
    parse_resolution,
    parse_resolutions,
    parse_variants,
    ratios,
)
from hyperthumbnail.benchmarks.sr_train import main as sr_train
from hyperthumbnail.cli import main as cli
from hyperthumbnail.codec.images import bicubic_downscale, load_image, pad_to_multiple
from hyperthumbnail.metrics import psnr
from hyperthumbnail.weights import default_weights_path, file_sha256, model_id

METRICS = {"bpp", "psnr", "ssim", "psnr_y", "lr_psnr", "psnr_border2", "psnr_y_basicsr", "lr_psnr_y", "lr_psnr_cbcr"}
WORST = {"lr_psnr_worst", "lr_psnr_worst_image"}
SIZES = [(96, 64), (96, 64), (90, 70)]  # the last is off the 32-pixel block grid: padding and cropping


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """<root>/tiny: three small photo-like PNGs."""
    root = tmp_path_factory.mktemp("datasets")
    (root / "tiny").mkdir()
    for i, (w, h) in enumerate(SIZES):
        Image.fromarray(photo_like(w, h, seed=i)).save(root / "tiny" / f"img{i}.png")
    return root


def run_rd(data_root: Path, out: Path, methods: str, *extra: str) -> tuple[dict, list[dict]]:
    code = cli(["bench", "rd", "--datasets", "tiny", "--data-root", str(data_root), "--methods", methods,
                "--out", str(out), *extra])
    assert code == 0
    with open(out / "rd_images.csv") as f:
        rows = list(csv.DictReader(f))
    return json.loads((out / "rd.json").read_text()), rows


def check_entry(entry: dict, rows: list[dict]) -> None:
    """A dataset row: means of the per-image values, the worst thumbnail and its image."""
    assert set(entry) == METRICS | WORST
    assert entry["bpp"] > 0
    for key in METRICS - {"bpp", "ssim"}:
        assert math.isfinite(entry[key]) and 5 < entry[key] < 80
        assert entry[key] == pytest.approx(np.mean([float(r[key]) for r in rows]), abs=1e-4)
    assert 0 < entry["ssim"] <= 1
    worst = min(rows, key=lambda r: float(r["lr_psnr"]))
    assert entry["lr_psnr_worst"] == pytest.approx(float(worst["lr_psnr"]), abs=1e-4)
    assert entry["lr_psnr_worst"] <= entry["lr_psnr"]
    assert entry["lr_psnr_worst_image"] == worst["image"]


# ----------------------------------------------------------------------------- rd


def test_rd_hyperthumbnail_matches_the_cli(data_root, tmp_path):
    results, rows = run_rd(data_root, tmp_path / "out", "hyperthumbnail")
    assert set(results) == {"tiny", "meta"}
    assert set(results["tiny"]) == {"hyperthumbnail"}
    check_entry(results["tiny"]["hyperthumbnail"], rows)
    meta = results["meta"]
    assert meta["weights"]["sha256"] == file_sha256(default_weights_path())
    assert meta["machine"]["cpu_model"] and meta["machine"]["logical_cores"] >= 1
    assert isinstance(meta["machine"]["cpu_vector_extensions"], list)
    assert meta["command"].startswith("hyperthumbnail bench rd --datasets tiny")
    assert meta["datasets"]["tiny"]["images"] == len(SIZES)
    assert len(rows) == len(SIZES)
    assert results["tiny"]["hyperthumbnail"]["bpp"] == pytest.approx(np.mean([float(r["bpp"]) for r in rows]), abs=1e-4)
    for name in ("rd.csv", "rd_psnr.png", "rd_thumbnail.png", "rd_bars.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0

    # Same code path as `hyperthumbnail encode` / `decode`: same bytes, same reconstruction.
    row = rows[2]
    src = data_root / "tiny" / row["image"]
    jpg, png = tmp_path / "cli.jpg", tmp_path / "cli.png"
    assert cli(["encode", str(src), "-o", str(jpg)]) == 0
    assert cli(["decode", str(jpg), "-o", str(png)]) == 0
    assert jpg.stat().st_size == int(row["bytes"])
    assert psnr(load_image(png), load_image(src)) == pytest.approx(float(row["psnr"]), abs=1e-3)
    assert psnr(load_image(png), load_image(src), border=2) == pytest.approx(float(row["psnr_border2"]), abs=1e-3)
    with open(tmp_path / "out" / "rd.csv") as f:
        summary = next(csv.DictReader(f))
    assert summary["lr_psnr_worst_image"] == results["tiny"]["hyperthumbnail"]["lr_psnr_worst_image"]


def test_rd_rebuilds_the_thumbnails_an_older_model_made(data_root, tmp_path, monkeypatch, capsys):
    """`--thumbnails-by OLD`: OLD's files (bpp, thumbnail) rebuilt by `--weights`' decoder, which
    must serve OLD's model id; one that does not is refused, naming both."""
    from hyperthumbnail.pipeline import Pipeline

    monkeypatch.setenv("HYPERTHUMBNAIL_CACHE", str(tmp_path / "graphs"))
    old = small_weights(tmp_path / "old.safetensors", 1)
    new = small_weights(tmp_path / "new.safetensors", 2, also_decodes=(model_id(old),))
    results, rows = run_rd(data_root, tmp_path / "out", "hyperthumbnail,bicubic_jpeg", "--weights", str(new),
                           "--thumbnails-by", str(old))
    assert results["meta"]["thumbnail_weights"]["model_id"] == model_id(old)
    row = rows[0]
    image = load_image(data_root / "tiny" / row["image"])
    ours = Pipeline(old).encode(image)
    assert int(row["bytes"]) == len(ours)
    assert float(row["psnr"]) == pytest.approx(psnr(Pipeline(new).decode(ours), image), abs=1e-3)

    assert cli(["bench", "rd", "--datasets", "tiny", "--data-root", str(data_root), "--methods", "hyperthumbnail",
                "--weights", str(old), "--thumbnails-by", str(new), "--out", str(tmp_path / "refused")]) == 1
    err = capsys.readouterr().err
    assert f"does not serve model {model_id(new)}" in err and model_id(old) in err


@pytest.mark.parametrize("method,subsampling", [("bicubic_jpeg", "444"), ("bicubic_jpeg_420", "420")])
def test_rd_bicubic_jpeg_matches_our_bitrate(data_root, tmp_path, method, subsampling):
    results, rows = run_rd(data_root, tmp_path / "out", method)
    assert set(results["tiny"]) == {method}
    check_entry(results["tiny"][method], rows)
    from hyperthumbnail.pipeline import Pipeline

    ours = Pipeline()
    for row in rows:
        image = load_image(data_root / "tiny" / row["image"])
        h, w = image.shape[:2]
        target = 8 * len(ours.encode(image)) / (w * h)
        assert float(row["target_bpp"]) == pytest.approx(target, abs=1e-4)
        # The chosen quality is the closest to our bitrate among its neighbours (the granularity).
        padded = pad_to_multiple(image, 4)  # thumbnail pixel i covers HR pixels 4i..4i+3
        lr = np.asarray(Image.fromarray(padded).resize((math.ceil(w / 4), math.ceil(h / 4)), Image.BICUBIC))
        q = int(row["quality"])
        bpp = {k: 8 * len(encode_jpeg(lr, k, subsampling)) / (w * h) for k in (q - 1, q, q + 1) if 1 <= k <= 100}
        assert bpp[q] == pytest.approx(float(row["bpp"]), abs=1e-4)
        assert all(abs(bpp[q] - target) <= abs(v - target) + 1e-9 for v in bpp.values())


def test_closest_quality():
    def bpp_at(q: int) -> float:
        return 0.01 * q

    assert closest_quality(bpp_at, 0.504) == 50
    assert closest_quality(bpp_at, 0.506) == 51
    assert closest_quality(bpp_at, 0.001) == 1
    assert closest_quality(bpp_at, 5.0) == 100


def test_ijg_tables_are_libjpegs():
    """Our IJG tables equal the ones Pillow/libjpeg writes at the same quality."""
    image = photo_like(48, 40)
    for quality in (10, 50, 75, 94):
        _, tables = read_coefficients(encode_jpeg(image, quality))
        np.testing.assert_array_equal(tables, ijg_tables(quality))


def test_rd_refuses_unknown_dataset_and_method(data_root, tmp_path, capsys):
    assert cli(["bench", "rd", "--datasets", "nope", "--data-root", str(data_root), "--out", str(tmp_path)]) == 1
    assert "nope" in capsys.readouterr().err
    assert cli(["bench", "rd", "--datasets", "tiny", "--data-root", str(data_root), "--methods", "magic",
                "--out", str(tmp_path)]) == 1
    assert "magic" in capsys.readouterr().err


# ----------------------------------------------------------------------------- crops


def contains(sheet: np.ndarray, panel: np.ndarray) -> bool:
    """Whether `panel` appears pixel for pixel somewhere in `sheet`."""
    h, w = panel.shape[:2]
    ys, xs = np.nonzero(np.all(sheet[:sheet.shape[0] - h + 1, :sheet.shape[1] - w + 1] == panel[0, 0], axis=-1))
    return any(np.array_equal(sheet[y:y + h, x:x + w], panel) for y, x in zip(ys, xs))


def test_crops_of_a_generated_image(tmp_path):
    image = photo_like(90, 70, seed=5)  # off the 32-pixel grid: padding and cropping
    src = tmp_path / "gen.png"
    Image.fromarray(image).save(src)
    out = tmp_path / "crops"
    shipped = str(default_weights_path())
    assert cli(["bench", "crops", "--new-weights", shipped, "--image", f"{src}:8,4,64,48:20,16,40,30",
                "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert names == {"crops.json", "gen_thumbnail.png", "gen_photo.png", "gen_old.jpg", "gen_new.jpg",
                     "gen_bicubic_jpeg.jpg"}
    # The files are what `hyperthumbnail encode` writes.
    jpg = tmp_path / "cli.jpg"
    assert cli(["encode", str(src), "-o", str(jpg)]) == 0
    assert (out / "gen_new.jpg").read_bytes() == jpg.read_bytes() == (out / "gen_old.jpg").read_bytes()
    result = json.loads((out / "crops.json").read_text())
    assert result["meta"]["new_weights"]["sha256"] == result["meta"]["old_weights"]["sha256"] == file_sha256(shipped)
    assert result["meta"]["command"].startswith("hyperthumbnail bench crops --new-weights")
    entry = result["images"][0]
    reference = bicubic_downscale(image, 4)
    thumb = decode_jpeg(jpg.read_bytes())
    assert entry["metrics"]["new"]["lr_psnr"] == pytest.approx(psnr(thumb, reference))
    assert entry["metrics"]["bicubic_jpeg"]["bytes"] == (out / "gen_bicubic_jpeg.jpg").stat().st_size
    # The sheets hold the zoomed crops pixel for pixel: thumbnail pixels 2..18 x 1..13 at 4x (the
    # ones covering HR 8..72 x 4..52), the photo region at 2x.
    assert entry["thumbnail_box"] == [2, 1, 18, 13] == list(thumbnail_box((8, 4, 64, 48), 4))
    thumbnails = np.asarray(Image.open(out / "gen_thumbnail.png").convert("RGB"))
    assert contains(thumbnails, zoom(thumb[1:13, 2:18], 4))
    assert contains(thumbnails, zoom(reference[1:13, 2:18], 4))
    photos = np.asarray(Image.open(out / "gen_photo.png").convert("RGB"))
    assert contains(photos, zoom(image[16:46, 20:60], 2))
    assert not contains(photos, zoom(image[17:47, 20:60], 2))  # the check can fail


def test_crops_refuses_bad_input(tmp_path, capsys):
    src = tmp_path / "gen.png"
    Image.fromarray(photo_like(64, 48)).save(src)
    shipped = str(default_weights_path())
    cases = [(f"{src}:0,0,80,8:0,0,8,8", "does not fit the 64x48 image"),
             (f"{src}:0,0,8:0,0,8,8", "X,Y,WIDTH,HEIGHT"),
             (f"{tmp_path}/nope.png:0,0,8,8:0,0,8,8", "not found")]
    for spec, message in cases:
        assert cli(["bench", "crops", "--new-weights", shipped, "--image", spec, "--out", str(tmp_path / "o")]) == 1
        assert message in capsys.readouterr().err
    assert cli(["bench", "crops", "--new-weights", shipped, "--old-weights", str(default_weights_path(2)),
                "--image", f"{src}:0,0,8,8:0,0,8,8", "--out", str(tmp_path / "o")]) == 1
    assert "the old weights are 2x, the new ones 4x" in capsys.readouterr().err
    assert parse_spec("a:b/c.png:1,2,3,4:5,6,7,8").path.name == "c.png"  # a colon inside the path


# ----------------------------------------------------------------------------- SR baseline


@pytest.fixture(scope="module")
def train_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("train")
    for i in range(3):
        Image.fromarray(photo_like(160, 128, seed=10 + i)).save(folder / f"t{i}.png")
    return folder


def sr_args(train_folder: Path, run_dir: Path, weights: Path, steps: int, *extra: str) -> list[str]:
    return ["--data", str(train_folder), "--run-dir", str(run_dir), "--export", str(weights), "--steps", str(steps),
            "--batch", "2", "--crop", "64", "--threads", "1", "--log-every", "1",
            "--min-lr", "5e-4", *extra]  # constant LR: the schedule must not depend on --steps here


def decoder_state(weights: Path) -> dict[str, np.ndarray]:
    with safe_open(str(weights), framework="numpy") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_sr_baseline_trains_resumes_and_benchmarks(train_folder, data_root, tmp_path):
    weights = tmp_path / "sr.safetensors"
    assert sr_train(sr_args(train_folder, tmp_path / "run", weights, 3)) == 0
    card = json.loads(weights.with_suffix(".json").read_text())
    assert card["steps"] == 3 and card["data"] == str(train_folder)
    quality = card["config"]["quality"]
    assert 1 <= quality <= 100 and card["train_bpp_at_quality"] > 0  # picked for --target-bpp 0.3

    # Resume to 5 steps; the result equals 5 uninterrupted steps (model, optimizer and RNG restored).
    assert sr_train(sr_args(train_folder, tmp_path / "run", weights, 5)) == 0
    card = json.loads(weights.with_suffix(".json").read_text())
    assert card["steps"] == 5 and card["config"]["quality"] == quality
    with open(tmp_path / "run" / "log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5]
    straight = tmp_path / "straight.safetensors"
    assert sr_train(sr_args(train_folder, tmp_path / "run2", straight, 5)) == 0
    resumed, direct = decoder_state(weights), decoder_state(straight)
    assert resumed.keys() == direct.keys()
    for key in resumed:
        np.testing.assert_array_equal(resumed[key], direct[key], err_msg=key)

    results, rows = run_rd(data_root, tmp_path / "out", "sr_baseline", "--sr-weights", str(weights))
    check_entry(results["tiny"]["sr_baseline"], rows)
    assert {int(r["quality"]) for r in rows} == {quality}
    assert results["meta"]["sr_baseline"]["sha256"] == file_sha256(weights)


# ----------------------------------------------------------------------------- speed


def test_parse_resolution():
    assert parse_resolution("6k") == (6144, 4096)
    assert parse_resolution("4K") == (3840, 2160)
    assert parse_resolution("1080p") == (1920, 1080)
    assert parse_resolution("1024x768") == (1024, 768)
    for bad in ("6", "0x10", "axb", "10x", "8k"):
        with pytest.raises(ValueError):
            parse_resolution(bad)


def test_parse_speed_lists():
    assert parse_resolutions("1080p,4k,6k") == [(1920, 1080), (3840, 2160), (6144, 4096)]
    assert parse_resolutions("256x192") == [(256, 192)]
    for bad in ("", "1080p,1920x1080", "4k,huge"):
        with pytest.raises(ValueError):
            parse_resolutions(bad)
    assert parse_variants("openvino,onnx") == ["openvino", "onnx"]
    for bad in ("ort", "onnx,onnx", ""):
        with pytest.raises(ValueError):
            parse_variants(bad)
    assert parse_repeats("3", 3) == [3, 3, 3]
    assert parse_repeats("3,3,2", 3) == [3, 3, 2]
    for bad in ("3,2", "0", "x"):
        with pytest.raises(ValueError):
            parse_repeats(bad, 3)
    assert default_repeats([(1920, 1080), (3840, 2160), (6144, 4096)]) == [3, 3, 2]


def test_speed_variants_without_native_bf16(monkeypatch):
    """A CPU without bf16 runs the default variant in f32: its floor is the f32 floor."""
    monkeypatch.setenv("HYPERTHUMBNAIL_NATIVE_BF16", "0")
    assert graph_precision_values("openvino") == {"f32"}
    monkeypatch.setenv("HYPERTHUMBNAIL_NATIVE_BF16", "1")
    assert graph_precision_values("openvino") == {"f32", "bf16"}
    assert graph_precision_values("onnx") == {"f32"}


def test_compute_floor_arithmetic(tmp_path):
    from hyperthumbnail.export.macs import count_macs

    macs = probe_model(tmp_path / "conv.onnx", channels=8, height=16, width=12)
    assert macs == 8 * 8 * 9 * 16 * 12 == count_macs(tmp_path / "conv.onnx", {"x": (1, 8, 16, 12)})["total"]
    gmacs = {"encoder": 100.0, "qpm": 1.0, "decoder_features": 2.0, "decoder_body": 40.0}
    precisions = {"encoder": "bf16", "qpm": "f32", "decoder_features": "f32", "decoder_body": "bf16"}
    floor = floor_ms(gmacs, precisions, {"f32": 50.0, "bf16": 100.0})
    assert floor == {"encode": pytest.approx(1020.0), "decode": pytest.approx(440.0)}


def _entry(total: float, neural: float, **extra) -> dict:
    return {"total_ms": total, "neural_ms": neural, "stages_ms": {"decoder": neural}, **extra}


def test_speed_ratios():
    """onnx / each other variant per resolution, direction and path; the 6K decode headline."""
    six, small = "6144x4096", "256x192"

    def variant(scale: float, http: bool) -> dict:
        paths = {"inprocess": {d: _entry(scale * t, scale * t / 2) for d, t in (("encode", 10.0), ("decode", 20.0))}}
        if http:
            paths["triton_http"] = {d: _entry(scale * t, 0.0) for d, t in (("encode", 12.0), ("decode", 24.0))}
        return paths

    results = {"speed": {small: {"onnx": variant(3.0, True), "openvino": variant(1.0, True)},
                         six: {"onnx": variant(2.0, False), "openvino": variant(1.0, False),
                               "openvino-f32": variant(1.5, False)}}}
    r = ratios(results)
    assert r["onnx_over"]["openvino"][small]["decode"] == {"inprocess": 3.0, "inprocess_neural": 3.0, "triton_http": 3.0}
    assert r["onnx_over"]["openvino"][six]["encode"]["triton_http"] is None  # not measured
    assert r["onnx_over"]["openvino-f32"] == {six: {d: {"inprocess": 1.333, "inprocess_neural": 1.333,
                                                        "triton_http": None} for d in ("encode", "decode")}}
    assert r["decode_6k_onnx_over_openvino"] == {"inprocess": 2.0, "triton_http": None}
    assert r["triton_over_inprocess"][small]["onnx"] == {"http_encode": 1.2, "http_decode": 1.2}
    del results["speed"][six]
    assert "decode_6k_onnx_over_openvino" not in ratios(results)


@pytest.mark.server
@pytest.mark.timeout(900)
def test_speed_quick_run(tmp_path):
    """All three variants at one tiny resolution, in-process and through their own servers (HTTP
    only, to keep CI short: tests/test_client.py covers every protocol's equality)."""
    out = tmp_path / "out"
    code = cli(["bench", "speed", "--resolutions", "256x192", "--repeats", "1", "--warmup", "1", "--protocols", "http",
                "--model-repository", str(tmp_path / "repo"), "--out", str(out)])
    assert code == 0
    r = json.loads((out / "speed.json").read_text())
    meta, key = r["meta"], "256x192"
    assert meta["resolutions"] == [key] and meta["repeats"] == {key: 1}
    assert list(meta["variants"]) == ["onnx", "openvino-f32", "openvino"]
    assert meta["variants"]["openvino"]["graph_precisions"]["qpm"] == "f32"
    assert meta["machine"]["cpu_model"] and meta["machine"]["versions"]["openvino"]
    assert meta["command"].startswith("hyperthumbnail bench speed --resolutions 256x192") and meta["protocols"] == ["http"]
    assert meta["weights"]["sha256"] == file_sha256(default_weights_path())
    assert set(meta["triton"]["repositories"]) == set(meta["variants"])
    inputs = r["inputs"][key]
    assert set(inputs["thumbnail_bytes"]) == set(meta["variants"]) and min(inputs["bpp"].values()) > 0

    peak = r["peak_rate"]["peak_gmac_per_s"]
    assert peak["f32"] > 0 and set(peak) == set().union(*(graph_precision_values(v) for v in meta["variants"]))
    gmacs = r["gmacs"][key]
    assert gmacs["encode"] == pytest.approx(gmacs["encoder"] + gmacs["qpm"], abs=2e-3) and gmacs["encoder"] > 0
    # the split decoder's MACs add up to the unsplit decoder's (counted for the EDSR comparison)
    assert gmacs["decode"] == pytest.approx(r["edsr_baseline"]["gmacs"][key]["hyperthumbnail_decoder"], abs=0.01)

    expected_steps = {"encode": {"preprocess", "encoder", "qpm", "entropy_coding"},
                      "decode": {"entropy_coding", "decoder", "postprocess"}}
    for variant, paths in r["speed"][key].items():
        assert set(paths) == {"inprocess", "triton_http"}
        for direction, step_names in expected_steps.items():
            m = paths["inprocess"][direction]
            assert set(m["stages_ms"]) == step_names
            assert len(m["runs_ms"]) == 1 and m["total_ms"] > 0
            assert m["peak_rss_mb"] >= m["rss_before_mb"] - 1 > 0
            assert m["graphs"].startswith(meta["variants"][variant]["runtime"])
            floor = r["floor_ms"][key][variant][direction]
            assert floor > 0 and m["floor_ms"] == floor
            assert m["over_floor"] == pytest.approx(m["total_ms"] / floor)
        for path in ("triton_http",):
            for direction, m in paths[path].items():
                # served output == in-process output of the SAME variant
                assert m["equal_to_inprocess"], (variant, path, direction)
                assert m["server_requests"] == 1 and m["total_ms"] > 0 and m["floor_ms"] > 0
                assert set(m["composing_models"]) <= set(m["stages_ms"])
                # Triton closes a request's clock when the response is released, which can be a
                # fraction of a ms after the client has it
                assert m["stages_ms"]["network_serialization"] > -1.0
                assert m["server_peak_rss_mb"] > 0 and m["client_peak_rss_mb"] > 0
                ratio = r["ratios"]["triton_over_inprocess"][key][variant][f"{path[7:]}_{direction}"]
                assert ratio == pytest.approx(m["total_ms"] / paths["inprocess"][direction]["total_ms"], abs=1e-3)
    # the floor: GMACs over the peak rate of each graph's precision; f32 variants share it
    floors = r["floor_ms"][key]
    assert floors["onnx"] == floors["openvino-f32"]
    precision = meta["variants"]["openvino"]["graph_precisions"]
    assert floors["openvino"]["encode"] == pytest.approx(
        1e3 * sum(gmacs[g] / peak[precision[g]] for g in ("encoder", "qpm")), abs=0.1)
    assert floors["openvino"]["decode"] == pytest.approx(
        1e3 * sum(gmacs[g] / peak[precision[g]] for g in ("decoder_features", "decoder_body")), abs=0.1)
    onnx, default = r["speed"][key]["onnx"], r["speed"][key]["openvino"]
    assert r["ratios"]["onnx_over"]["openvino"][key]["decode"]["triton_http"] == pytest.approx(
        onnx["triton_http"]["decode"]["total_ms"] / default["triton_http"]["decode"]["total_ms"], abs=1e-3)

    edsr = r["edsr_baseline"]
    assert edsr["resolution"] == key and edsr["compared_with"] == "onnx"
    assert set(edsr["decode"]["stages_ms"]) == {"jpeg_decode", "preprocess", "edsr", "postprocess"}
    assert r["ratios"]["edsr_over_ours_decode_total"] == pytest.approx(
        edsr["decode"]["total_ms"] / onnx["inprocess"]["decode"]["total_ms"], abs=1e-3)
    assert r["ratios"]["edsr_over_ours_gmacs_6k"] > 1

    with open(out / "speed.csv") as f:
        rows = list(csv.DictReader(f))
    totals = {(row["variant"], row["path"], row["direction"]) for row in rows if row["stage"] == "total"}
    assert len(totals) == 3 * 2 * 2 + 1 and ("edsr_baseline", "inprocess", "decode") in totals
    assert all(float(row["over_floor"]) > 0 for row in rows if row["stage"] == "total" and row["variant"] != "edsr_baseline")
    assert (out / "speed.png").stat().st_size > 0


def test_speed_refuses_bad_options(capsys):
    for args, word in ((["--resolutions", "huge"], "resolution"), (["--variants", "onnx,tensorrt"], "variants"),
                       (["--resolutions", "1080p,4k", "--repeats", "3,2,1"], "repeats"),
                       (["--url", "127.0.0.1:1", "--protocols", "http"], "one variant"), (["--warmup", "0"], "warmup")):
        assert cli(["bench", "speed", *args]) == 1, args
        assert word in capsys.readouterr().err, args


def test_tiling_bench_counts_what_tiling_moves(tmp_path):
    """`bench tiling` on a photo cut into several tiles: counts, tables, dB, and the CPU it ran on.
    What it finds is the CPU's (module docstring of tests/test_tiling.py): only the bounds that
    hold on every x86 CPU are asserted."""
    from hyperthumbnail.benchmarks.tiling import tile_pixels_for

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(photo_like(1400, 1000, seed=70)).save(photos / "wide.png")
    assert cli(["bench", "tiling", str(photos), "--out", str(tmp_path), "--threads", "1"]) == 0
    record = json.loads((tmp_path / "tiling.json").read_text())
    row, summary = record["photos"][0], record["summary"]
    assert row["photo"] == "photos/wide.png" and row["size"] == [1400, 1000]
    assert row["tile_pixels"] == tile_pixels_for(1400, 1000, 4) == 640 * 640  # 4 tiles and more
    assert row["coefficients"] == 3 * 64 * 32 * 44 and row["tables_equal"]
    assert row["quantized_differing"] <= 1e-4 * row["coefficients"] and row["quantized_max_step"] <= 1
    assert abs(row["hr_psnr_tiled"] - row["hr_psnr_whole"]) < 0.01
    assert summary["photos"] == 1 and summary["tables_always_equal"]
    assert isinstance(record["meta"]["machine"]["cpu_vector_extensions"], list)
    assert "encoder" in record["meta"]["graphs"]


def test_fold_bench_compares_the_two_body_forms(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(photo_like(320, 224, seed=71)).save(photos / "small.png")
    assert cli(["bench", "fold", "--photos", str(photos), "--resolution", "256x192", "--repeats", "1",
                "--out", str(tmp_path), "--threads", "1"]) == 0
    record = json.loads((tmp_path / "fold.json").read_text())
    row, summary = record["photos"][0], record["summary"]
    assert row["photo"] == "small.png" and row["folded_vs_unfolded_db"] >= 45 and row["max_level_difference"] <= 4
    assert abs(row["hr_psnr_folded"] - row["hr_psnr_unfolded"]) < 0.05
    assert summary["body_median_ms"]["folded"] > 0 and summary["speedup"] > 0
    assert record["meta"]["body_features_shape"] == [1, 30, 48, 64]


def test_versus_runs_a_git_revision_beside_this_checkout(tmp_path):
    """`bench versus HEAD`: a real worktree of HEAD imported instead of this checkout (checked), the
    thumbnail made by the revision's CLI, both decodes timed in turn; same code, so same pixels."""
    from hyperthumbnail.benchmarks.versus import checkout_env, worktree

    with worktree("HEAD") as checkout:
        assert checkout_env(checkout)["PYTHONPATH"] == str(checkout)
    assert not checkout.exists()  # the worktree is gone afterwards
    photo = tmp_path / "photo.png"
    Image.fromarray(photo_like(256, 192, seed=72)).save(photo)
    assert cli(["bench", "versus", "HEAD", str(photo), "--rounds", "1", "--work", str(tmp_path / "work"),
                "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "versus.json").read_text())
    assert [r["version"] for r in record["runs"]] == ["base", "this"] and record["size"] == [256, 192]
    assert record["psnr_between_outputs_db"] is None  # identical pixels
    revisions = record["meta"]["revisions"]
    assert revisions["this"].startswith(revisions["base"]) and record["speedup_median"] > 0
    assert (tmp_path / "versus.png").stat().st_size > 0


def test_decode_stages_add_up_to_the_product_path(tmp_path):
    """`bench decode-stages`: every stage timed, the graphs through the pipeline's own runners."""
    photo = photo_like(320, 224, seed=73)
    thumbnail = tmp_path / "t.jpg"
    assert cli(["encode", _save(photo, tmp_path / "p.png"), "-o", str(thumbnail)]) == 0
    assert cli(["bench", "decode-stages", str(thumbnail), "--repeats", "1", "--threads", "1",
                "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "decode_stages.json").read_text())
    stages = record["stages_median_ms"]
    assert set(stages) == {"read_and_jpeg_entropy_decoding", "decoder_features", "decoder_body",
                           "body_tiles_and_copies", "crop", "png_write"}
    assert stages["decoder_body"] > 0 and stages["decoder_features"] > 0 and record["meta"]["body_whole"]
    assert record["meta"]["photo_size"] == [320, 224] and record["body_operations_ms"]["Convolution"] > 0
    assert "decoded in" in record["cli"]["report"]


def _save(image: np.ndarray, path: Path) -> str:
    Image.fromarray(image).save(path)
    return str(path)


def test_decoder_width_bench_times_each_width(tmp_path):
    from hyperthumbnail.benchmarks.decoder_width import parse_shape

    assert cli(["bench", "decoder-width", "--widths", "24,32,32x2", "--resolution", "250x190", "--repeats", "1",
                "--threads", "1", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "decoder_width.json").read_text())
    # 250x190 padded to 8x8 blocks of 32x32; the body reads the thumbnail (2 x 3) + its head conv's W channels
    assert record["meta"]["features_shapes"] == {"24": [1, 30, 48, 64], "32": [1, 38, 48, 64], "32x2": [1, 38, 48, 64]}
    assert record["ratio_to_first"]["24"] == 1.0 and record["median_ms"]["32"] > 0
    assert record["median_ms"]["32x2"] > 0 and parse_shape("32x2") == (32, 2) and parse_shape("24") == (24, 16)
