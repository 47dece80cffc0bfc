"""hyperthumbnail.client against the session's real tritonserver (conftest.py), over HTTP and gRPC:
results equal the in-process Pipeline, shared memory changes nothing, batches and asyncio, typed
errors, the CLI's --url and folder modes, and `perf` (short windows on a small image)."""
from __future__ import annotations

import asyncio
import base64
import csv
import json
import struct
import time

import numpy as np
import pytest
from conftest import MAX_PIXELS, photo_like, served_weights
from PIL import Image

from hyperthumbnail.cli import main
from hyperthumbnail.client import (
    AsyncHyperThumbnailClient,
    HyperThumbnailClient,
    InvalidInputError,
    ServerUnavailableError,
)
from hyperthumbnail.client.perf import parse_concurrency
from hyperthumbnail.client.perf_inputs import RESOLUTIONS, make_input, parse_resolution
from hyperthumbnail.codec.thumbnail import read_thumbnail
from hyperthumbnail.pipeline import Pipeline
from hyperthumbnail.serving.server_process import free_port

pytestmark = pytest.mark.timeout(600)
PROTOCOLS = ["http", "grpc"]
A, B = (130, 77), (96, 64)  # an odd size (padding) and one on the block grid


def url_of(server, protocol: str) -> str:
    return server.http_url if protocol == "http" else server.grpc_url


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    """The in-process ONNX pipeline on the shipped weights, which the session's server serves."""
    if served_weights() is not None:
        pytest.skip("no shipped weights: the served model is a random one the Pipeline cannot load")
    return Pipeline()  # the default runtime and precision, as the served repository


@pytest.fixture(params=PROTOCOLS)
def protocol(request) -> str:
    return request.param


@pytest.fixture
def client(triton_server, protocol):
    with HyperThumbnailClient(url_of(triton_server, protocol), protocol=protocol, timeout_s=120) as c:
        yield c


def registered_regions(client: HyperThumbnailClient) -> list:
    """Names of the system shared-memory regions registered on the server (HTTP: a list, gRPC: {"regions": {...}})."""
    if client.options.protocol == "http":
        return [region["name"] for region in client.triton.get_system_shared_memory_status()]
    return list(client.triton.get_system_shared_memory_status(as_json=True).get("regions", {}))


# ----------------------------------------------------------------------------- sync client


@pytest.mark.server
def test_encode_decode_equal_in_process(client, pipeline):
    assert client.is_ready()
    for seed, (width, height) in enumerate([A, B]):
        image = photo_like(width, height, seed=seed)
        thumbnail = client.encode(image)
        assert thumbnail == pipeline.encode(image)
        assert read_thumbnail(thumbnail).hr_size == (width, height)
        restored = client.decode(thumbnail)
        assert restored.shape == (height, width, 3) and restored.dtype == np.uint8
        np.testing.assert_array_equal(restored, pipeline.decode(thumbnail))


@pytest.mark.server
def test_shared_memory_gives_identical_results(triton_server, protocol):
    import tritonclient.utils.shared_memory as shm

    image = photo_like(*A, seed=5)
    url = url_of(triton_server, protocol)
    with HyperThumbnailClient(url, protocol=protocol) as plain, \
            HyperThumbnailClient(url, protocol=protocol, use_shm=True) as shared:
        thumbnail = plain.encode(image)
        assert shared.encode(image) == thumbnail
        np.testing.assert_array_equal(shared.decode(thumbnail), plain.decode(thumbnail))
        assert shared.encode_batch([image, image]) == [thumbnail, thumbnail]
        for a, b in zip(shared.decode_batch([thumbnail] * 3), plain.decode_batch([thumbnail] * 3)):
            np.testing.assert_array_equal(a, b)
        assert registered_regions(shared) == []  # every region unregistered on the server ...
    assert shm.mapped_shared_memory_regions() == []  # ... and destroyed here


