"""NVIDIA's real perf_analyzer (installed into the venv by `make setup`, scripts/install_perf_analyzer.py)
against the session's real tritonserver (conftest.py), and our perf_analyzer engine's parsing of it.

Short windows on small images: these check that the tool runs against our ensembles with no failed
request, not how fast they are (that is benchmarks/)."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import photo_like

from hyperthumbnail.client import HyperThumbnailClient
from hyperthumbnail.client.perf import PerfSettings
from hyperthumbnail.client.perf_analyzer import (
    PerfAnalyzerError,
    PerfAnalyzerJob,
    binary_version,
    find_binary,
    recount,
    run_level,
)
from hyperthumbnail.client.perf_inputs import write_input_data

pytestmark = pytest.mark.timeout(600)
VENV_BINARY = Path(sys.executable).parent / "perf_analyzer"
# windows of 1 s; stability is not under test here, so any 3 windows are "stable"
SHORT = PerfSettings(measurement_interval_s=1.0, stability_pct=1000, max_windows=5, warmup=0)


@pytest.fixture(scope="module")
def binary() -> Path:
    assert VENV_BINARY.is_file(), f"{VENV_BINARY} missing: `make setup` installs it"
    return VENV_BINARY


def failed_requests(server, model: str) -> int:
    """The server's count of failed requests for `model` (Triton's statistics extension)."""
    with HyperThumbnailClient(server.http_url) as client:
        stats = client.triton.get_inference_statistics(model)["model_stats"]
    return sum(int(s["inference_stats"]["fail"]["count"]) for s in stats)


@pytest.fixture(scope="module")
def inputs(triton_server, tmp_path_factory) -> dict[str, Path]:
    """perf_analyzer --input-data files: a small photo for encode, its thumbnail (made by the server) for decode."""
    folder = tmp_path_factory.mktemp("perf_analyzer")
    image = photo_like(256, 192, seed=50)
    with HyperThumbnailClient(triton_server.http_url) as client:
        thumbnail = client.encode(image)
    return {"hyperthumbnail_encode": write_input_data(folder / "encode.json", "hyperthumbnail_encode", image),
            "hyperthumbnail_decode": write_input_data(folder / "decode.json", "hyperthumbnail_decode",
                                                      thumbnail=thumbnail)}


def test_the_venv_has_the_real_perf_analyzer(binary):
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "Perf Analyzer Version 2.48.0" in out.stderr
    assert binary_version(binary) == "2.48.0" and find_binary() == binary


@pytest.mark.server
@pytest.mark.parametrize("model,protocol,shm", [("hyperthumbnail_decode", "http", False),
                                                ("hyperthumbnail_encode", "grpc", False),
                                                ("hyperthumbnail_decode", "grpc", True)])
def test_perf_analyzer_reports_no_errors(tmp_path, binary, triton_server, inputs, model, protocol, shm):
    """The real tool, run by hand as a user would, with its CSV read directly. (Encode cannot use
    --shared-memory: perf_analyzer 2.48 refuses models with optional inputs, TABLE_SCALE here.)"""
    url = triton_server.http_url if protocol == "http" else triton_server.grpc_url
    report = tmp_path / "perf_analyzer.csv"
    cmd = [str(binary), "-m", model, "-u", url, "-i", protocol, "--input-data", str(inputs[model]),
           "--concurrency-range", "1:2", "-p", "1000", "-s", "1000", "-r", "5", "--percentile", "95",
           "-f", str(report)]
    if shm:  # the decoded image is larger than perf_analyzer's default 100 KB output region
        cmd += ["--shared-memory", "system", "--output-shared-memory-size", str(256 * 192 * 3)]
    failed_before = failed_requests(triton_server, model)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr  # a failed request ends perf_analyzer with exit 99
    assert "had error" not in out.stdout + out.stderr
    rows = {int(row["Concurrency"]): row for row in csv.DictReader(report.open())}
    assert sorted(rows) == [1, 2]
    for row in rows.values():
        assert float(row["Inferences/Second"]) > 0
        assert 0 < int(row["p50 latency"]) <= int(row["p90 latency"]) <= int(row["p95 latency"]) <= int(row["p99 latency"])
    assert failed_requests(triton_server, model) == failed_before  # and the server saw no failure either


@pytest.mark.server
def test_engine_parses_a_run_into_our_level_result(binary, triton_server, inputs):
    job = PerfAnalyzerJob(binary, "hyperthumbnail_decode", triton_server.grpc_url, "grpc",
                          inputs["hyperthumbnail_decode"], SHORT)
    result, report = run_level(job, 1, timeout_s=300)
    assert result.stable and result.errors == 0 and result.first_error is None and result.windows >= 3
    assert result.throughput > 0 and 0 < result.p50_ms <= result.p90_ms <= result.p95_ms <= result.p99_ms
    assert result.mean_ms > 0
    server = result.server
    assert server["model"]["name"] == "hyperthumbnail_decode" and server["model"]["requests"] > 0
    assert set(server["composing"]) == {"jpeg_decode", "decoder"}
    for split in server["composing"].values():
        assert split["compute_infer_ms"] > 0 and split["queue_ms"] >= 0 and split["avg_batch"] >= 1
    assert server["model"]["request_ms"] <= result.p99_ms * 1.05
    assert "Composing models" in report


@pytest.mark.server
@pytest.mark.parametrize("protocol,shm", [("http", False), ("grpc", True)])
def test_cli_engine_perf_analyzer_writes_our_json(tmp_path, triton_server, protocol, shm, capsys):
    """`hyperthumbnail perf --engine perf_analyzer`: our JSON/CSV/table, naming the engine and its version."""
    from PIL import Image

    from hyperthumbnail.cli import main

    Image.fromarray(photo_like(256, 192, seed=51)).save(tmp_path / "photo.png")
    out = tmp_path / "pa.json"
    url = triton_server.http_url if protocol == "http" else triton_server.grpc_url
    assert main(["perf", "--engine", "perf_analyzer", "--url", url, "--protocol", protocol,
                 "--model", "hyperthumbnail_decode", "--resolution", str(tmp_path / "photo.png"), "--concurrency", "1:2",
                 "--measurement-interval-ms", "1000", "--stability", "1000", "--max-windows", "4", "--output", str(out)]
                + (["--shm"] if shm else [])) == 0
    report = json.loads(out.read_text())
    config = report["config"]
    assert config["engine"] == "perf_analyzer" and config["perf_analyzer_version"] == "2.48.0"
    assert config["warmup"] is None and config["shm"] is shm and config["resolution"] == "256x192"
    assert [r["concurrency"] for r in report["results"]] == [1, 2]
    for r in report["results"]:
        assert r["errors"] == 0 and r["stable"] and r["windows"] >= 3
        assert r["throughput"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"]
        assert set(r["server"]["composing"]) == {"jpeg_decode", "decoder"}
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert [row["concurrency"] for row in rows] == ["1", "2"] and "decoder.compute_infer_ms" in rows[0]
    assert "perf_analyzer 2.48.0" in capsys.readouterr().out


@pytest.mark.server
def test_engine_reports_a_failed_request_with_the_servers_message(tmp_path, binary, triton_server):
    bad = write_input_data(tmp_path / "bad.json", "hyperthumbnail_decode", thumbnail=b"not a jpeg")
    job = PerfAnalyzerJob(binary, "hyperthumbnail_decode", triton_server.http_url, "http", bad, SHORT)
    result, _ = run_level(job, 1, timeout_s=300)
    assert result.errors == 1 and not result.stable and math.isnan(result.p50_ms)
    assert "not a JPEG" in result.first_error


@pytest.mark.server
def test_engine_reports_an_unstable_level_with_finite_latencies(binary, triton_server, inputs):
    """Three windows of 0.5 s do not agree within 0.01 % on both throughput and p95: perf_analyzer
    gives up (exit 2, no latencies but each window's p95); the level is measured once more by
    request count, so it is reported unstable with real numbers, never NaN."""
    job = PerfAnalyzerJob(binary, "hyperthumbnail_decode", triton_server.http_url, "http",
                          inputs["hyperthumbnail_decode"], PerfSettings(0.5, 0.01, 3, 0))
    result, report = run_level(job, 2, timeout_s=300)
    assert "Failed to obtain stable measurement" in report and "Sending a total of" in report
    assert not result.stable and result.errors == 0 and result.windows == 3
    assert "--request-count" in result.note
    assert all(math.isfinite(v) and v > 0 for v in (result.throughput, result.p50_ms, result.p99_ms, result.mean_ms))
    assert result.p50_ms <= result.p99_ms and result.server["model"]["requests"] >= 6  # >= 3 per concurrent request


def test_unstable_rerun_counts_what_the_last_three_windows_held():
    report = "\n".join(f"  Pass [{i}] throughput: {t} infer/sec. p95 latency: 900000 usec"
                       for i, t in enumerate((9.0, 0.5, 0.25, 0.75), 1))
    assert recount(report, PerfSettings(measurement_interval_s=8.0), concurrency=1) == 12  # (0.5+0.25+0.75) x 8
    assert recount(report, PerfSettings(measurement_interval_s=8.0), concurrency=5) == 15  # at least 3 each
    assert recount("", PerfSettings(), concurrency=2) == 6


def test_auto_windows_fit_the_request_time():
    from hyperthumbnail.cli.perf import DEFAULT_WINDOW_MS, REQUESTS_PER_WINDOW, auto_window_ms

    assert auto_window_ms(0.05) == DEFAULT_WINDOW_MS  # fast requests: the default 5 s
    assert auto_window_ms(6.6) == 27000.0 and 27000.0 >= REQUESTS_PER_WINDOW * 6600  # a 6K decode on a busy CPU


@pytest.mark.server
def test_engine_explains_a_window_shorter_than_a_request(binary, triton_server, inputs):
    job = PerfAnalyzerJob(binary, "hyperthumbnail_encode", triton_server.http_url, "http",
                          inputs["hyperthumbnail_encode"], PerfSettings(0.001, 10.0, 3, 0))
    with pytest.raises(PerfAnalyzerError, match="longer than one request"):
        run_level(job, 1, timeout_s=300)


@pytest.mark.server
def test_engine_passes_on_perf_analyzers_refusal_of_shm_with_optional_inputs(binary, triton_server, inputs):
    job = PerfAnalyzerJob(binary, "hyperthumbnail_encode", triton_server.http_url, "http",
                          inputs["hyperthumbnail_encode"], SHORT, shm=True)
    with pytest.raises(PerfAnalyzerError, match="does not support optional inputs"):
        run_level(job, 1, timeout_s=300)


def test_engine_without_a_server_is_an_error(tmp_path, binary):
    data = write_input_data(tmp_path / "d.json", "hyperthumbnail_decode", thumbnail=b"x")
    job = PerfAnalyzerJob(binary, "hyperthumbnail_decode", "127.0.0.1:1", "http", data, SHORT)
    with pytest.raises(PerfAnalyzerError, match="Couldn't connect to server"):
        run_level(job, 1, timeout_s=60)


@pytest.mark.parametrize("extra,reason", [
    (["--url", "127.0.0.1:1,127.0.0.1:2"], "several --url servers"),
    (["--model", "hyperthumbnail_encode", "--shm"], "optional inputs"),
    (["--protocol", "grpc", "--shm", "--admin-key", "k"], "headers over HTTP only"),
])
def test_cli_says_what_perf_analyzer_cannot_run(extra, reason, capsys):
    """Asked for explicitly, it is a one-line error naming the reason; by default those runs go to builtin."""
    from hyperthumbnail.cli import main

    assert main(["perf", "--engine", "perf_analyzer", *extra]) == 1
    err = capsys.readouterr().err
    assert reason in err and "--engine builtin" in err and len(err.strip().splitlines()) == 1
