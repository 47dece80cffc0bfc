"""Session 15: what a table scale folded into v4.3's QPM does to Kodak (torch path, all 24 images).

Run from the repository root with v4.3's weights in build/ (`git show 67b9141:hyperthumbnail/weights/
hyperthumbnail_x4.safetensors > build/v43_x4.safetensors`):
    OMP_NUM_THREADS=1 .venv/bin/python docs/training_logs/s15_table_scale_v43.py 1.0 0.98 0.96
Output: s15_table_scale_v43.txt (scale, then bpp, HR PSNR, thumbnail PSNR and its worst image).
"""
import sys

import torch

from hyperthumbnail.evaluation import evaluate_folder
from hyperthumbnail.weights import load_model

torch.set_num_threads(1)
for scale in [float(x) for x in sys.argv[1:]]:
    model = load_model("build/v43_x4.safetensors")
    model.qpm.fold_table_scale(scale)
    for p in model.qpm.parameters():  # as the fp16 export stores them
        p.data = p.data.half().float()
    result = evaluate_folder(model, "../shared/datasets/kodak")
    print(scale, {k: round(v, 4) for k, v in result.items()}, flush=True)