def _encode_requests(client: HyperThumbnailClient) -> tuple[int, int]:
    """(requests, images) the server's encode ensemble has answered so far."""
    stats = client.triton.get_inference_statistics(
        "hyperthumbnail_encode", **({"as_json": True} if client.options.protocol == "grpc" else {}))
    model = stats["model_stats"][0]
    return int(model["inference_stats"]["success"]["count"]), int(model["inference_count"])


def _encode_requests_since(client: HyperThumbnailClient, before: tuple[int, int],
                           expected: tuple[int, int]) -> tuple[int, int]:
    """Delta of `_encode_requests`; Triton records an ensemble's statistics just after it sends
    the response, so the last request can be missing for a moment: poll briefly for `expected`."""
    deadline = time.monotonic() + 5.0
    while True:
        now = _encode_requests(client)
        delta = (now[0] - before[0], now[1] - before[1])
        if delta == expected or time.monotonic() > deadline:
            return delta
        time.sleep(0.05)


@pytest.mark.server
def test_batches_group_same_size_images(client, pipeline):
    images = [photo_like(*A, seed=1), photo_like(*B, seed=2), photo_like(*A, seed=3), photo_like(*A, seed=4)]
    before = _encode_requests(client)
    thumbnails = client.encode_batch(images)
    assert _encode_requests_since(client, before, (2, 4)) == (2, 4)  # one request per size, every image
    assert thumbnails == [pipeline.encode(image) for image in images]

    restored = client.decode_batch(thumbnails)
    assert [r.shape for r in restored] == [(A[1], A[0], 3), (B[1], B[0], 3), (A[1], A[0], 3), (A[1], A[0], 3)]
    for thumbnail, image in zip(thumbnails, restored):
        np.testing.assert_array_equal(image, client.decode(thumbnail))


@pytest.mark.server
def test_batches_are_split_at_max_batch_size(triton_server):
    with HyperThumbnailClient(triton_server.http_url, max_batch_size=2) as small:
        images = [photo_like(*B, seed=s) for s in range(3)]
        before = _encode_requests(small)
        thumbnails = small.encode_batch(images)
        assert _encode_requests_since(small, before, (2, 3)) == (2, 3)
        assert thumbnails == [small.encode(image) for image in images]


# ----------------------------------------------------------------------------- asyncio client


@pytest.mark.server
@pytest.mark.parametrize("use_shm", [False, True], ids=["socket", "shm"])
def test_async_client_matches_sync(triton_server, protocol, pipeline, use_shm):
    images = [photo_like(*A, seed=11), photo_like(*B, seed=12), photo_like(*A, seed=13)]

    async def go():
        async with AsyncHyperThumbnailClient(url_of(triton_server, protocol), protocol=protocol,
                                             use_shm=use_shm) as c:
            assert await c.is_ready()
            single = await c.encode(images[0])
            batch = await c.encode_batch(images)
            decoded = await c.decode(single)
            decoded_batch = await c.decode_batch(batch)
            concurrent = await asyncio.gather(*(c.encode(image) for image in images))
            with pytest.raises(InvalidInputError, match="jpeg_decode"):
                await c.decode(b"not a thumbnail")
            return single, batch, decoded, decoded_batch, concurrent

    single, batch, decoded, decoded_batch, concurrent = asyncio.run(go())
    expected = [pipeline.encode(image) for image in images]
    assert single == expected[0] and batch == expected and concurrent == expected
    np.testing.assert_array_equal(decoded, pipeline.decode(single))
    for thumbnail, image in zip(batch, decoded_batch):
        np.testing.assert_array_equal(image, pipeline.decode(thumbnail))


# ----------------------------------------------------------------------------- errors


