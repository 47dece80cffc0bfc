"""triton-model-analyzer (remote mode, with the venv's real perf_analyzer) on the decode ensemble:
which instance count and max batch size for its steps on this CPU.

Needs `make model-analyzer` (its own venv, .venv-tools/model-analyzer: it pins another
tritonclient). Builds the model repository, starts a tritonserver in *explicit* model-control
mode (model-analyzer's remote mode loads each candidate config through the load API; a polling
server refuses with "explicit model load / unload is not allowed if polling is enabled"),
writes the perf_analyzer input data (a real photo at --resolution, its thumbnail made by the
server), runs `model-analyzer profile` (quick search over the ensemble's steps: instance count
and max batch size up to the given limits, concurrency up to --max-concurrency), then copies
its result tables and writes a summary into `<out>/model_analyzer/`. Run as
`hyperthumbnail bench model-analyzer`.
"""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..interface import DECODE_MODEL
from .machine import machine_info, utc_now

TOOL_VENV = Path(".venv-tools/model-analyzer")
MODEL = DECODE_MODEL
STEPS = ("jpeg_decode", "decoder")  # the CPU repository's decode steps


def config_yaml(repo: Path, server, perf_analyzer: Path, input_data: Path, export: Path, args) -> str:
    """model-analyzer's profile config (YAML is a superset of JSON, so json.dumps writes it)."""
    return json.dumps({
        "model_repository": str(repo),
        "triton_launch_mode": "remote",
        "triton_http_endpoint": server.http_url,
        "triton_grpc_endpoint": server.grpc_url,
        "triton_metrics_url": server.metrics_url,
        "perf_analyzer_path": str(perf_analyzer),
        "client_protocol": "grpc",
        "profile_models": {MODEL: {"perf_analyzer_flags": {"input-data": str(input_data)}}},
        "run_config_search_mode": "quick",
        "run_config_search_max_instance_count": args.max_instances,
        "run_config_search_max_model_batch_size": args.max_batch,
        "run_config_search_max_concurrency": args.max_concurrency,
        "cpu_only_composing_models": list(STEPS),
        "export_path": str(export),
        "output_model_repository_path": str(export / "output_model_repository"),
        "override_output_model_repository": True,
        "checkpoint_directory": str(export / "checkpoints"),
    }, indent=2)


def summarize(export: Path, out: Path) -> dict:
    """Copy model-analyzer's result tables; the best configuration by throughput and by latency."""
    tables = sorted((export / "results").glob("*.csv")) if (export / "results").is_dir() else []
    out.mkdir(parents=True, exist_ok=True)
    for table in tables:
        shutil.copy2(table, out / table.name)
    inference = export / "results" / "metrics-model-inference.csv"
    rows = list(csv.DictReader(inference.open())) if inference.is_file() else []
    summary: dict = {"tables": [t.name for t in tables], "measurements": len(rows)}
    if rows:
        def number(row: dict, prefix: str) -> float:
            key = next(k for k in row if k.startswith(prefix))
            return float(row[key])

        summary["best_throughput"] = max(rows, key=lambda r: number(r, "Throughput"))
        summary["best_p99_latency"] = min(rows, key=lambda r: number(r, "p99 Latency"))
    return summary


def run(args) -> int:
    from ..client import HyperThumbnailClient
    from ..client.perf_analyzer import find_binary
    from ..client.perf_inputs import make_input, write_input_data
    from ..serving.repository import build_repository
    from ..serving.server_process import TritonServer, free_port

    tool = TOOL_VENV / "bin" / "model-analyzer"
    perf_analyzer = find_binary()
    if not tool.is_file():
        raise FileNotFoundError(f"{tool} missing: run `make model-analyzer`")
    if perf_analyzer is None:
        raise FileNotFoundError("perf_analyzer missing: run `make setup`")
    out = Path(args.out) / "model_analyzer"
    work = Path(tempfile.mkdtemp(prefix="model-analyzer-"))
    repo = build_repository(work / "model_repository")
    server = TritonServer(repo, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                          extra_args=["--model-control-mode=explicit", "--load-model=*"])
    server.start(timeout=300)
    started = utc_now()
    try:
        photo = make_input(args.resolution)
        with HyperThumbnailClient(server.http_url, timeout_s=600) as client:
            thumbnail = client.encode(photo.image)
        input_data = write_input_data(work / "decode.json", MODEL, thumbnail=thumbnail)
        export = work / "export"
        export.mkdir()
        config = work / "config.yaml"
        config.write_text(config_yaml(repo, server, perf_analyzer.resolve(), input_data, export, args))
        cmd = [str(tool), "profile", "-f", str(config)]
        print("running:", " ".join(cmd), flush=True)
        log = work / "model_analyzer.log"
        with log.open("w") as f:
            code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=work).returncode
    finally:
        server.stop()
    summary = summarize(export, out)
    shutil.copy2(log, out / "model_analyzer.log")
    shutil.copy2(config, out / "config.yaml")
    summary.update({"exit_code": code, "command": " ".join(cmd), "resolution": args.resolution,
                    "input": photo.source, "thumbnail_bytes": len(thumbnail), "started": started,
                    "finished": utc_now(), "machine": machine_info(),
                    "model_analyzer": "triton-model-analyzer 1.42.0", "perf_analyzer": str(perf_analyzer)})
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"model-analyzer exit {code}; results in {out} (work dir {work})")
    return code
