"""Robustness: bad inputs, overload and faults get clear errors, nothing is lost, the server keeps
serving. Every bad input goes through each path a user has: the in-process Pipeline, the CLI
(`hyperthumbnail.cli.main`, in-process) and the real tritonserver (session fixture in conftest.py,
raw tritonclient over HTTP and gRPC). docs/robustness.md tabulates what each one answers.

A model that fails to load making `serve` exit non-zero is covered by
tests/test_server.py::test_serve_cli_reports_model_load_failure (not repeated here).
"""
from __future__ import annotations

import io
import ipaddress
import os
import signal
import struct
import threading
import time
import tracemalloc
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import MAX_PIXELS, photo_like, served_weights
from PIL import Image

from hyperthumbnail.cli import build_parser, main
from hyperthumbnail.codec.images import load_image
from hyperthumbnail.codec.steps import StepError
from hyperthumbnail.codec.thumbnail import read_thumbnail
from hyperthumbnail.pipeline import Pipeline

pytestmark = pytest.mark.timeout(600)

# ----------------------------------------------------------------------------- inputs


def jpeg_bytes(image: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **save)
    return buffer.getvalue()


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def camera_jpegs() -> dict[str, bytes]:
    """Ordinary JPEGs as cameras and editors write them (none is a HyperThumbnail)."""
    photo = Image.fromarray(photo_like(64, 48))
    exif = Image.Exif()
    exif[0x010F] = "Robust Camera Co."  # Make
    exif[0x0112] = 6  # Orientation
    return {
        "jpeg-420": jpeg_bytes(photo, quality=90),  # Pillow's default subsampling is 4:2:0
        "jpeg-444-exif": jpeg_bytes(photo, quality=90, subsampling=0, exif=exif.tobytes()),
        "jpeg-progressive": jpeg_bytes(photo, quality=90, progressive=True),
        "jpeg-grayscale": jpeg_bytes(photo.convert("L")),
        "jpeg-cmyk": jpeg_bytes(photo.convert("CMYK")),
    }


def segment(data: bytes, code: int) -> tuple[int, int]:
    """(start, end) of the first header segment with marker FF<code>."""
    pos = 2
    while data[pos + 1] != code:
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return pos, pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")


def resign(data: bytearray) -> bytes:
    """Recompute the marker's CRC-32 (see codec/thumbnail.py) so that only the edited fields are wrong."""
    start, end = segment(bytes(data), 0xEF)
    payload = data[start + 4:end]
    data[end - 4:end] = zlib.crc32(bytes(data[end:]), zlib.crc32(bytes(payload[:21]))).to_bytes(4, "big")
    return bytes(data)


def scan_byte(data: bytes) -> int:
    """Offset of an entropy-coded byte that can be changed by one bit without forming a marker."""
    _, start = segment(data, 0xDA)
    return next(i for i in range(start + 4, len(data) - 2) if data[i] < 0xF0 and data[i - 1] != 0xFF)