@pytest.mark.server
@pytest.mark.parametrize("use_shm", [False, True], ids=["socket", "shm"])
def test_bad_bytes_are_invalid_input_with_the_servers_message(triton_server, protocol, use_shm):
    with HyperThumbnailClient(url_of(triton_server, protocol), protocol=protocol, use_shm=use_shm) as c:
        with pytest.raises(InvalidInputError) as excinfo:
            c.decode(b"definitely not a jpeg")
        assert "in ensemble 'hyperthumbnail_decode', jpeg_decode: not a JPEG" in str(excinfo.value)
        with pytest.raises(InvalidInputError, match=f"limit of {MAX_PIXELS} pixels"):
            c.encode(photo_like(640, 640))  # over the served repository's pixel limit
        with pytest.raises(InvalidInputError, match="HxWx3 uint8"):
            c.encode(np.zeros((8, 8), np.float32))  # refused before sending
        assert c.decode(c.encode(photo_like(*B))).shape == (B[1], B[0], 3)  # still serving


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_wrong_port_is_server_unavailable_quickly(protocol):
    url = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with HyperThumbnailClient(url, protocol=protocol) as c:
        assert not c.is_ready()
        with pytest.raises(ServerUnavailableError):
            c.encode(photo_like(*B))
        with pytest.raises(ServerUnavailableError, match="not ready after"):
            c.wait_until_ready(timeout=0.5)

    async def go():
        async with AsyncHyperThumbnailClient(url, protocol=protocol) as ac:
            assert not await ac.is_ready()
            await ac.decode(b"x")

    with pytest.raises(ServerUnavailableError):
        asyncio.run(go())
    assert time.monotonic() - started < 10


@pytest.mark.server
def test_timeout_is_server_unavailable(triton_server, protocol):
    with HyperThumbnailClient(url_of(triton_server, protocol), protocol=protocol, timeout_s=0.02) as c:
        with pytest.raises(ServerUnavailableError):
            c.encode(photo_like(440, 440))  # takes ~0.3 s on this CPU


# ----------------------------------------------------------------------------- CLI


@pytest.mark.server
def test_cli_file_through_the_server(tmp_path, triton_server, protocol, pipeline, capsys):
    image = photo_like(*A, seed=21)
    Image.fromarray(image).save(tmp_path / "photo.png")
    url = url_of(triton_server, protocol)
    assert main(["encode", str(tmp_path / "photo.png"), "-o", str(tmp_path / "t.jpg"),
                 "--url", url, "--protocol", protocol]) == 0
    assert (tmp_path / "t.jpg").read_bytes() == pipeline.encode(image)
    assert main(["decode", str(tmp_path / "t.jpg"), "-o", str(tmp_path / "r.png"),
                 "--url", url, "--protocol", protocol, "--shm"]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "r.png")),
                                  pipeline.decode((tmp_path / "t.jpg").read_bytes()))
    out = capsys.readouterr().out
    assert f"server {protocol}://{url}" in out and "bpp" in out


