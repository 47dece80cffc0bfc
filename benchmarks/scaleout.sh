#!/usr/bin/env bash
# `hyperthumbnail perf` through the front port with 1 replica (tritonserver itself, no nginx) and
# with 2 replicas behind nginx (docs/scaleout.md). Writes benchmarks/results/scaleout_r{1,2}.json/.csv.
#   benchmarks/scaleout.sh [MODEL] [RESOLUTION] [CONCURRENCY]   (default: hyperthumbnail_decode 1080p 1:4)
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-hyperthumbnail_decode}; resolution=${2:-1080p}; concurrency=${3:-1:4}
port() { .venv/bin/python -c 'from hyperthumbnail.serving.tritonserver import free_port; print(free_port())'; }
for replicas in 1 2; do
  http=$(port); grpc=$(port); metrics=$(port)
  log=$(mktemp)
  .venv/bin/hyperthumbnail serve --replicas "$replicas" --quiet --http-port "$http" --grpc-port "$grpc" \
    --metrics-port "$metrics" >"$log" 2>&1 &
  server=$!
  trap 'kill -INT $server 2>/dev/null; wait $server' EXIT
  until grep -q "Ctrl+C to stop" "$log"; do
    kill -0 "$server" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 1
  done
  .venv/bin/hyperthumbnail perf --url "127.0.0.1:$http" --model "$model" --resolution "$resolution" \
    --concurrency "$concurrency" --output "benchmarks/results/scaleout_r${replicas}.json"
  kill -INT "$server"; wait "$server"; trap - EXIT
  rm -f "$log"
done
