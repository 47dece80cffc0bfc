"""Experiment (session 17, before `Decoder.head_features` split the thumbnail itself; it patches both
methods, so it runs against later code too): the thumbnail handed to the bf16 body in two parts
(its bf16 value and the rest) and/or the bicubic skip's kernel likewise, so that the folded skip
does not round them to 8 significant bits. Kodak-24, v4.5's CLI thumbnails, OpenVINO default (and
f32), graphs exported into a temporary cache.

    HILO=both|pixels|weights OMP_NUM_THREADS=1 python docs/training_logs/s17_thumbnail_parts.py WEIGHTS
"""
import os
import sys
import tempfile

os.environ["HYPERTHUMBNAIL_CACHE"] = tempfile.mkdtemp(prefix="hilo-")  # before the package reads it

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from hyperthumbnail.codec.images import list_images, load_image  # noqa: E402
from hyperthumbnail.export import fold  # noqa: E402
from hyperthumbnail.metrics import psnr  # noqa: E402
from hyperthumbnail.model import decoder as decoder_module  # noqa: E402
from hyperthumbnail.pipeline import Pipeline  # noqa: E402

MODE = os.environ.get("HILO", "both")


def head_features(self, q, tables):
    features = self.features(q, tables)
    lr = features[:, :3]
    coarse = lr.to(torch.bfloat16).float()
    return torch.cat([coarse, lr - coarse, self.body.head(features)], dim=1)


def phases(self, x):
    body = self.decoder.body
    h = x[:, 6:]
    tail = body.tail[0](h + body.body(h))
    w = bicubic = fold.bicubic_phase_weights(self.scale).to(x.dtype)
    w_coarse = w.to(torch.bfloat16).float()
    w_rest = w - w_coarse
    coarse, rest = (F.pad(x[:, i:i + 3], (fold.RADIUS,) * 4, mode="replicate") for i in (0, 3))
    if MODE == "both":
        base = F.conv2d(coarse, w_coarse, groups=3) + F.conv2d(coarse, w_rest, groups=3) + F.conv2d(rest, w_coarse, groups=3)
    elif MODE == "pixels":  # the thumbnail in two parts, the kernel not
        base = F.conv2d(coarse, bicubic, groups=3) + F.conv2d(rest, bicubic, groups=3)
    else:  # "weights": the kernel in two parts, the thumbnail not (summed back inside the bf16 graph)
        base = F.conv2d(coarse + rest, w_coarse, groups=3) + F.conv2d(coarse + rest, w_rest, groups=3)
    return tail + base


decoder_module.Decoder.head_features = head_features
fold.FoldedDecoderBody.phases = phases

weights = sys.argv[1]
encoder = Pipeline(weights, threads=1)  # thumbnails as the CLI makes them (the encoder is unchanged)
data = [(image, encoder.encode(image)) for image in map(load_image, list_images("../shared/datasets/kodak"))]
decoders = {"openvino_default": Pipeline(weights, threads=1)}
if MODE == "both":
    decoders["openvino_f32"] = Pipeline(weights, threads=1, precision="f32")
for name, decoder in decoders.items():
    print(MODE, name, round(float(np.mean([psnr(decoder.decode(d), image) for image, d in data])), 4), flush=True)
