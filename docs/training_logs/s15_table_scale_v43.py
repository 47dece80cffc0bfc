import sys, torch
from hyperthumbnail.weights import load_model
from hyperthumbnail.evaluation import evaluate_folder
torch.set_num_threads(1)
for s in [float(x) for x in sys.argv[1:]]:
    m = load_model('build/v43_x4.safetensors'); m.qpm.fold_table_scale(s)
    for p in m.qpm.parameters(): p.data = p.data.half().float()
    r = evaluate_folder(m, '../shared/datasets/kodak')
    print(s, {k: round(v, 4) for k, v in r.items()}, flush=True)