def bad_thumbnails(good: bytes) -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, what the error must say). `good` is a valid 96x64 HyperThumbnail."""
    marker, _ = segment(good, 0xEF)
    sof, _ = segment(good, 0xC0)
    _, scan = segment(good, 0xDA)
    flip = scan_byte(good)

    def edit(offset: int, value: bytes, sign: bool = False) -> bytes:
        data = bytearray(good)
        data[offset:offset + len(value)] = value
        return resign(data) if sign else bytes(data)

    huge = bytearray(edit(marker + 4 + 13, struct.pack(">II", 60000, 60000)))
    huge[sof + 5:sof + 9] = struct.pack(">HH", 15000, 15000)
    cases = {
        "empty": (b"", "empty"),
        "random-bytes": (np.random.default_rng(0).bytes(3000), "not a JPEG file"),
        "png": (png_bytes(photo_like(16, 16)), "not a JPEG file"),
        "truncated-header": (good[:40], "truncated"),
        "truncated-scan": (good[:(scan + len(good)) // 2], "truncated"),
        "flipped-scan-bit": (edit(flip, bytes([good[flip] ^ 0x01])), "checksum mismatch"),
        "marker-hr-size-tampered": (edit(marker + 4 + 13, struct.pack(">I", 95)), "checksum mismatch"),
        "marker-version": (edit(marker + 4 + 11, b"\x07"), "unsupported HyperThumbnail format version 7"),
        "marker-scale": (edit(marker + 4 + 12, b"\x03"), "scale 3"),
        "marker-tag": (edit(marker + 4, b"X"), "ordinary JPEG"),
        "jpeg-size-60000": (edit(sof + 5, struct.pack(">HH", 60000, 60000), sign=True),
                            "JPEG size 60000x60000 does not match the marker"),
        "declared-60000x60000": (resign(huge), "exceeds the limit"),
    }
    cases.update({name: (data, "ordinary JPEG") for name, data in camera_jpegs().items()})
    return cases


def odd_inputs() -> dict[str, Image.Image]:
    """Files that are not 8-bit RGB: the CLI/client turn them into RGB with load_image."""
    rgb = photo_like(40, 30)
    rgba = np.dstack([rgb, np.linspace(0, 255, 40 * 30).reshape(30, 40).astype(np.uint8)])
    sixteen = (photo_like(40, 30)[:, :, 0].astype(np.uint16) * 257).astype(np.uint16)
    return {
        "rgba": Image.fromarray(rgba),
        "grayscale": Image.fromarray(rgb).convert("L"),
        "16-bit": Image.fromarray(sixteen),
        "palette": Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=32),
    }


TINY_SIZES = [(1, 1), (7, 5), (31, 33)]

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    """In-process ONNX pipeline on the shipped weights (what the session's server serves)."""
    if served_weights() is not None:
        pytest.skip("no shipped weights: the served model is a random one the Pipeline cannot load")
    return Pipeline()  # the default runtime and precision, as the served repository


@pytest.fixture(scope="module")
def good_thumbnail(pipeline) -> bytes:
    return pipeline.encode(photo_like(96, 64, seed=7))


@pytest.fixture(scope="module")
def bad(good_thumbnail) -> dict[str, tuple[bytes, str]]:
    return bad_thumbnails(good_thumbnail)


BAD_NAMES = ["empty", "random-bytes", "png", "truncated-header", "truncated-scan", "flipped-scan-bit",
             "marker-hr-size-tampered", "marker-version", "marker-scale", "marker-tag", "jpeg-size-60000",
             "declared-60000x60000", "jpeg-420", "jpeg-444-exif", "jpeg-progressive", "jpeg-grayscale",
             "jpeg-cmyk"]


def test_bad_names_cover_every_case(bad):
    assert sorted(bad) == sorted(BAD_NAMES)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, command: str, *needles: str) -> None:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"hyperthumbnail {command}: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# ----------------------------------------------------------------------------- decode: in-process and CLI


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_thumbnail_in_process_is_a_clear_fast_error(pipeline, bad, name):
    data, reason = bad[name]
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(StepError, match=reason):
            pipeline.decode(data)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5
    assert peak < 16 * 2**20  # no image-sized allocation for a file that is refused


