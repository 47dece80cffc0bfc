#!/usr/bin/env bash
# Rerun every benchmark whose outputs are committed in benchmarks/results/ (docs/benchmarks.md):
# rate-distortion on the five evaluation sets, then 6K speed in-process vs Triton vs EDSR.
#   benchmarks/run_all.sh [WEIGHTS]        (default: the shipped weights)
# Needs an otherwise idle machine with ~16 GB free memory (the 6K encode is memory-hungry).
set -euo pipefail
cd "$(dirname "$0")/.."
weights=${1:-}
.venv/bin/hyperthumbnail bench rd ${weights:+--weights "$weights"}
.venv/bin/hyperthumbnail bench speed ${weights:+--weights "$weights"}
