#!/usr/bin/env bash
# Rerun every benchmark whose outputs are committed in benchmarks/results/ (docs/benchmarks.md,
# docs/rate_control.md): rate-distortion of both shipped models on the five evaluation sets, the
# rate-control RD curves, what --optimize buys, side-by-side crops of the first 4x weights vs the
# shipped ones, then speed: 1080p, 4K and 6K with ONNX Runtime, OpenVINO f32 and OpenVINO bf16,
# in-process and through Triton, against the CPU's compute floor and EDSR.
#   benchmarks/run_all.sh            (the shipped weights)
# Needs an otherwise idle machine with ~16 GB free memory (the 6K encode is memory-hungry).
# `bench rate-proxy` needs a training checkpoint (the rate model is not shipped): run it by hand,
#   .venv/bin/hyperthumbnail bench rate-proxy --checkpoint runs/x4/best.pt
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/hyperthumbnail bench rd
.venv/bin/hyperthumbnail bench rd --scale 2
# Crops (docs/benchmarks.md, `bench crops`): the first shipped 4x weights (commit 7e8e3f1, sha256
# e9fdb7db50ef...) from git history (not in a shallow clone) vs today's shipped ones -> results/crops/
mkdir -p build
git show 7e8e3f1:hyperthumbnail/weights/hyperthumbnail_x4.safetensors > build/hyperthumbnail_x4_v1.safetensors
.venv/bin/hyperthumbnail bench crops --old-weights build/hyperthumbnail_x4_v1.safetensors \
    --new-weights hyperthumbnail/weights/hyperthumbnail_x4.safetensors
.venv/bin/hyperthumbnail bench rd-curve --targets 0.2,0.3,0.32,0.45,0.6
.venv/bin/hyperthumbnail bench rd-curve --scale 2 --targets 0.5,0.8,1.2,1.6
.venv/bin/hyperthumbnail bench optimize --limit 24 --steps 20
.venv/bin/hyperthumbnail bench speed --resolutions 1080p,4k,6k --variants onnx,openvino-f32,openvino   # ~15 min on 2 idle cores
# The CLI at 20 MP with each runtime, and peak memory of the CLI and the server at 20 MP and 48 MP
photo=$(ls ../shared/datasets/highres/Kleiber*.jpg)
.venv/bin/python -m hyperthumbnail.benchmarks.cli_runtimes "$photo" --repeats 3 --work build/cli_runtimes \
    --out benchmarks/results/cli_runtimes.json
git show c31f025:hyperthumbnail/weights/hyperthumbnail_x4.safetensors > build/v3_x4.safetensors
.venv/bin/hyperthumbnail bench versus c92aa8b "$photo" --weights build/v3_x4.safetensors   # #28: decode vs the code of 2026-11-30
.venv/bin/hyperthumbnail bench decode-stages build/versus/thumbnail.jpg   # where a 6K decode's time goes
.venv/bin/hyperthumbnail bench decoder-width   # 24/32/40-wide decoder bodies at 6K (#24)
.venv/bin/python -m hyperthumbnail.benchmarks.bigphoto "$photo" --work build/bigphoto --out benchmarks/results/bigphoto.json
.venv/bin/python -m hyperthumbnail.benchmarks.bigphoto "$photo" --size 6028x3391 --work build/bigphoto20 \
    --out benchmarks/results/bigphoto_20mp.json
.venv/bin/hyperthumbnail bench scaleout   # 1 vs 2 replicas behind nginx (docs/scaleout.md)
.venv/bin/hyperthumbnail bench soak --minutes 60 --replicas 2   # an hour of mixed traffic (memory, faults)
.venv/bin/python deploy/chart_sizing.py   # the chart's memory from soak.json (docs/kubernetes.md)
.venv/bin/hyperthumbnail bench perf-engines   # builtin vs perf_analyzer, 8 cases, ~24 min on 2 idle cores
make viewer && .venv/bin/hyperthumbnail viewer bench --repeat 2   # the browser viewer in headless Chromium (docs/viewer.md)