def test_size_lie_is_caught_before_allocation_even_with_no_pixel_limit(pipeline, good_thumbnail):
    """Marker and frame both claim 60000x60000 (consistently, re-signed); the scan is far too short."""
    data, _ = bad_thumbnails(good_thumbnail)["declared-60000x60000"]
    tracemalloc.start()
    try:
        with pytest.raises(StepError, match="cannot hold"):
            pipeline.decode(data, max_pixels=10**10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_thumbnail_cli_names_file_and_problem(capsys, tmp_path, bad, name):
    data, reason = bad[name]
    path = tmp_path / f"{name}.jpg"
    path.write_bytes(data)
    code, _, err = run_cli(capsys, "decode", str(path), "-o", str(tmp_path / "out.png"))
    assert_one_line_error(code, err, "decode", f"{path}: ", reason)
    assert not (tmp_path / "out.png").exists()


def test_ordinary_jpeg_message_says_what_to_do(capsys, tmp_path):
    path = tmp_path / "IMG_0001.JPG"
    path.write_bytes(camera_jpegs()["jpeg-444-exif"])
    code, _, err = run_cli(capsys, "decode", str(path), "-o", str(tmp_path / "out.png"))
    assert_one_line_error(code, err, "decode", "IMG_0001.JPG", "ordinary JPEG", "hyperthumbnail encode")
    # ... and doing what it says works
    code, _, err = run_cli(capsys, "encode", str(path), "-o", str(tmp_path / "thumb.jpg"))
    assert code == 0, err
    assert read_thumbnail((tmp_path / "thumb.jpg").read_bytes()).hr_size == (48, 64)  # EXIF rotation applied


def test_debug_shows_the_traceback(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(png_bytes(photo_like(16, 16)))
    with pytest.raises(Exception, match="not a JPEG file"):
        main(["--debug", "decode", str(path), "-o", str(tmp_path / "out.png")])


# ----------------------------------------------------------------------------- encode: in-process and CLI


@pytest.mark.parametrize("width,height", TINY_SIZES)
def test_tiny_images_round_trip_in_process(pipeline, width, height):
    data = pipeline.encode(photo_like(width, height, seed=width))
    assert read_thumbnail(data).hr_size == (width, height)
    assert pipeline.decode(data).shape == (height, width, 3)


@pytest.mark.parametrize("kind", ["rgba", "grayscale", "16-bit", "palette"])
def test_cli_encodes_non_rgb_files(capsys, tmp_path, pipeline, kind):
    image = odd_inputs()[kind]
    path = tmp_path / f"{kind}.png"
    image.save(path)
    code, _, err = run_cli(capsys, "encode", str(path), "-o", str(tmp_path / "t.jpg"))
    assert code == 0, err
    data = (tmp_path / "t.jpg").read_bytes()
    assert data == pipeline.encode(load_image(path))
    code, _, err = run_cli(capsys, "decode", str(tmp_path / "t.jpg"), "-o", str(tmp_path / "back.png"))
    assert code == 0, err
    assert Image.open(tmp_path / "back.png").size == image.size


@pytest.mark.parametrize("image,reason", [
    (np.zeros((5, 5, 4), np.uint8), "HxWx3"),
    (np.zeros((5, 5), np.uint8), "HxWx3"),
    (np.zeros((5, 5, 3), np.float32), "uint8"),
    (np.zeros((5, 5, 3), np.uint16), "uint8"),
    (np.zeros((0, 5, 3), np.uint8), "no pixels"),
], ids=["rgba-array", "2d-array", "float32", "uint16", "empty"])
def test_pipeline_refuses_arrays_that_are_not_rgb8(pipeline, image, reason):
    with pytest.raises(StepError, match=reason):
        pipeline.encode(image)


def test_pixel_limit_in_process_and_cli(capsys, tmp_path, pipeline):
    image = photo_like(100, 60)
    with pytest.raises(StepError, match="more than the limit of 5999 pixels"):
        pipeline.encode(image, max_pixels=5999)
    path = tmp_path / "photo.png"
    Image.fromarray(image).save(path)
    code, _, err = run_cli(capsys, "encode", str(path), "-o", str(tmp_path / "t.jpg"), "--max-pixels", "5999")
    assert_one_line_error(code, err, "encode", str(path), "100x60 = 6000 pixels, more than the limit of 5999")
    assert run_cli(capsys, "encode", str(path), "-o", str(tmp_path / "t.jpg"), "--max-pixels", "6000")[0] == 0
    code, _, err = run_cli(capsys, "decode", str(tmp_path / "t.jpg"), "-o", str(tmp_path / "o.png"),
                           "--max-pixels", "5999")
    assert_one_line_error(code, err, "decode", "t.jpg", "exceeds the limit of 5999 pixels")


def test_default_pixel_limit_is_checked_before_decoding_pixels(capsys, tmp_path):
    """A 9000x6000 PNG (54 MP) is refused from its header: fast, whatever the pixel data holds."""
    path = tmp_path / "big.png"
    Image.new("L", (9000, 6000)).save(path, optimize=False)  # all-zero rows compress to almost nothing
    started = time.perf_counter()
    code, _, err = run_cli(capsys, "encode", str(path), "-o", str(tmp_path / "t.jpg"))
    assert_one_line_error(code, err, "encode", str(path), "more than the limit of 50331648 pixels")
    assert time.perf_counter() - started < 5


def test_thumbnail_side_limit_is_refused_before_the_encoder_runs(pipeline):
    """262200x1 is under the pixel limit but its thumbnail would be wider than JPEG allows."""
    started = time.perf_counter()
    with pytest.raises(StepError, match="65535-pixel side limit"):
        pipeline.encode(np.zeros((1, 262200, 3), np.uint8))
    assert time.perf_counter() - started < 1  # the encoder would take ~10 s on this


def test_model_calls_are_cut_to_a_memory_budget():
    """A batch of large images runs one image per onnxruntime call; small ones still batch."""
    from hyperthumbnail.codec.steps import DEFAULT_CALL_MAX_BYTES, batch_slices

    six_k = 3 * 4096 * 6144 * 4  # the encoder's float input for one 6K photo
    assert batch_slices(8, six_k) == [slice(i, i + 1) for i in range(8)]
    small = 3 * 128 * 128 * 4
    assert batch_slices(8, small) == [slice(0, 8)]
    assert batch_slices(7, DEFAULT_CALL_MAX_BYTES // 3) == [slice(0, 3), slice(3, 6), slice(6, 7)]
    assert batch_slices(1, 0) == [slice(0, 1)]


# ----------------------------------------------------------------------------- CLI failure modes


def test_cli_failure_modes_are_one_line(capsys, tmp_path, good_thumbnail):
    photo = tmp_path / "photo.png"
    Image.fromarray(photo_like(32, 24)).save(photo)
    thumb = tmp_path / "thumb.jpg"
    thumb.write_bytes(good_thumbnail)
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["encode", str(tmp_path / "missing.png"), "-o", str(tmp_path / "a.jpg")], "missing.png", "No such file"),
        (["decode", str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "a.png")], "missing.jpg", "No such file"),
        (["encode", str(tmp_path), "-o", str(text)], "notes.txt", "-o must be a folder too"),  # folder mode
        (["decode", str(empty), "-o", str(tmp_path / "out")], str(empty), "no thumbnails"),
        (["encode", str(text), "-o", str(tmp_path / "a.jpg")], "notes.txt", "cannot identify image file"),
        (["encode", str(photo), "-o", str(tmp_path / "no" / "dir" / "a.jpg")], "a.jpg", "No such file"),
        (["encode", str(photo), "-o", str(empty)], str(empty), "Is a directory"),
        (["decode", str(thumb), "-o", str(tmp_path / "no" / "dir" / "a.png")], "a.png", "No such file"),
        (["decode", str(thumb), "-o", str(tmp_path / "a.unknown")], "a.unknown", "unknown file extension"),
        (["encode", str(photo), "-o", str(tmp_path / "a.jpg"), "--weights", str(tmp_path / "w.safetensors")],
         "w.safetensors", "weights not found"),
        (["train", "--data", str(tmp_path / "nothing"), "--run-dir", str(tmp_path / "run"), "--val-data", ""],
         "nothing", "No such file"),
        (["export", "--out", str(tmp_path / "x"), "--weights", str(tmp_path / "w.pt")], "w.pt", "not found"),
    ]
    for argv, *needles in cases:
        code, _, err = run_cli(capsys, *argv)
        assert_one_line_error(code, err, argv[0], *needles)


