"""The static browser viewer (issue #27), through the real thing: its JavaScript coefficient reader
and tile plan run in node against the Python reader (libjpeg) and `plan_tiles`, and the built page
restores a Kodak thumbnail in a real headless Chromium (Debian's, driven by puppeteer-core) to
within 45 dB of the in-process decode, from `viewer serve`'s server (WASM threads) and from a plain
static server (`python -m http.server`, no COOP/COEP: single-threaded), and shows its message for a
JPEG that is not a HyperThumbnail."""
from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hyperthumbnail.codec.thumbnail import read_thumbnail
from hyperthumbnail.runtime.tiling import (
    DECODER_BODY_MARGIN_BLOCKS,
    DECODER_FEATURES_MARGIN_BLOCKS,
    DEFAULT_FEATURE_TILE_BLOCKS,
    DEFAULT_TILE_PIXELS,
    plan_tiles,
)
from hyperthumbnail.viewer import VIEWER_SOURCE, build_viewer, check_thumbnail
from hyperthumbnail.viewer.check import DEFAULT_CHROMIUM, run_page

ROOT = Path(__file__).resolve().parents[1]
# A Kodak-sized (768x512) crop of a shipped photo: the evaluation sets live outside the repository.
PHOTO = ROOT / "samples" / "photos" / "maple.jpg"
NODE = shutil.which("node")


def _require_browser_tools() -> None:
    missing = [what for what, ok in (("node", NODE is not None), ("Chromium", Path(DEFAULT_CHROMIUM).is_file())) if not ok]
    if missing:
        pytest.fail(f"{' and '.join(missing)} missing: run `make system-deps` (Debian's chromium, nodejs)")


@pytest.fixture(scope="module")
def viewer_dir() -> Path:
    _require_browser_tools()
    return build_viewer().parent  # kept as is when up to date (make viewer built it)


