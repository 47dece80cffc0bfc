"""Encode-time rounding offset at matched bitrate (session 14, docs/training.md's recipe table).

Quantizes the shipped encoder's coefficients with q = sign(c) * floor(|c| / Q + 0.5 - delta)
(delta > 0: a dead zone, as video encoders use; delta < 0: rounds away from zero), scales the
QPM tables so that the mean file size over the photos matches plain rounding's, then decodes the
real files with the CLI's default runtime. Prints one JSON line per delta.

    OMP_NUM_THREADS=1 .venv/bin/python docs/training_logs/s14_rounding_offset.py \
        ../shared/datasets/kodak 0,0.05,-0.05,0.15
"""
from __future__ import annotations

import json
import sys

import numpy as np

from hyperthumbnail.benchmarks.jpeg import decode_jpeg
from hyperthumbnail.codec.images import bicubic_downscale, list_images, load_image
from hyperthumbnail.codec.steps import encode_thumbnail
from hyperthumbnail.interface import COEF_LIMIT
from hyperthumbnail.metrics import bpp, psnr
from hyperthumbnail.pipeline import Pipeline


def quantize(coefficients: np.ndarray, tables: np.ndarray, delta: float) -> np.ndarray:
    steps = tables.astype(np.float32)[[0, 1, 1]][:, :, None, None]
    magnitude = np.floor(np.abs(coefficients / steps) + 0.5 - delta)
    return (np.sign(coefficients) * np.clip(magnitude, 0, COEF_LIMIT)).astype(np.int16)


def main(folder: str, deltas: list[float]) -> None:
    pipeline = Pipeline(threads=1)
    photos = [load_image(p) for p in list_images(folder)]
    analyzed = [pipeline.analyze(photo) for photo in photos]  # the encoder, once per photo

    def files(table_scale: float, delta: float) -> list[bytes]:
        out = []
        for coefficients, hr_size in analyzed:
            tables = pipeline._quantize(coefficients, table_scale)[1]  # the QPM's tables x table_scale
            out.append(encode_thumbnail(quantize(coefficients, tables, delta), tables, hr_size, 4,
                                        pipeline.model_id))
        return out

    def mean_bpp(data: list[bytes]) -> float:
        return float(np.mean([bpp(len(d), p.shape[1], p.shape[0]) for d, p in zip(data, photos)]))

    plain = mean_bpp(files(1.0, 0.0))
    for delta in deltas:
        low, high = 0.5, 2.0  # bisection on the table scale for plain rounding's mean bpp
        for _ in range(14):
            mid = (low + high) / 2
            low, high = (mid, high) if mean_bpp(files(mid, delta)) > plain else (low, mid)
        scale = 1.0 if delta == 0 else min((low, high), key=lambda s: abs(mean_bpp(files(s, delta)) - plain))
        data = files(scale, delta)
        hr, thumb = [], []
        for d, photo in zip(data, photos):
            hr.append(psnr(pipeline.decode(d), photo))
            reference = bicubic_downscale(photo, 4)
            thumb.append(psnr(decode_jpeg(d)[:reference.shape[0], :reference.shape[1]], reference))
        print(json.dumps({"delta": delta, "table_scale": scale, "bpp": mean_bpp(data), "hr_psnr": np.mean(hr),
                          "thumbnail_psnr": np.mean(thumb), "thumbnail_worst": np.min(thumb)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], [float(x) for x in sys.argv[2].split(",")])
