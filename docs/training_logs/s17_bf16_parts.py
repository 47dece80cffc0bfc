"""Which decoder parts lose PSNR in bf16: Kodak-24, v4.5's CLI thumbnails (OpenVINO, default) rebuilt
by torch with bf16 autocast on the named parts only, everything else f32.

    OMP_NUM_THREADS=1 python docs/training_logs/s17_bf16_parts.py WEIGHTS
"""
import sys

import numpy as np
import torch

from hyperthumbnail.codec.images import list_images, load_image
from hyperthumbnail.metrics import psnr
from hyperthumbnail.pipeline import Pipeline

torch.set_num_threads(1)
weights = sys.argv[1]
encoder = Pipeline(weights, threads=1)
rebuild = Pipeline(weights, threads=1, runtime="torch")
decoder = rebuild.model.decoder


def wrap(module, forward):
    original = module.forward
    module.forward = lambda *a: forward(original, *a)
    return lambda: setattr(module, "forward", original)


def bf16(original, *a):  # the part under bf16 autocast, its output back to f32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return original(*a).float()


def f32(original, *a):  # the part in f32 inside a bf16 part
    with torch.autocast("cpu", enabled=False):
        return original(*[x.float() for x in a])


def f32_out_bf16(original, *a):  # in f32, its output rounded to bf16 (the body's stream stays bf16)
    return f32(original, *a).bfloat16()


def out_f32(original, *a):  # in bf16, its output kept f32 (the body's stream in f32)
    return original(*a).float()


def f32_on_rounded_input(original, *a):  # in f32, reading bf16-rounded inputs
    with torch.autocast("cpu", enabled=False):
        return original(*[x.bfloat16().float() for x in a])


body, blocks = decoder.body, list(decoder.body.body)
configs = {
    "f32": [],
    "bf16 decoder": [(decoder, bf16)],
    "bf16 body": [(body, bf16)],
    "bf16 body, head f32": [(body, bf16), (body.head, f32)],
    "bf16 body, tail f32": [(body, bf16), (body.tail, f32)],
    "bf16 body, first 8 blocks f32": [(body, bf16)] + [(b, f32) for b in blocks[:8]],
    "bf16 body, last 8 blocks and conv f32": [(body, bf16)] + [(b, f32) for b in blocks[8:]],
    "bf16 body, head f32, its output rounded to bf16": [(body, bf16), (body.head, f32_out_bf16)],
    "bf16 body, head bf16, its output f32 (stream f32)": [(body, bf16), (body.head, out_f32)],
    "bf16 body, head f32 on bf16-rounded input": [(body, bf16), (body.head, f32_on_rounded_input)],
}
rebuild._reconstruct_torch = lambda q, t: rebuild.model.decode(  # float(): a bf16 part's output
    torch.from_numpy(q[None]), torch.from_numpy(t[None]))[0].float().numpy()
data = [(image, encoder.encode(image)) for image in map(load_image, list_images("../shared/datasets/kodak"))]
for name, parts in configs.items():
    undo = [wrap(module, forward) for module, forward in parts]
    with torch.no_grad():
        value = np.mean([psnr(rebuild.decode(d), image) for image, d in data])
    for u in reversed(undo):
        u()
    print(f"{name}: {value:.4f}", flush=True)
