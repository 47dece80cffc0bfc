"""Benchmarks behind `hyperthumbnail bench`: rate-distortion against baselines (`rd`) and speed
at 1080p/4K/6K per runtime, in-process vs Triton, against the CPU's compute floor and an EDSR
decoder (`speed`), plus the SR baseline's training.

Each benchmark is one command that writes JSON, CSV and PNG plots (see docs/benchmarks.md).
The names below are light to import (the CLI's parser lists them without loading any model).
"""

DATASETS = ("kodak", "set5", "set14", "bsd68", "urban100")
METHODS = ("hyperthumbnail", "bicubic_jpeg", "bicubic_jpeg_420", "sr_baseline")