def test_free_ports_are_never_handed_out_twice():
    """A server asks for three ports before it binds any: two of them once came back equal in CI."""
    from hyperthumbnail.serving.server_process import free_port

    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_cli_with_the_server_down_is_one_line(capsys, tmp_path, protocol):
    from hyperthumbnail.serving.server_process import free_port

    photo = tmp_path / "photo.png"
    Image.fromarray(photo_like(32, 24)).save(photo)
    url = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    code, _, err = run_cli(capsys, "encode", str(photo), "-o", str(tmp_path / "a.jpg"), "--url", url,
                           "--protocol", protocol, "--timeout", "2")
    assert_one_line_error(code, err, "encode", url, "server")
    assert time.monotonic() - started < 10
    assert not (tmp_path / "a.jpg").exists()


def test_serve_on_a_busy_port_is_one_line(capsys, tmp_path):
    """`serve` refuses a port in use before starting anything (a folder it did not build is served as is)."""
    import socket

    repo = tmp_path / "repo"
    repo.mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = run_cli(capsys, "serve", "--model-repository", str(repo), "--quiet", "--http-port", str(port))
    assert_one_line_error(code, err, "serve", f"HTTP port {port}", "not available")


# ----------------------------------------------------------------------------- security (no server needed)


class _Payload:
    """Unpickling this runs a command: what a hostile checkpoint would carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path, capsys):
    import torch

    from hyperthumbnail.weights import load_checkpoint

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model_config": {}, "model": {}, "step": 1, "payload": _Payload(marker)}, path)
    with pytest.raises(ValueError, match="refused to load.*GLOBAL posix.system"):
        load_checkpoint(path)
    photo = tmp_path / "p.png"
    Image.fromarray(photo_like(8, 8)).save(photo)
    for runtime in ("torch", "onnx"):  # both load .pt weights through load_checkpoint
        code, _, err = run_cli(capsys, "encode", str(photo), "-o", str(tmp_path / "a.jpg"),
                               "--weights", str(path), "--runtime", runtime)
        assert_one_line_error(code, err, "encode", "evil.pt: refused to load")
    assert not marker.exists()


def test_plain_checkpoint_still_loads(tmp_path):
    import torch

    from hyperthumbnail.weights import load_checkpoint

    torch.save({"step": 3, "model": {"w": torch.ones(2)}, "name": "x", "sizes": (1, 2)}, tmp_path / "ok.pt")
    state = load_checkpoint(tmp_path / "ok.pt")
    assert state["step"] == 3 and state["model"]["w"].sum() == 2


@pytest.mark.parametrize("content", [b"\x00" * 64, b"\xff" * 8 + b"{}"], ids=["zeros", "huge-header"])
def test_corrupt_safetensors_weights_are_a_clear_error(tmp_path, content):
    from hyperthumbnail.weights import load_model

    path = tmp_path / "w.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="w.safetensors: not a HyperThumbnail weights file"):
        load_model(path)


def test_serve_binds_loopback_by_default():
    """`serve` and TritonServer default to 127.0.0.1 (the socket-level check is below)."""
    import inspect

    from hyperthumbnail.serving.server_process import TritonServer

    assert build_parser().parse_args(["serve"]).host == "127.0.0.1"
    assert inspect.signature(TritonServer).parameters["host"].default == "127.0.0.1"


# ============================================================================= real server

tritonclient_http = pytest.importorskip("tritonclient.http")
tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

PROTOCOLS = {"http": tritonclient_http, "grpc": tritonclient_grpc}


def server_pid(server) -> int:
    """PID of the process listening on the server's HTTP port (the tritonserver itself)."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == server.http_port and conn.pid:
            return conn.pid
    raise AssertionError(f"nothing listens on port {server.http_port}")


