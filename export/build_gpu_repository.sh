#!/usr/bin/env bash
# On a GPU host with TensorRT (pip install -e '.[gpu]'): export the ONNX graphs, build fp16
# TensorRT plans (6K profiles, both orientations), check them against ONNX Runtime, and write a
# model repository for the NGC Triton container (platform tensorrt_plan / onnxruntime_onnx).
#   export/build_gpu_repository.sh [WEIGHTS] [OUT_DIR]
set -euo pipefail
weights=${1:-}
out=${2:-build/gpu}
args=(--out "$out/graphs" --target gpu --fp16 --check)
[ -n "$weights" ] && args+=(--weights "$weights")
hyperthumbnail export "${args[@]}"
hyperthumbnail serve --target gpu --build-only --plans "$out/graphs" \
  --model-repository "$out/model_repository" ${weights:+--weights "$weights"}
echo "model repository for the NGC container: $out/model_repository (see docs/serving.md)"
