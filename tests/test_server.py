"""The model repository on the real tritonserver from the nvidia-pytriton wheel.

Uses the session's shared server (`triton_server` / `served_repository` in conftest.py): these
tests check the serving plumbing, not image quality.
"""
from __future__ import annotations

import io
import shutil
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

tritonclient_http = pytest.importorskip("tritonclient.http")
tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
from conftest import MAX_PIXELS, SCALE, photo_like, served_model_id, served_runner, served_weights  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from hyperthumbnail.codec import steps  # noqa: E402
from hyperthumbnail.codec.thumbnail import read_thumbnail, write_thumbnail  # noqa: E402
from hyperthumbnail.runtime.tiling import decode_body_tiled  # noqa: E402
from hyperthumbnail.serving.repository import build_repository, read_stamp  # noqa: E402
from hyperthumbnail.serving.server_process import TritonServer, TritonServerError, free_port  # noqa: E402

pytestmark = [pytest.mark.server, pytest.mark.timeout(600)]

SIZES = [(96, 64), (130, 77)]  # (W, H): one on the block grid, one odd size that needs padding


@pytest.fixture
def repository(served_repository) -> Path:
    return served_repository


@pytest.fixture
def server(triton_server) -> TritonServer:
    return triton_server


@pytest.fixture(params=["http", "grpc"])
def client(request, server):
    module = tritonclient_http if request.param == "http" else tritonclient_grpc
    url = server.http_url if request.param == "http" else server.grpc_url
    c = module.InferenceServerClient(url)
    c.module = module  # the matching InferInput class travels with the client
    yield c
    c.close()


def infer(client, model: str, name: str, array: np.ndarray, datatype: str, output: str) -> np.ndarray:
    inp = client.module.InferInput(name, list(array.shape), datatype)
    inp.set_data_from_numpy(array)
    return client.infer(model, [inp]).as_numpy(output)


def encode(client, images: np.ndarray) -> np.ndarray:
    return infer(client, "hyperthumbnail_encode", "IMAGE", images, "UINT8", "THUMBNAIL")


def decode(client, thumbnails: np.ndarray) -> np.ndarray:
    return infer(client, "hyperthumbnail_decode", "THUMBNAIL", thumbnails, "BYTES", "IMAGE")


def as_bytes(item) -> bytes:
    return item if isinstance(item, bytes) else bytes(item)


# ----------------------------------------------------------------------------- ensembles


@pytest.mark.parametrize("width,height", SIZES)
def test_round_trip_shapes(client, width, height):
    image = photo_like(width, height)[None]
    thumbnails = encode(client, image)
    assert thumbnails.shape == (1, 1)
    data = as_bytes(thumbnails[0, 0])
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    thumb = read_thumbnail(data)
    assert thumb.hr_size == (width, height) and thumb.scale == SCALE

    restored = decode(client, np.array([[data]], dtype=np.object_))
    assert restored.shape == (1, height, width, 3) and restored.dtype == np.uint8


def test_batch_in_one_request(client):
    images = np.stack([photo_like(130, 77, seed=1), photo_like(130, 77, seed=2)])
    thumbnails = encode(client, images)
    assert thumbnails.shape == (2, 1)
    assert as_bytes(thumbnails[0, 0]) != as_bytes(thumbnails[1, 0])
    restored = decode(client, thumbnails)
    assert restored.shape == (2, 77, 130, 3)


def _reference_thumbnail(repository: Path, image: np.ndarray) -> bytes:
    """In-process encode with the same graphs and runtime, the shared steps and write_thumbnail."""
    hr, size = steps.preprocess(image, SCALE)
    coefficients = served_runner(repository, "encoder").run({"image": hr[None]})["coefficients"]
    qpm = served_runner(repository, "qpm").run(
        {"coefficients": coefficients, "table_scale": np.ones(1, np.float32)})
    return steps.encode_thumbnail(qpm["quantized"][0], qpm["tables"][0], size, SCALE, served_model_id())


def _reference_decode(repository: Path, data: bytes) -> np.ndarray:
    quantized, tables, size = steps.decode_thumbnail(data, SCALE)
    features = served_runner(repository, "decoder", "decoder_features").run(
        {"quantized": quantized[None], "tables": tables[None]})["features"][0]
    body = served_runner(repository, "decoder", "decoder_body")
    image = decode_body_tiled(lambda f: body.run({"features": f})["image"], features, SCALE, max_tile_pixels=None)
    return steps.crop_image(image, size)