def tree_rss(pid: int) -> int:
    """RSS of the tritonserver and its Python-backend stubs."""
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


class Raw:
    """One raw tritonclient client (one per thread, as tritonclient wants)."""

    def __init__(self, server, protocol: str):
        self.module = PROTOCOLS[protocol]
        self.protocol = protocol
        self.client = self.module.InferenceServerClient(server.http_url if protocol == "http" else server.grpc_url)

    def infer(self, model: str, name: str, array: np.ndarray, datatype: str, output: str) -> np.ndarray:
        inp = self.module.InferInput(name, list(array.shape), datatype)
        inp.set_data_from_numpy(array)
        return self.client.infer(model, [inp]).as_numpy(output)

    def encode(self, image: np.ndarray) -> bytes:
        out = self.infer("hyperthumbnail_encode", "IMAGE", image[None], "UINT8", "THUMBNAIL")[0, 0]
        return out if isinstance(out, bytes) else bytes(out)

    def decode(self, data: bytes) -> np.ndarray:
        return self.infer("hyperthumbnail_decode", "THUMBNAIL", np.array([[data]], dtype=np.object_), "BYTES",
                          "IMAGE")[0]

    def close(self) -> None:
        self.client.close()


@pytest.fixture(params=list(PROTOCOLS))
def raw(request, triton_server):
    client = Raw(triton_server, request.param)
    yield client
    client.close()


def is_invalid_argument(exc: InferenceServerException, protocol: str) -> bool:
    return str(exc.status()) == ("400" if protocol == "http" else "StatusCode.INVALID_ARGUMENT")


@pytest.mark.server
def test_bad_thumbnails_through_the_server(triton_server, raw, bad, good_thumbnail, pipeline):
    pid = server_pid(triton_server)
    for name in BAD_NAMES:
        data, reason = bad[name]
        with pytest.raises(InferenceServerException) as excinfo:
            raw.decode(data)
        assert is_invalid_argument(excinfo.value, raw.protocol), (name, excinfo.value)
        assert reason in excinfo.value.message() and "jpeg_decode" in excinfo.value.message(), name
    np.testing.assert_array_equal(raw.decode(good_thumbnail), pipeline.decode(good_thumbnail))
    assert server_pid(triton_server) == pid


WRONG_TENSORS = [
    ("fp32-image", "IMAGE", lambda: np.zeros((1, 8, 8, 3), np.float32), "FP32", "expects 'UINT8'"),
    ("rgba-shape", "IMAGE", lambda: np.zeros((1, 8, 8, 4), np.uint8), "UINT8", "unexpected shape"),
    ("2d-shape", "IMAGE", lambda: np.zeros((1, 8, 8), np.uint8), "UINT8", "unexpected shape"),
    ("no-batch-dim", "IMAGE", lambda: np.zeros((8, 8, 3), np.uint8), "UINT8", "unexpected shape"),
    ("batch-of-9", "IMAGE", lambda: np.zeros((9, 8, 8, 3), np.uint8), "UINT8", "batch-size must be <= 8"),
    ("zero-height", "IMAGE", lambda: np.zeros((1, 0, 8, 3), np.uint8), "UINT8", "no pixels"),
    ("over-pixel-limit", "IMAGE", lambda: photo_like(640, 640)[None], "UINT8", f"limit of {MAX_PIXELS} pixels"),
    ("wrong-input-name", "THUMBNAIL", lambda: np.array([[b"x"]], dtype=np.object_), "BYTES",
     "unexpected inference input 'THUMBNAIL'"),
]


