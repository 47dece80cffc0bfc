"""1 vs N replicas: `hyperthumbnail perf` through the front port of `hyperthumbnail serve --replicas N`.

For each replica count it starts `serve` as a user would, runs `perf` against the front port,
and records next to perf's own JSON what perf cannot see: how many requests each replica served
(its own `nv_inference_request_success`) and the CPU time the whole serving process tree burnt
per request. CPU-s per request is what bounds throughput on a given number of cores; on a shared
machine the measured rate also depends on the slice of the CPU the server gets.

    hyperthumbnail bench scaleout [--replicas 1,2] [--model ...]
writes benchmarks/results/scaleout_r{N}.json/.csv (perf) and benchmarks/results/scaleout.json.
"""
from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from ..serving.server_process import free_port
from .machine import machine_info

RESULTS = Path("benchmarks/results")


def _tree_cpu_s(pid: int) -> float:
    total = 0.0
    try:
        procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def _successes(metrics_port: int, model: str) -> int:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    m = re.search(r'^nv_inference_request_success\{model="' + re.escape(model) + r'",version="1"\} (\d+)', text, re.M)
    return int(m.group(1)) if m else 0


def run_one(replicas: int, args: argparse.Namespace) -> dict:
    http, grpc, metrics = free_port(), free_port(), free_port()
    cli = [sys.executable, "-m", "hyperthumbnail"]
    serve = subprocess.Popen(cli + ["serve", "--replicas", str(replicas), "--quiet", "--http-port", str(http),
                                    "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in serve.stdout:  # type: ignore[union-attr]
            if "Ctrl+C to stop" in line:
                break
        else:
            raise RuntimeError(f"serve --replicas {replicas} did not start: {serve.stderr.read()}")  # type: ignore[union-attr]
        ports = [metrics + i for i in range(replicas)]
        before = [_successes(p, args.model) for p in ports]
        cpu_before, started = _tree_cpu_s(serve.pid), time.monotonic()
        output = RESULTS / f"scaleout_r{replicas}.json"
        subprocess.run(cli + ["perf", "--engine", "builtin", "--url", f"127.0.0.1:{http}", "--model", args.model, "--resolution",
                              args.resolution, "--concurrency", args.concurrency, "--output", str(output)], check=True)
        cpu_s, wall_s = _tree_cpu_s(serve.pid) - cpu_before, time.monotonic() - started
        served = [_successes(p, args.model) - b for p, b in zip(ports, before)]
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(120)
        except subprocess.TimeoutExpired:
            serve.kill()
    perf = json.loads(output.read_text())
    return {"replicas": replicas, "perf": str(output), "requests_per_replica": served,
            "server_cpu_s": round(cpu_s, 1), "wall_s": round(wall_s, 1),
            "server_cpu_s_per_request": round(cpu_s / max(1, sum(served)), 3),
            "server_cores_used": round(cpu_s / wall_s, 2),
            "throughput_by_concurrency": {str(level["concurrency"]): level["throughput"] for level in perf["results"]}}


def run(args: argparse.Namespace) -> int:
    runs = [run_one(int(n), args) for n in args.replicas.split(",")]
    summary = {"machine": machine_info(), "model": args.model, "resolution": args.resolution,
               "concurrency": args.concurrency, "runs": runs}
    (RESULTS / "scaleout.json").write_text(json.dumps(summary, indent=2) + "\n")
    for one in runs:
        print(f"{one['replicas']} replica(s): requests per replica {one['requests_per_replica']}, "
              f"{one['server_cpu_s_per_request']} server CPU-s/request, {one['server_cores_used']} cores used, "
              f"throughput {one['throughput_by_concurrency']}")
    print(f"wrote {RESULTS / 'scaleout.json'}")
    return 0