@pytest.mark.parametrize("width,height", SIZES)
def test_served_bytes_equal_in_process(client, repository, width, height):
    image = photo_like(width, height, seed=3)
    served = as_bytes(encode(client, image[None])[0, 0])
    assert served == _reference_thumbnail(repository, image)
    restored = decode(client, np.array([[served]], dtype=np.object_))[0]
    np.testing.assert_array_equal(restored, _reference_decode(repository, served))


# ----------------------------------------------------------------------------- errors


def plain_jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(photo_like(64, 48)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize("payload,reason", [
    (b"definitely not a jpeg", "not a JPEG"),
    (b"", "empty"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "truncated"),
    ("plain", "HYPERTHUMB' marker is missing"),
], ids=["garbage", "empty", "truncated", "plain-jpeg"])
def test_bad_thumbnail_is_a_request_error(client, payload, reason):
    payload = plain_jpeg() if payload == "plain" else payload
    with pytest.raises(InferenceServerException) as excinfo:
        decode(client, np.array([[payload]], dtype=np.object_))
    assert reason in str(excinfo.value) and "jpeg_decode" in str(excinfo.value)
    # ... and the server keeps serving
    assert decode(client, encode(client, photo_like(96, 64)[None])).shape == (1, 64, 96, 3)


def test_thumbnail_of_another_model_is_refused_by_name(client):
    """The marker's model id is checked against the ids the served decoder was trained for."""
    served = as_bytes(encode(client, photo_like(96, 64)[None])[0, 0])
    assert read_thumbnail(served).model_id == served_model_id()
    other = replace(read_thumbnail(served), model_id="fedcba9876543210")
    with pytest.raises(InferenceServerException, match="made by model fedcba9876543210.*" + served_model_id()):
        decode(client, np.array([[write_thumbnail(other)]], dtype=np.object_))
    assert decode(client, np.array([[served]], dtype=np.object_)).shape == (1, 64, 96, 3)


def test_corrupted_thumbnail_is_refused(client):
    data = bytearray(as_bytes(encode(client, photo_like(96, 64)[None])[0, 0]))
    data[len(data) // 2 + 20] ^= 0x55
    with pytest.raises(InferenceServerException, match="checksum|corrupt"):
        decode(client, np.array([[bytes(data)]], dtype=np.object_))


def test_image_over_pixel_limit_is_refused(client):
    big = photo_like(640, 640)  # 409_600 pixels > MAX_PIXELS
    with pytest.raises(InferenceServerException, match=f"limit of {MAX_PIXELS} pixels"):
        encode(client, big[None])


def test_bad_request_does_not_affect_concurrent_ones(server):
    """Good and bad requests in flight together (so the dynamic batchers may merge them)."""
    good = as_bytes(encode_http(server, photo_like(96, 64)[None])[0, 0])
    payloads = [good, b"garbage", good, b"\xff\xd8junk", good, good]
    results: dict[int, object] = {}

    def worker(index: int, payload: bytes) -> None:
        c = tritonclient_http.InferenceServerClient(server.http_url)
        try:
            inp = tritonclient_http.InferInput("THUMBNAIL", [1, 1], "BYTES")
            inp.set_data_from_numpy(np.array([[payload]], dtype=np.object_))
            results[index] = c.infer("hyperthumbnail_decode", [inp]).as_numpy("IMAGE")
        except InferenceServerException as exc:
            results[index] = exc
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=item) for item in enumerate(payloads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    expected = _reference_decode_cached(server, good)
    for index, payload in enumerate(payloads):
        if payload == good:
            np.testing.assert_array_equal(results[index][0], expected)
        else:
            assert isinstance(results[index], InferenceServerException)


_decoded: dict[bytes, np.ndarray] = {}


def _reference_decode_cached(server: TritonServer, data: bytes) -> np.ndarray:
    if data not in _decoded:
        _decoded[data] = _reference_decode(server.model_repository, data)
    return _decoded[data]


def encode_http(server: TritonServer, images: np.ndarray) -> np.ndarray:
    c = tritonclient_http.InferenceServerClient(server.http_url)
    try:
        c.module = tritonclient_http
        return encode(c, images)
    finally:
        c.close()


# ----------------------------------------------------------------------------- server


def test_metrics_endpoint(server):
    encode_http(server, photo_like(96, 64)[None])
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read().decode()
    assert 'nv_inference_request_success{model="hyperthumbnail_encode",version="1"}' in text
    assert 'nv_inference_request_success{model="jpeg_encode",version="1"}' in text


def test_models_ready_and_batching_config(server):
    c = tritonclient_http.InferenceServerClient(server.http_url)
    try:
        for name in ("hyperthumbnail_encode", "hyperthumbnail_decode"):
            assert c.is_model_ready(name)
            assert c.get_model_config(name)["max_batch_size"] >= 1
        meta = c.get_model_metadata("hyperthumbnail_encode")
        assert meta["inputs"][0] == {"name": "IMAGE", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}
        assert meta["outputs"][0] == {"name": "THUMBNAIL", "datatype": "BYTES", "shape": [-1, 1]}
    finally:
        c.close()


def test_repository_is_not_rebuilt_when_current(repository, monkeypatch):
    import hyperthumbnail.export.onnx_export as onnx_export

    stamp = read_stamp(repository)
    model = served_weights()
    monkeypatch.setattr(onnx_export, "export_graph", lambda *a, **k: pytest.fail("re-exported a current repository"))
    started = time.monotonic()
    assert build_repository(repository, weights=model, scale=SCALE) == repository
    assert time.monotonic() - started < 10
    assert read_stamp(repository) == stamp


def test_broken_model_config_fails_start_with_reason(repository, tmp_path):
    broken = tmp_path / "repo"
    shutil.copytree(repository / "jpeg_encode", broken / "jpeg_encode")
    config = broken / "jpeg_encode" / "config.pbtxt"
    config.write_text(config.read_text().replace('backend: "python"', 'backend: "no_such_backend"'))
    srv = TritonServer(broken, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())
    with pytest.raises(TritonServerError) as excinfo:
        srv.start(timeout=120)
    message = str(excinfo.value)
    assert "jpeg_encode" in message and "no_such_backend" in message
    assert not srv.is_running()


def test_model_failing_to_initialize_fails_start_with_reason(repository, tmp_path):
    broken = tmp_path / "repo"
    shutil.copytree(repository / "decoder", broken / "decoder", ignore=shutil.ignore_patterns("*.onnx"))
    srv = TritonServer(broken, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())
    with pytest.raises(TritonServerError, match=r"decoder_features\.onnx is missing"):
        srv.start(timeout=120)


# ----------------------------------------------------------------------------- hyperthumbnail serve


def _serve_command(repo: Path) -> list[str]:
    import sys

    return [sys.executable, "-m", "hyperthumbnail", "serve", "--model-repository", str(repo), "--quiet",
            "--http-port", str(free_port()), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())]


def test_serve_cli_serves_and_stops_on_sigint(repository, tmp_path):
    import signal
    import subprocess

    repo = tmp_path / "repo"  # a copy without the build stamp is served as is (no export)
    shutil.copytree(repository, repo, ignore=shutil.ignore_patterns(".hyperthumbnail-build.json"))
    proc = subprocess.Popen(_serve_command(repo), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl+C to stop" in line:
                break
        http_url = next(line.split("http://")[1].strip() for line in lines if line.strip().startswith("HTTP"))
        c = tritonclient_http.InferenceServerClient(http_url)
        c.module = tritonclient_http
        assert encode(c, photo_like(96, 64)[None]).shape == (1, 1)
        c.close()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Triton stopped (exit code 0)" in err


def test_serve_cli_reports_model_load_failure(repository, tmp_path):
    import subprocess

    repo = tmp_path / "repo"
    shutil.copytree(repository / "qpm", repo / "qpm", ignore=shutil.ignore_patterns("*.onnx"))
    done = subprocess.run(_serve_command(repo), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "failed to load 'qpm'" in done.stderr and "model.onnx is missing" in done.stderr


# ----------------------------------------------------------------------------- a plain tritonclient program


def test_plain_tritonclient_program_round_trips_a_768x512_photo(triton_server, tmp_path):
    """client/roundtrip_tritonclient.py uses nothing but tritonclient and the interface names; its
    thumbnail must equal the in-process `hyperthumbnail encode` output byte for byte."""
    import subprocess
    import sys

    from PIL import Image

    root = Path(__file__).resolve().parents[1]
    photo = tmp_path / "photo.png"
    Image.fromarray(photo_like(768, 512, seed=11)).save(photo)
    served, restored = tmp_path / "served.jpg", tmp_path / "restored.png"
    subprocess.run([sys.executable, str(root / "client" / "roundtrip_tritonclient.py"), str(photo),
                    "--url", triton_server.http_url, "--thumbnail", str(served), "--output", str(restored)],
                   check=True, capture_output=True, timeout=300)
    in_process = tmp_path / "in_process.jpg"
    assert served_weights() is None, "the served repository must use the shipped weights, like the CLI"
    from hyperthumbnail.cli import main

    assert main(["encode", str(photo), "-o", str(in_process)]) == 0
    assert served.read_bytes() == in_process.read_bytes()
    assert Image.open(restored).size == (768, 512)
    assert Image.open(served).size == (192, 128)