@pytest.mark.server
def test_wrong_tensors_for_encode_are_request_errors(triton_server, raw):
    pid = server_pid(triton_server)
    for case, name, make, datatype, reason in WRONG_TENSORS:
        with pytest.raises(InferenceServerException) as excinfo:
            raw.infer("hyperthumbnail_encode", name, make(), datatype, "THUMBNAIL")
        assert is_invalid_argument(excinfo.value, raw.protocol), (case, excinfo.value)
        assert reason in excinfo.value.message(), (case, excinfo.value.message())
    with pytest.raises(InferenceServerException, match="expects 'BYTES'"):
        raw.infer("hyperthumbnail_decode", "THUMBNAIL", np.zeros((1, 1), np.uint8), "UINT8", "IMAGE")
    assert raw.decode(raw.encode(photo_like(16, 16))).shape == (16, 16, 3)
    assert server_pid(triton_server) == pid


@pytest.mark.server
@pytest.mark.parametrize("width,height", TINY_SIZES)
def test_tiny_images_through_the_server(triton_server, raw, pipeline, width, height):
    image = photo_like(width, height, seed=width)
    served = raw.encode(image)
    assert served == pipeline.encode(image)
    np.testing.assert_array_equal(raw.decode(served), pipeline.decode(served))


@pytest.mark.server
def test_batch_cut_into_several_model_calls_is_exact(triton_server, pipeline):
    """Three 512x384 images in one request: the encoder runs them as three calls (memory budget);
    the thumbnails come back in order and equal the in-process ones."""
    images = np.stack([photo_like(512, 384, seed=s) for s in range(3)])
    client = Raw(triton_server, "http")
    try:
        served = client.infer("hyperthumbnail_encode", "IMAGE", images, "UINT8", "THUMBNAIL")
    finally:
        client.close()
    assert [bytes(t) for t in served[:, 0]] == [pipeline.encode(image) for image in images]


@pytest.mark.server
def test_converted_inputs_through_the_server_match_the_cli(capsys, tmp_path, triton_server, pipeline):
    """The server takes RGB uint8 only; load_image makes it from RGBA/grey/16-bit/palette files."""
    client = Raw(triton_server, "http")
    try:
        for kind, image in odd_inputs().items():
            path = tmp_path / f"{kind}.png"
            image.save(path)
            assert run_cli(capsys, "encode", str(path), "-o", str(tmp_path / "t.jpg"))[0] == 0
            assert client.encode(load_image(path)) == (tmp_path / "t.jpg").read_bytes(), kind
    finally:
        client.close()


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_cli_through_the_server_reports_the_servers_reason(capsys, tmp_path, triton_server, protocol):
    url = triton_server.http_url if protocol == "http" else triton_server.grpc_url
    camera = tmp_path / "IMG_0002.JPG"
    camera.write_bytes(camera_jpegs()["jpeg-420"])
    code, _, err = run_cli(capsys, "decode", str(camera), "-o", str(tmp_path / "o.png"), "--url", url,
                           "--protocol", protocol)
    assert_one_line_error(code, err, "decode", "IMG_0002.JPG", "jpeg_decode", "ordinary JPEG")
    big = tmp_path / "big.png"
    Image.fromarray(photo_like(640, 640)).save(big)  # under the CLI's 50.3 MP, over the served MAX_PIXELS
    code, _, err = run_cli(capsys, "encode", str(big), "-o", str(tmp_path / "b.jpg"), "--url", url,
                           "--protocol", protocol)
    assert_one_line_error(code, err, "encode", "big.png", "encoder", f"limit of {MAX_PIXELS} pixels")


