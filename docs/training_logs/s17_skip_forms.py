"""Time decoder_body forms at 6K (OpenVINO bf16, one thread, random 6K-sized features): the committed
three grouped skip convs vs one grouped conv over concatenated parts vs a dense block-diagonal conv.

    OMP_NUM_THREADS=1 python docs/training_logs/s17_skip_forms.py
"""
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hyperthumbnail.export import fold
from hyperthumbnail.export.onnx_export import export_graph
from hyperthumbnail.runtime.select import make_runner
from hyperthumbnail.weights import load_model

committed = fold.FoldedDecoderBody.phases

def concat_form(self, x):
    body = self.decoder.body
    h = x[:, 6:]
    tail = body.tail[0](h + body.body(h))
    coarse, rest = (F.pad(x[:, i:i + 3], (fold.RADIUS,) * 4, mode="replicate") for i in (0, 3))
    # per colour c: [coarse_c, coarse_c, rest_c] with [w, w_rest, w]
    parts = torch.stack([coarse, coarse, rest], dim=2).flatten(1, 2)  # (B, 9, H, W), colour-major
    w, wr = self.skip_weight_coarse, self.skip_weight_rest  # (48, 1, 5, 5)
    weight = torch.cat([w, wr, w], dim=1)  # (48, 3, 5, 5): group c reads its 3 channels
    return tail + F.conv2d(parts, weight.to(x.dtype), groups=3)

def dense_form(self, x):
    body = self.decoder.body
    h = x[:, 6:]
    tail = body.tail[0](h + body.body(h))
    coarse, rest = (F.pad(x[:, i:i + 3], (fold.RADIUS,) * 4, mode="replicate") for i in (0, 3))
    parts = torch.cat([coarse, coarse, rest], dim=1)  # (B, 9, H, W)
    w, wr = self.skip_weight_coarse, self.skip_weight_rest
    s2 = w.shape[0] // 3
    dense = torch.zeros(w.shape[0], 9, 5, 5)
    for c in range(3):
        o = slice(c * s2, (c + 1) * s2)
        dense[o, c], dense[o, 3 + c], dense[o, 6 + c] = w[o, 0], wr[o, 0], w[o, 0]
    return tail + F.conv2d(parts, dense.to(x.dtype))

model = load_model("hyperthumbnail/weights/hyperthumbnail_x4.safetensors").eval()
tmp = Path(tempfile.mkdtemp())
runners = {}
for name, form in {"committed": committed, "concat": concat_form, "dense": dense_form}.items():
    fold.FoldedDecoderBody.phases = form
    runners[name] = make_runner(export_graph(model, "decoder_body", tmp / f"{name}.onnx"), "openvino", "bf16", 1)
fold.FoldedDecoderBody.phases = committed
feat = np.random.default_rng(0).random((1, 30, 848, 1512), dtype=np.float32)
outs = {n: r.run({"features": feat})["image"] for n, r in runners.items()}
print({n: int(np.abs(o.astype(int) - outs["committed"].astype(int)).max()) for n, o in outs.items()}, flush=True)
times = {n: [] for n in runners}
for _ in range(3):
    for n, r in runners.items():
        t = time.perf_counter()
        r.run({"features": feat})
        times[n].append(round(time.perf_counter() - t, 3))
print({n: (statistics.median(v), v) for n, v in times.items()})