@pytest.fixture(scope="module")
def photo_thumbnail(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A 768x512 photo's thumbnail made by the in-process encoder, and the in-process decode of it."""
    from hyperthumbnail.pipeline import Pipeline

    pipeline = Pipeline()
    photo = np.asarray(Image.open(PHOTO).convert("RGB"))[:512, :768]
    path = tmp_path_factory.mktemp("viewer") / "photo.jpg"
    path.write_bytes(pipeline.encode(photo))
    return path, pipeline.decode(path.read_bytes())


def _node(script: str, *args: str) -> dict:
    """Run an ES module snippet in node with the viewer's sources and crc-32 loaded; its JSON output."""
    prelude = ("import { createRequire } from 'node:module';\n"
               f"globalThis.CRC32 = createRequire({json.dumps(str(VIEWER_SOURCE / 'package.json'))})('crc-32');\n"
               f"const src = {json.dumps((VIEWER_SOURCE / 'src').as_uri())};\n")
    result = subprocess.run([NODE, "--input-type=module", "-e", prelude + script, *args], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


_READ = """
import { readFileSync } from 'node:fs';
const { readThumbnail } = await import(src + '/thumbnail.js');
const [path, options] = [process.argv[1], JSON.parse(process.argv[2])];
try {
  const t = readThumbnail(new Uint8Array(readFileSync(path)), options);
  console.log(JSON.stringify({ coefficients: Array.from(t.coefficients), tables: Array.from(t.tables), rows: t.rows,
    cols: t.cols, scale: t.scale, size: [t.width, t.height], model_id: t.modelId, version: t.version }));
} catch (err) { console.log(JSON.stringify({ error: err.constructor.name, message: err.message, stripped: err.stripped })); }
"""


def _read_js(path: Path, **options) -> dict:
    return _node(_READ, str(path), json.dumps({"maxPixels": 50331648, **options}))


def _as_version_1(data: bytes) -> bytes:
    """The same thumbnail with a format-version-1 marker (no model id; its CRC recomputed)."""
    start = data.index(b"HYPERTHUMB\0")
    length = int.from_bytes(data[start - 2:start], "big")
    payload = data[start:start - 2 + length]
    end = start - 2 + length
    v1 = payload[:11] + b"\x01" + payload[12:21]
    crc = zlib.crc32(data[end:], zlib.crc32(v1))
    v1 += struct.pack(">I", crc)
    return data[:start - 2] + (len(v1) + 2).to_bytes(2, "big") + v1 + data[end:]


def _assert_same_coefficients(js: dict, path: Path, **kwargs) -> None:
    py = read_thumbnail(path.read_bytes(), **kwargs)
    assert "error" not in js, js
    assert (js["rows"], js["cols"], js["scale"], tuple(js["size"])) == (*py.coefficients.shape[2:], py.scale, py.hr_size)
    assert np.array_equal(np.array(js["coefficients"]).reshape(py.coefficients.shape), py.coefficients)
    assert np.array_equal(np.array(js["tables"]).reshape(2, 64), py.tables)


def test_the_js_reader_reads_what_libjpeg_reads(photo_thumbnail, tmp_path):
    """Coefficients and tables equal the Python reader's (libjpeg via jpeglib) for format versions 2
    and 1, and for the stripped thumbnail with restart markers that jpegtran makes, given the scale."""
    path, _ = photo_thumbnail
    served = read_thumbnail(path.read_bytes()).model_id
    js = _read_js(path, modelIds=[served])
    _assert_same_coefficients(js, path)
    assert (js["version"], js["model_id"]) == (2, served)

    v1 = tmp_path / "v1.jpg"
    v1.write_bytes(_as_version_1(path.read_bytes()))
    js = _read_js(v1, modelIds=[])
    _assert_same_coefficients(js, v1)
    assert (js["version"], js["model_id"]) == (1, None)

    stripped = tmp_path / "stripped.jpg"
    subprocess.run(["jpegtran", "-copy", "none", "-restart", "1", "-outfile", str(stripped), str(path)], check=True)
    assert b"\xff\xdd" in stripped.read_bytes()  # DRI: restart markers in the scan
    assert _read_js(stripped)["stripped"] is True  # no marker, no scale: asks for them
    js = _read_js(stripped, stripped={"scale": 4, "width": 768, "height": 512})
    _assert_same_coefficients(js, stripped, scale=4, hr_size=(768, 512))


def test_the_js_reader_refuses_what_the_cli_refuses(photo_thumbnail, tmp_path):
    path, _ = photo_thumbnail
    data = path.read_bytes()
    cases = {
        "checksum mismatch": data[:-200] + bytes([data[-200] ^ 1]) + data[-199:],
        "truncated JPEG": data[:len(data) // 2],
        "not a JPEG file": b"GIF89a" + bytes(100),
        "which the decoder shipped with this viewer does not serve": data,
    }
    for expected, bad in cases.items():
        (tmp_path / "bad.jpg").write_bytes(bad)
        js = _read_js(tmp_path / "bad.jpg", modelIds=["0123456789abcdef"])
        assert js.get("error") == "ThumbnailError" and expected in js["message"], (expected, js)
    reencoded = tmp_path / "reencoded.jpg"
    Image.open(path).save(reencoded, quality=90, subsampling=0)  # 4:4:4 pixels again, libjpeg's tables
    js = _read_js(reencoded, stripped={"scale": 4})
    assert "standard quality-90 tables" in js["message"]


def test_the_js_tile_plan_is_the_clis():
    """planTiles (viewer/src/tiling.js) cuts exactly where runtime/tiling.py's plan_tiles does."""
    _require_browser_tools()
    body_area = DEFAULT_TILE_PIXELS // 32**2
    cases = [(95, 126, DECODER_BODY_MARGIN_BLOCKS, body_area), (95, 126, DECODER_FEATURES_MARGIN_BLOCKS,
             DEFAULT_FEATURE_TILE_BLOCKS), (192, 256, DECODER_FEATURES_MARGIN_BLOCKS, DEFAULT_FEATURE_TILE_BLOCKS),
             (192, 256, DECODER_BODY_MARGIN_BLOCKS, body_area), (34, 60, DECODER_BODY_MARGIN_BLOCKS, 900),
             (16, 24, DECODER_BODY_MARGIN_BLOCKS, body_area), (130, 61, 9, 700), (97, 203, 5, 1234)]
    js = _node("const { planTiles } = await import(src + '/tiling.js');\n"
               "console.log(JSON.stringify(JSON.parse(process.argv[1]).map((c) => planTiles(...c))));",
               json.dumps(cases))
    for case, tiles in zip(cases, js):
        expected = [{"core": [[t.core[0].start, t.core[0].stop], [t.core[1].start, t.core[1].stop]],
                     "extent": [[t.extent[0].start, t.extent[0].stop], [t.extent[1].start, t.extent[1].stop]]}
                    for t in plan_tiles(*case)]
        assert tiles == expected, case
    assert len(js[0]) > 1 and len(js[2]) > 1  # a 12 MP photo's body is tiled, a 48 MP one's features too


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def test_chromium_restores_a_768x512_thumbnail_like_the_cli(viewer_dir, photo_thumbnail, tmp_path):
    """`viewer check`: the page's own PNG download has the original size and agrees with the
    in-process decode (OpenVINO, bf16 body) at >= 45 dB; result.json names the backend and time."""
    path, cli = photo_thumbnail
    result = check_thumbnail(path, tmp_path, viewer_dir=viewer_dir, timeout_s=240)
    assert result.ok, result.page
    restored = np.asarray(Image.open(result.png).convert("RGB"))
    assert restored.shape == cli.shape == (512, 768, 3)
    assert _psnr(restored, cli) >= 45
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["backend"] == "wasm" and record["ms"] > 0 and record["cross_origin_isolated"] is True
    assert record["threads"] >= 1 and record["browser_version"].startswith(("Chrome/", "HeadlessChrome/"))
    assert (record["width"], record["height"]) == (768, 512) and not record["page_errors"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_plain_static_server_restores_single_threaded_and_a_foreign_jpeg_gets_the_message(
        viewer_dir, photo_thumbnail, tmp_path):
    """The folder as any static host serves it (no COOP/COEP): the page falls back to one WASM
    thread, opens `?src=`, restores (a stripped thumbnail too, given its scale and size), and says
    why an ordinary photo dropped on it is not a HyperThumbnail."""
    path, cli = photo_thumbnail
    site = tmp_path / "site"
    shutil.copytree(viewer_dir, site, symlinks=False)
    shutil.copy(path, site / "photo.jpg")
    shutil.copy(ROOT / "samples" / "photos" / "pier.jpg", site / "camera.jpg")
    subprocess.run(["jpegtran", "-copy", "none", "-outfile", str(site / "stripped.jpg"), str(path)], check=True)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=site,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        base = f"http://127.0.0.1:{port}/"
        page, _ = run_page(base, tmp_path, file=site / "camera.jpg", drop=True, timeout_s=60)  # dropped on the page
        assert page["state"] == "error", page
        assert "not a HyperThumbnail" in page["shown_message"] and "hyperthumbnail encode" in page["shown_message"]
        assert page.get("stripped") is True  # the page offers the scale and size fields

        page, _ = run_page(base + "?src=photo.jpg&backend=wasm", tmp_path, timeout_s=240)
        assert page["state"] == "done", page
        assert page["threads"] == 1 and page["cross_origin_isolated"] is False
        restored = np.asarray(Image.open(page["download_path"]).convert("RGB"))
        assert restored.shape == cli.shape and _psnr(restored, cli) >= 45

        # Stripped of its marker (a CDN's optimiser): the scale and size stand in for it, as in the CLI.
        (tmp_path / "s").mkdir()
        page, _ = run_page(base + "?src=stripped.jpg&backend=wasm&scale=4&size=768x512", tmp_path / "s", timeout_s=240)
        assert page["state"] == "done", page
        stripped = np.asarray(Image.open(page["download_path"]).convert("RGB"))
        assert np.array_equal(stripped, restored)  # the same coefficients, the same pixels
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_chromium_restores_a_12_megapixel_photo_in_tiles_within_a_tabs_memory(viewer_dir, tmp_path):
    """samples/photos/lake.jpg (4032x3024, 12.19 MP): the body runs in tiles as in the CLI, the
    result agrees with the in-process decode at >= 45 dB, and the tab (renderer process) peaks under
    2 GiB (measured: ~1 GiB; WASM's own ceiling is 4 GiB)."""
    from hyperthumbnail.pipeline import Pipeline

    pipeline = Pipeline()
    photo = np.asarray(Image.open(ROOT / "samples" / "photos" / "lake.jpg").convert("RGB"))
    path = tmp_path / "lake.jpg"
    path.write_bytes(pipeline.encode(photo))
    cli = pipeline.decode(path.read_bytes())
    del photo
    result = check_thumbnail(path, tmp_path / "out", viewer_dir=viewer_dir, timeout_s=400)
    assert result.ok, result.page
    restored = np.asarray(Image.open(result.png).convert("RGB"))
    assert restored.shape == cli.shape == (3024, 4032, 3)
    assert _psnr(restored, cli) >= 45
    assert 0 < result.memory["tab_peak_rss_mib"] < 2048, result.memory
    assert result.page["progress_steps"] >= 4  # the bar moved with the tiles (1 features + 3+ body tiles)


def test_the_manifest_holds_what_python_decides(viewer_dir):
    """The page's tiling, limits and accepted model ids come from the Python code, not a copy."""
    from hyperthumbnail.interface import DEFAULT_MAX_PIXELS
    from hyperthumbnail.weights import default_weights_path, served_model_ids

    manifest = json.loads((viewer_dir / "manifest.json").read_text())
    assert manifest["model_ids"] == list(served_model_ids(default_weights_path(4)))
    assert manifest["tiling"] == {"margins": {"decoder_features": DECODER_FEATURES_MARGIN_BLOCKS,
                                              "decoder_body": DECODER_BODY_MARGIN_BLOCKS},
                                  "feature_tile_blocks": DEFAULT_FEATURE_TILE_BLOCKS, "tile_pixels": DEFAULT_TILE_PIXELS}
    assert (manifest["scale"], manifest["max_pixels"]) == (4, DEFAULT_MAX_PIXELS)
    assert all((viewer_dir / path).is_file() for path in manifest["graphs"].values())


def test_viewer_check_exits_with_the_pages_message_for_a_foreign_jpeg(viewer_dir, tmp_path, capsys):
    """`hyperthumbnail viewer check` on an ordinary camera JPEG: exit 1, the page's message on one
    line, and result.json with that message (not a blank page, an exception or a hang)."""
    from hyperthumbnail.cli import main

    code = main(["viewer", "check", str(ROOT / "samples" / "photos" / "maple.jpg"), "--out", str(tmp_path),
                 "--dir", str(viewer_dir), "--timeout", "60"])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a HyperThumbnail" in err
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["state"] == "error" and "HYPERTHUMB marker" in record["message"] and not record["page_errors"]
    assert not (tmp_path / "restored.png").exists()


def test_viewer_serve_sends_the_headers_for_wasm_threads(viewer_dir):
    """`hyperthumbnail viewer serve`: COOP/COEP on every file (cross-origin isolation: WASM threads)
    and the MIME types module scripts and streaming WASM compilation insist on."""
    import urllib.request

    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "hyperthumbnail", "viewer", "serve", "--port", str(port),
                               "--dir", str(viewer_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "serving" in server.stdout.readline()  # printed once the socket listens
        expected = {"index.html": "text/html", "ort/ort.wasm.min.mjs": "text/javascript",
                    "ort/ort-wasm-simd-threaded.wasm": "application/wasm", "manifest.json": "application/json"}
        for path, mime in expected.items():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=10) as response:
                assert response.headers["Content-Type"].startswith(mime), path
                assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
                assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    finally:
        server.terminate()
        server.wait(timeout=10)


_FUZZ = """
import { readFileSync } from 'node:fs';
const { readThumbnail, ThumbnailError } = await import(src + '/thumbnail.js');
const [path, stripped] = [process.argv[1], process.argv[2] === 'stripped'];
const original = new Uint8Array(readFileSync(path));
let seed = 12345;
const random = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
const outcomes = { restored: 0, refused: 0, other: [] };
for (let i = 0; i < 400; i++) {
  const bytes = original.slice(0, i % 5 === 4 ? random(original.length) : original.length);
  for (let k = 0, n = 1 + random(4); k < n; k++) {
    const at = i % 2 ? random(Math.min(bytes.length, 700)) : random(bytes.length); // header or anywhere
    bytes[at] = random(256);
  }
  try {
    readThumbnail(bytes, { maxPixels: 50331648, modelIds: [], stripped: stripped ? { scale: 4 } : null });
    outcomes.restored++;
  } catch (err) {
    if (err instanceof ThumbnailError) outcomes.refused++;
    else outcomes.other.push(`${err.constructor.name}: ${err.message}`);
  }
}
console.log(JSON.stringify(outcomes));
"""


def test_damaged_files_get_a_message_never_an_exception(photo_thumbnail, tmp_path):
    """400 randomly damaged copies (bytes changed in the header or anywhere, some truncated) of a
    thumbnail with its marker and of a stripped one (no CRC: the entropy decoder meets the damage):
    each is read or refused with a ThumbnailError, which the page shows; nothing else escapes."""
    path, _ = photo_thumbnail
    stripped = tmp_path / "stripped.jpg"
    subprocess.run(["jpegtran", "-copy", "none", "-outfile", str(stripped), str(path)], check=True)
    for file, mode in ((path, "marker"), (stripped, "stripped")):
        outcomes = _node(_FUZZ, str(file), mode)
        assert outcomes["other"] == [], (mode, outcomes["other"][:5])
        # With the marker the CRC catches damage anywhere but in metadata; without it some damage
        # decodes to other coefficients (as libjpeg would read them), the rest is refused.
        assert outcomes["refused"] > (350 if mode == "marker" else 100), (mode, outcomes)