@pytest.mark.server
def test_server_listens_on_loopback_only(triton_server):
    listening = []
    root = psutil.Process(server_pid(triton_server))
    for proc in [root, *root.children(recursive=True)]:
        listening += [c.laddr for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert {a.port for a in listening} == {triton_server.http_port, triton_server.grpc_port,
                                           triton_server.metrics_port}
    for address in listening:
        ip = ipaddress.ip_address(address.ip)
        ip = getattr(ip, "ipv4_mapped", None) or ip  # gRPC listens on ::ffff:127.0.0.1
        assert ip == ipaddress.ip_address("127.0.0.1"), address


# ----------------------------------------------------------------------------- load


LOAD_REQUESTS = 500
LOAD_CONCURRENCY = 8
LOAD_SIZES = [(64, 64), (96, 64), (130, 77), (160, 120), (80, 48), (112, 96)]
RSS_GROWTH_LIMIT = 64 * 2**20  # after warm-up; measured 1-20 MiB (docs/robustness.md)


@pytest.mark.server
def test_mixed_load_keeps_serving(triton_server, pipeline, bad):
    """500 requests, 8 in flight, HTTP and gRPC, ~55% valid: every answer right, no restart, RSS bounded."""
    images = [photo_like(w, h, seed=i) for i, (w, h) in enumerate(LOAD_SIZES)]
    thumbs = [pipeline.encode(image) for image in images]
    decoded = [pipeline.decode(data) for data in thumbs]
    invalid_decode = ["random-bytes", "truncated-scan", "flipped-scan-bit", "jpeg-420", "empty"]
    invalid_encode = [case for case in WRONG_TENSORS if case[0] in ("fp32-image", "rgba-shape", "over-pixel-limit")]

    rng = np.random.default_rng(1)
    plan = []
    for index in range(LOAD_REQUESTS):
        protocol = "http" if index % 2 else "grpc"
        roll = rng.random()
        kind = "encode" if roll < 0.3 else "decode" if roll < 0.55 else "bad-decode" if roll < 0.8 else "bad-encode"
        pick = int(rng.integers(len(LOAD_SIZES)))
        plan.append((protocol, kind, pick, int(rng.integers(1 << 30))))

    local = threading.local()

    def client_for(protocol: str) -> Raw:
        clients = local.__dict__.setdefault("clients", {})
        if protocol not in clients:
            clients[protocol] = Raw(triton_server, protocol)
            all_clients.append(clients[protocol])
        return clients[protocol]

    all_clients: list[Raw] = []

    def one(item) -> str | None:
        """None when the answer is right, else what was wrong."""
        protocol, kind, pick, seed = item
        client = client_for(protocol)
        try:
            if kind == "encode":
                return None if client.encode(images[pick]) == thumbs[pick] else f"encode {pick}: bytes differ"
            if kind == "decode":
                same = np.array_equal(client.decode(thumbs[pick]), decoded[pick])
                return None if same else f"decode {pick}: pixels differ"
            if kind == "bad-decode":
                data, reason = bad[invalid_decode[seed % len(invalid_decode)]]
                client.decode(data)
            else:
                case, name, make, datatype, reason = invalid_encode[seed % len(invalid_encode)]
                client.infer("hyperthumbnail_encode", name, make(), datatype, "THUMBNAIL")
            return f"{kind}: accepted an invalid input"
        except InferenceServerException as exc:
            if kind in ("encode", "decode"):
                return f"{kind} {pick}: {exc}"
            ok = is_invalid_argument(exc, protocol) and reason in exc.message()
            return None if ok else f"{kind}: unclear error {exc.status()} {exc.message()}"

    pid = server_pid(triton_server)
    stubs = {p.pid for p in psutil.Process(pid).children(recursive=True)}  # Python-backend model processes
    with ThreadPoolExecutor(LOAD_CONCURRENCY) as pool:  # warm-up: every kind once, so arenas/shm settle
        assert [r for r in pool.map(one, plan[:40]) if r] == []
    rss_before = tree_rss(pid)
    started = time.monotonic()
    with ThreadPoolExecutor(LOAD_CONCURRENCY) as pool:
        problems = [r for r in pool.map(one, plan) if r]
    elapsed = time.monotonic() - started
    rss_after = tree_rss(pid)
    for client in all_clients:
        client.close()
    counts = {kind: sum(1 for item in plan if item[1] == kind) for kind in ("encode", "decode", "bad-decode", "bad-encode")}
    print(f"\nload: {LOAD_REQUESTS} requests {counts} in {elapsed:.1f} s ({LOAD_REQUESTS / elapsed:.1f}/s), "
          f"server tree RSS {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB")
    assert problems == []
    assert server_pid(triton_server) == pid
    assert {p.pid for p in psutil.Process(pid).children(recursive=True)} == stubs  # no stub restarted
    assert tritonclient_http.InferenceServerClient(triton_server.http_url).is_server_ready()
    assert rss_after - rss_before < RSS_GROWTH_LIMIT


# ----------------------------------------------------------------------------- faults


def sdk_client(server, protocol: str):
    from hyperthumbnail.client import HyperThumbnailClient

    return HyperThumbnailClient(server.http_url if protocol == "http" else server.grpc_url, protocol=protocol,
                                timeout_s=60)


def with_retry(call, deadline_s: float = 120.0, base_s: float = 0.25, cap_s: float = 4.0):
    """The retry policy of docs/robustness.md: retry ServerUnavailableError only, with capped
    exponential backoff and jitter, until a deadline (encode/decode are idempotent)."""
    import itertools
    import random

    from hyperthumbnail.client import ServerUnavailableError

    deadline = time.monotonic() + deadline_s
    for attempt in itertools.count():
        try:
            return call()
        except ServerUnavailableError:
            delay = min(cap_s, base_s * 2**attempt) * random.uniform(0.5, 1.0)
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)


