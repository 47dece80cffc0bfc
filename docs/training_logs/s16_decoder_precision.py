"""Kodak-24 through one weights file: thumbnails made by the CLI's encoder (OpenVINO, default
precision), rebuilt by OpenVINO at its default precision, by OpenVINO f32 and by torch.

    OMP_NUM_THREADS=1 python docs/training_logs/s16_decoder_precision.py WEIGHTS
"""
import sys

import numpy as np

from hyperthumbnail.codec.images import list_images, load_image
from hyperthumbnail.metrics import psnr
from hyperthumbnail.pipeline import Pipeline

weights = sys.argv[1]
encoder = Pipeline(weights, threads=1)
decoders = {"openvino_default": encoder, "openvino_f32": Pipeline(weights, threads=1, precision="f32"),
            "torch": Pipeline(weights, threads=1, runtime="torch")}
results: dict[str, list[float]] = {name: [] for name in decoders}
for path in list_images("../shared/datasets/kodak"):
    image = load_image(path)
    data = encoder.encode(image)
    for name, decoder in decoders.items():
        results[name].append(psnr(decoder.decode(data), image))
print({name: round(float(np.mean(v)), 4) for name, v in results.items()})
