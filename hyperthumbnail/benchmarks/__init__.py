"""Benchmarks behind `hyperthumbnail bench`: rate-distortion against baselines (`rd`) and 6K
speed in-process vs Triton against an EDSR decoder (`speed`), plus the SR baseline's training.

Each benchmark is one command that writes JSON, CSV and PNG plots (see docs/benchmarks.md).
The names below are light to import (the CLI's parser lists them without loading any model).
"""

DATASETS = ("kodak", "set5", "set14", "bsd68", "urban100")
METHODS = ("hyperthumbnail", "bicubic_jpeg", "bicubic_jpeg_420", "sr_baseline")
