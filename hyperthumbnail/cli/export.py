"""`hyperthumbnail export`: ONNX graphs (+ TensorRT plans on a GPU) for Triton, optionally checked."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from .errors import CLIError

CHECK_SIZE = (192, 256)  # (height, width) of the --check images: a multiple of 8*scale for 2x and 4x


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export encoder, QPM and decoder to ONNX (and TensorRT plans with --target gpu)",
        description="Write encoder.onnx, qpm.onnx, decoder.onnx and manifest.json to DIR (dynamic batch, "
        "height and width; int32 coefficients and tables). With --target gpu also build TensorRT plans "
        "(encoder.plan, qpm.plan, decoder.plan) for HR photos up to 6144x4096 in either orientation; this "
        "needs an NVIDIA GPU and `pip install 'hyperthumbnail[gpu]'`, and the plans only load in the same "
        "TensorRT version. --check compares ONNX Runtime with PyTorch (and TensorRT with ONNX Runtime) on "
        "a noise image, a photo-like image and a batch of 2, prints a table and fails on a mismatch.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    p.add_argument("--target", choices=("cpu", "gpu"), default="cpu",
                   help="cpu (default): ONNX only, for ONNX Runtime serving; gpu: ONNX + TensorRT plans")
    p.add_argument("--fp16", action="store_true",
                   help="fp16 TensorRT encoder/decoder plans (the QPM plan stays fp32: it rounds); gpu only")
    p.add_argument("--weights", metavar="PATH", default=None,
                   help="weights (.safetensors) or training checkpoint (.pt); default: the shipped weights for --scale")
    p.add_argument("--scale", type=int, choices=(2, 4), default=4, help="which shipped weights to export (default 4)")
    p.add_argument("--check", action="store_true", help="run the parity checks and print a table")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18, the exporter's own)")
    p.add_argument("--max-batch", type=int, default=None, help="largest batch of the TensorRT profiles (default 2)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    if args.fp16 and args.target != "gpu":
        raise CLIError("--fp16 applies to TensorRT plans: use it with --target gpu")
    # Fail before minutes of export when the GPU half cannot run here.
    from ..export.trt_build import DEFAULT_MAX_BATCH, GPUUnavailableError, require_tensorrt
    if args.target == "gpu":
        try:
            require_tensorrt()
        except GPUUnavailableError as exc:
            raise CLIError(str(exc)) from exc

    from ..export import onnx_export

    console = Console()
    try:
        model, sha = onnx_export.load_export_model(args.weights, args.scale)
    except FileNotFoundError as exc:
        raise CLIError(f"{exc} (train a model or pass --weights PATH)") from exc
    out = Path(args.out)
    opset = args.opset or onnx_export.DEFAULT_OPSET
    # The served encoder and decoder (Triton) take and give uint8 HWC: a GPU export builds their
    # plans from encoder_u8 / decoder_u8 (trt_build.SERVED_GRAPHS).
    names = onnx_export.GRAPH_NAMES + (("encoder_u8", "decoder_u8") if args.target == "gpu" else ())
    for name in names:
        start = time.perf_counter()
        with console.status(f"exporting {name}.onnx"):
            path = onnx_export.export_graph(model, name, out / f"{name}.onnx", opset)
        console.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s)")
    console.print(f"wrote {onnx_export.write_manifest(model, out, opset, sha)}")

    plans: dict[str, Path] = {}
    if args.target == "gpu":
        from ..export.trt_build import build_plans

        start = time.perf_counter()
        with console.status("building TensorRT plans (takes minutes)"):
            plans = build_plans(out, scale=model.scale, fp16=args.fp16, max_batch=args.max_batch or DEFAULT_MAX_BATCH)
        for path in plans.values():
            console.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
        console.print(f"TensorRT build took {time.perf_counter() - start:.0f} s")

    if args.check:
        with console.status("checking parity"):
            ok = _check(console, model, out, plans)
        if not ok:
            raise CLIError("parity check failed (see the table above)")
    return 0


def _check(console, model, out: Path, plans: dict[str, Path]) -> bool:
    """Print the ORT-vs-PyTorch table (and TensorRT-vs-ORT where plans exist); True if all pass."""
    from rich.table import Table

    from ..export.parity import HR_TOLERANCE, OnnxGraphs, compare_with_torch, sample_images

    graphs = OnnxGraphs(out)
    images = sample_images(*CHECK_SIZE)
    cases = [(name, image, None) for name, image in images.items()]
    cases.append(("batch 2, scale 0.5/2", np.concatenate(list(images.values())),
                  np.array([0.5, 2.0], np.float32)))
    results = [compare_with_torch(model, graphs, image, name, scale) for name, image, scale in cases]

    table = Table(title="ONNX Runtime (CPU) vs PyTorch")
    for column in ("input", "coef |Δ|", "QPM Δ", "q ties", "|Δq|", "tie dist", "tables", "HR |Δ|", "ok"):
        table.add_column(column)
    for r in results:
        table.add_row(r.name, f"{r.coef_max_diff:.1e}", str(r.qpm_mismatches), f"{r.mismatches}/{r.coefficients}",
                      str(r.max_q_step), f"{r.worst_tie_distance:.0e}", "equal" if r.tables_equal else "DIFFER",
                      f"{r.hr_max_diff * 255:.4f}", "yes" if r.ok else "NO")
    console.print(table)
    console.print(f"coef |Δ|: encoder output; QPM Δ: QPM on identical coefficients; q ties: encode-chain "
                  f"mismatches (allowed only at rounding ties); HR |Δ| in 8-bit levels (limit {HR_TOLERANCE * 255:.0f})")
    ok = all(r.ok for r in results)
    if plans:
        ok = _check_plans(console, graphs, out, plans, next(iter(images.values()))) and ok
    return ok


def _check_plans(console, graphs, out: Path, plans: dict[str, Path], image: np.ndarray) -> bool:
    """TensorRT vs ONNX Runtime on the same inputs; the QPM plan (fp32) must give the same integers."""
    from rich.table import Table

    from ..export.trt_build import check_plan

    coefficients = graphs.run("encoder", image=image)["coefficients"]
    scale = np.ones(image.shape[0], np.float32)
    q = graphs.run("qpm", coefficients=coefficients, table_scale=scale)
    inputs = {
        "encoder": {"image": image},
        "qpm": {"coefficients": coefficients, "table_scale": scale},
        "decoder": {"quantized": q["quantized"], "tables": q["tables"]},
    }
    table = Table(title="TensorRT vs ONNX Runtime (CPU)")
    for column in ("graph", "output", "max|Δ|"):
        table.add_column(column)
    ok = True
    for name, plan in plans.items():
        for output, diff in check_plan(plan, out / f"{name}.onnx", inputs[name]).items():
            table.add_row(name, output, f"{diff:.3g}")
            if name == "qpm":  # tables exact; coefficients off by one only at rounding ties
                ok = ok and diff <= (0 if output == "tables" else 1)
    console.print(table)
    return ok