@pytest.mark.server
def test_cli_folder_through_the_server_and_in_process(tmp_path, triton_server, pipeline, capsys):
    sizes = [A, B, (64, 48), A]
    (tmp_path / "in").mkdir()
    for i, size in enumerate(sizes):
        Image.fromarray(photo_like(*size, seed=30 + i)).save(tmp_path / "in" / f"img{i}.png")
    (tmp_path / "in" / "notes.txt").write_text("not an image")

    assert main(["encode", str(tmp_path / "in"), "-o", str(tmp_path / "thumbs"), "--url", triton_server.grpc_url,
                 "--protocol", "grpc", "--concurrency", "3"]) == 0
    out = capsys.readouterr().out
    assert "4 files" in out and "mean bpp" in out
    for i in range(len(sizes)):
        served = (tmp_path / "thumbs" / f"img{i}.jpg").read_bytes()
        assert served == pipeline.encode(np.asarray(Image.open(tmp_path / "in" / f"img{i}.png")))

    assert main(["decode", str(tmp_path / "thumbs"), "-o", str(tmp_path / "remote"),
                 "--url", triton_server.http_url]) == 0
    assert main(["decode", str(tmp_path / "thumbs"), "-o", str(tmp_path / "local")]) == 0  # in-process
    for i, (width, height) in enumerate(sizes):
        remote = np.asarray(Image.open(tmp_path / "remote" / f"img{i}.png"))
        assert remote.shape == (height, width, 3)
        np.testing.assert_array_equal(remote, np.asarray(Image.open(tmp_path / "local" / f"img{i}.png")))
    # folder mode honours --level (PNG compression): the same pixels, smaller files than the fast default
    assert main(["decode", str(tmp_path / "thumbs"), "-o", str(tmp_path / "level9"), "--level", "9"]) == 0
    for i in range(len(sizes)):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "level9" / f"img{i}.png")),
                                      np.asarray(Image.open(tmp_path / "local" / f"img{i}.png")))
    assert (sum(p.stat().st_size for p in (tmp_path / "level9").glob("*.png"))
            < sum(p.stat().st_size for p in (tmp_path / "local").glob("*.png")))

    (tmp_path / "thumbs" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    assert main(["decode", str(tmp_path / "thumbs"), "-o", str(tmp_path / "again"),
                 "--url", triton_server.http_url]) == 1  # one file failed: reported, the others written
    out = capsys.readouterr().out
    assert "broken.jpg" in out and len(list((tmp_path / "again").glob("*.png"))) == len(sizes)


def test_cli_without_a_server_is_one_line(tmp_path, capsys):
    Image.fromarray(photo_like(*B)).save(tmp_path / "p.png")
    code = main(["encode", str(tmp_path / "p.png"), "-o", str(tmp_path / "t.jpg"), "--url", f"127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err
    assert code == 1 and "no ready HyperThumbnail server" in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- perf


@pytest.mark.server
@pytest.mark.parametrize("model,protocol,shm", [("hyperthumbnail_decode", "http", False),
                                                ("hyperthumbnail_encode", "grpc", True)])
def test_perf_sweep(tmp_path, triton_server, model, protocol, shm, capsys):
    photo = tmp_path / "photo.png"
    Image.fromarray(photo_like(256, 256, seed=40)).save(photo)
    out = tmp_path / "results.json"
    args = ["perf", "--engine", "builtin", "--url", url_of(triton_server, protocol), "--protocol", protocol, "--model", model,
            "--resolution", str(photo), "--concurrency", "1:2", "--measurement-interval-ms", "400",
            "--max-windows", "3", "--warmup", "1", "--output", str(out)] + (["--shm"] if shm else [])
    assert main(args) == 0
    report = json.loads(out.read_text())
    config = report["config"]
    assert config["model"] == model and config["protocol"] == protocol and config["shm"] is shm
    assert config["resolution"] == "256x256" and config["concurrency"] == [1, 2]
    assert config["machine"]["logical_cores"] >= 1 and config["server_version"]
    assert [r["concurrency"] for r in report["results"]] == [1, 2]
    for r in report["results"]:
        assert r["errors"] == 0 and r["first_error"] is None
        assert 1 <= r["windows"] <= 3 and isinstance(r["stable"], bool)
        assert r["throughput"] > 0 and 0 < r["p50_ms"] <= r["p90_ms"] <= r["p95_ms"] <= r["p99_ms"]
        assert r["mean_ms"] > 0
        server = r["server"]
        assert server["model"]["name"] == model and server["model"]["requests"] > 0
        steps = {"hyperthumbnail_encode": {"encoder", "qpm", "jpeg_encode"},
                 "hyperthumbnail_decode": {"jpeg_decode", "decoder"}}[model]
        assert set(server["composing"]) == steps
        for split in server["composing"].values():
            # snapshots fall while requests are in flight, so a step may count one more or less per worker
            assert abs(split["requests"] - server["model"]["requests"]) <= r["concurrency"]
            assert split["compute_infer_ms"] > 0 and split["queue_ms"] >= 0
        # the server's per-request time cannot exceed what the client saw
        assert server["model"]["request_ms"] <= r["p99_ms"] * 1.05
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert [row["concurrency"] for row in rows] == ["1", "2"]
    assert f"{model}.queue_ms" in rows[0] and ("decoder.compute_infer_ms" in rows[0] or "encoder.compute_infer_ms" in rows[0])
    assert "infer/s" in capsys.readouterr().out


@pytest.mark.server
def test_perf_times_one_request_to_size_its_windows(tmp_path, triton_server, capsys):
    """Without --measurement-interval-ms the window is fitted to the request time (two requests probed first)."""
    out = tmp_path / "results.json"
    assert main(["perf", "--engine", "builtin", "--url", triton_server.http_url, "--resolution", "256x192",
                 "--max-windows", "1", "--warmup", "0", "--output", str(out)]) == 0
    config = json.loads(out.read_text())["config"]
    assert 0 < config["probe_request_s"] < 1.0 and config["measurement_interval_ms"] == 5000.0
    assert "one request took" in capsys.readouterr().err


@pytest.mark.server
def test_perf_writes_perf_analyzer_input_data(tmp_path, triton_server, capsys):
    image = photo_like(200, 120, seed=41)
    Image.fromarray(image).save(tmp_path / "photo.png")
    base = ["perf", "--url", triton_server.http_url, "--resolution", str(tmp_path / "photo.png")]

    assert main(base + ["--model", "hyperthumbnail_encode", "--write-input-data", str(tmp_path / "enc.json")]) == 0
    entry = json.loads((tmp_path / "enc.json").read_text())["data"][0]["IMAGE"]
    assert entry["shape"] == [120, 200, 3]
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(entry["content"]["b64"]), np.uint8).reshape(120, 200, 3),
                                  image)

    assert main(base + ["--model", "hyperthumbnail_decode", "--write-input-data", str(tmp_path / "dec.json")]) == 0
    entry = json.loads((tmp_path / "dec.json").read_text())["data"][0]["THUMBNAIL"]
    assert entry["shape"] == [1]
    raw = base64.b64decode(entry["content"]["b64"])
    (length,) = struct.unpack("<I", raw[:4])  # perf_analyzer's BYTES element: 4-byte length, then the bytes
    assert length == len(raw) - 4 and read_thumbnail(raw[4:]).hr_size == (200, 120)
    assert "perf_analyzer -m hyperthumbnail_decode" in capsys.readouterr().out


# ----------------------------------------------------------------------------- perf inputs (no server)


def test_parse_concurrency():
    assert parse_concurrency("2") == [2]
    assert parse_concurrency("1:4") == [1, 2, 3, 4]
    assert parse_concurrency("1:8:3") == [1, 4, 7]
    for bad in ("0", "3:1", "1:2:0", "a:b", "1:2:3:4"):
        with pytest.raises(ValueError):
            parse_concurrency(bad)


def test_resolutions_and_inputs(tmp_path):
    assert parse_resolution("6k") == RESOLUTIONS["6k"] == (6144, 4096)
    assert parse_resolution("4K") == (3840, 2160) and parse_resolution("1080p") == (1920, 1080)
    assert parse_resolution("320x200") == (320, 200)
    with pytest.raises(ValueError):
        parse_resolution("no-such-file.png")
    fallback = make_input("96x64", photos=tmp_path)  # no photos there
    assert fallback.image.shape == (64, 96, 3) and "procedural" in fallback.source
    Image.fromarray(photo_like(300, 200)).save(tmp_path / "a.jpg")
    cut = make_input("120x120", photos=tmp_path)
    assert cut.image.shape == (120, 120, 3) and "a.jpg" in cut.source


def test_unregister_retries_while_the_server_still_holds_the_region():
    """Triton refuses to unregister a region a finishing request still holds ('currently in use');
    the client retries that refusal, and gives up at once when the server is gone. The refusals
    here come from a stand-in for a tritonclient client: the real race is too short to provoke on demand."""
    from tritonclient.utils import InferenceServerException

    class Triton:
        def __init__(self, refusals: int, message: str):
            self.refusals, self.message, self.calls = refusals, message, 0

        def unregister_system_shared_memory(self, name, **kwargs):
            self.calls += 1
            if self.calls <= self.refusals:
                raise InferenceServerException(self.message)

    client = HyperThumbnailClient("127.0.0.1:1")
    busy = Triton(2, "Cannot unregister shared memory region 'r', it is currently in use.")
    client._unregister(busy, "r", {})
    assert busy.calls == 3
    gone = Triton(5, "failed to connect to all addresses")
    client._unregister(gone, "r", {})
    assert gone.calls == 1
