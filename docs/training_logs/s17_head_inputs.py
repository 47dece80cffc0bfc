"""Which input of the body's head conv bf16 rounding hurts: Kodak-24, v4.5's CLI thumbnails, torch,
the body under bf16 autocast, its head conv in f32 on inputs of which the thumbnail (3 ch) and/or
the coefficient branch (24 ch) are rounded to bf16 first (the head's output rounded to bf16).

    OMP_NUM_THREADS=1 python docs/training_logs/s17_head_inputs.py WEIGHTS
"""
import sys

import numpy as np
import torch

from hyperthumbnail.codec.images import list_images, load_image
from hyperthumbnail.metrics import psnr
from hyperthumbnail.pipeline import Pipeline

torch.set_num_threads(1)
weights = sys.argv[1]
encoder, rebuild = Pipeline(weights, threads=1), Pipeline(weights, threads=1, runtime="torch")
body = rebuild.model.decoder.body
rebuild._reconstruct_torch = lambda q, t: rebuild.model.decode(
    torch.from_numpy(q[None]), torch.from_numpy(t[None]))[0].float().numpy()
data = [(image, encoder.encode(image)) for image in map(load_image, list_images("../shared/datasets/kodak"))]
body_forward, head_forward = body.forward, body.head.forward


def body_bf16(x):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return body_forward(x).float()


def head_reading(round_thumbnail: bool, round_branch: bool):
    def forward(x):
        with torch.autocast("cpu", enabled=False):
            thumbnail, branch = x[:, :3].float(), x[:, 3:].float()
            thumbnail = thumbnail.bfloat16().float() if round_thumbnail else thumbnail
            branch = branch.bfloat16().float() if round_branch else branch
            return head_forward(torch.cat([thumbnail, branch], 1)).bfloat16()
    return forward


body.forward = body_bf16
for name, rounding in {"both rounded": (True, True), "thumbnail rounded only": (True, False),
                       "coefficient branch rounded only": (False, True), "neither": (False, False)}.items():
    body.head.forward = head_reading(*rounding)
    with torch.no_grad():
        print(name, round(float(np.mean([psnr(rebuild.decode(d), image) for image, d in data])), 4), flush=True)