@pytest.mark.server
def test_server_killed_mid_run_gives_connection_errors_then_retry_succeeds(served_repository, pipeline):
    """SIGKILL the whole server while requests are in flight: every client call ends with the SDK's
    ServerUnavailableError (none hangs, none returns garbage), later calls fail the same way, the
    Python-backend shared-memory regions (RAM in /dev/shm) do not outlive the server, and the same
    request retried with backoff (clients made while the server is down) succeeds once a server is
    back on the same ports, with the same bytes."""
    from hyperthumbnail.client import ServerUnavailableError
    from hyperthumbnail.serving.server_process import TritonServer, free_port

    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    server = TritonServer(served_repository, **ports)
    server.start(timeout=240)
    outcomes: dict[str, list] = {"http": [], "grpc": []}
    stop = threading.Event()
    image = photo_like(512, 384)  # long enough (~0.5 s) that the kill lands mid-request

    def hammer(protocol: str) -> None:
        client = sdk_client(server, protocol)
        try:
            while not stop.is_set():
                try:
                    outcomes[protocol].append(read_thumbnail(client.encode(image)).hr_size)
                except ServerUnavailableError as exc:
                    outcomes[protocol].append(exc)
                    if sum(isinstance(o, BaseException) for o in outcomes[protocol]) >= 2:
                        return
                except BaseException as exc:  # noqa: BLE001 - recorded and asserted on below
                    outcomes[protocol].append(("unexpected", exc))
                    return
        finally:
            client.close()

    threads = [threading.Thread(target=hammer, args=(p,)) for p in outcomes]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while not all(outcomes.values()) and time.monotonic() < deadline:  # at least one answer each
            time.sleep(0.05)
        time.sleep(0.2)
        pid = server_pid(server)
        stubs = psutil.Process(pid).children(recursive=True)
        regions = [Path("/dev/shm") / stub.cmdline()[2] for stub in stubs]  # stub argv: model.py, region, ...
        assert regions and all(region.exists() for region in regions)
        os.killpg(pid, signal.SIGKILL)
        for t in threads:
            t.join(90)
        assert not any(t.is_alive() for t in threads), "a client hung after the server died"
    finally:
        stop.set()
        server.stop()
    assert not [region for region in regions if region.exists()], "shared memory left behind"
    for protocol, results in outcomes.items():
        assert results and results[0] == (512, 384), (protocol, results[:3])
        failures = [r for r in results if not isinstance(r, tuple) or r[0] == "unexpected"]
        assert failures and all(isinstance(f, ServerUnavailableError) for f in failures), (protocol, failures)
        assert all(r == (512, 384) for r in results if isinstance(r, tuple)), protocol
        print(f"{protocol}: {len(results) - len(failures)} served, then {[str(f)[:120] for f in failures]}")

    clients = {protocol: sdk_client(server, protocol) for protocol in outcomes}  # server still down
    retried: dict[str, object] = {}

    def retry(protocol: str) -> None:
        try:
            retried[protocol] = with_retry(lambda: clients[protocol].encode(image))
        except BaseException as exc:  # noqa: BLE001 - asserted on below
            retried[protocol] = exc

    threads = [threading.Thread(target=retry, args=(p,)) for p in clients]
    for t in threads:
        t.start()
    time.sleep(1.0)  # the first attempts fail: nothing listens
    down_since = time.monotonic()
    replacement = TritonServer(served_repository, **ports)
    try:
        replacement.start(timeout=240)
        ready_after = time.monotonic() - down_since
        for t in threads:
            t.join(150)
        served_after = time.monotonic() - down_since
    finally:
        for client in clients.values():
            client.close()
        replacement.stop()
    expected = pipeline.encode(image)
    assert retried == {"http": expected, "grpc": expected}
    print(f"replacement ready after {ready_after:.1f} s; retries served after {served_after:.1f} s")
