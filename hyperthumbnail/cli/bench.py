"""`hyperthumbnail bench rd|crops|speed|rd-curve|optimize|rate-proxy|scaleout|perf-engines|model-analyzer|tiling|fold|
soak|versus|decode-stages|decoder-width`: the benchmarks, each one command writing its results (JSON, CSV, PNG) into
benchmarks/results/ by default."""
from __future__ import annotations

import argparse
import importlib
import shlex
from pathlib import Path

from .errors import CLIError


def _csv_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def register(sub: argparse._SubParsersAction) -> None:
    from ..benchmarks import DATASETS, METHODS

    p = sub.add_parser("bench", help="benchmarks: rate-distortion, speed, rate control, optimization",
                       description="Benchmarks that write their results (JSON, CSV, PNG) into --out.")
    bench = p.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)

    rd = bench.add_parser(
        "rd", help="rate-distortion vs bicubic+JPEG and an SR baseline, per dataset",
        description="Per dataset and method: mean bpp (real .jpg bytes / HR pixels); HR PSNR (RGB, whole image: "
        "the headline), HR PSNR without a 2-pixel border, SSIM, PSNR-Y (JFIF) and BasicSR's Y PSNR; thumbnail "
        "PSNR vs Pillow bicubic (RGB, JFIF Y, JFIF Cb+Cr) and its worst image. Writes rd.json, rd.csv, "
        "rd_images.csv and rd_*.png (docs/benchmarks.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    rd.add_argument("--datasets", type=_csv_list, default=list(DATASETS), help="folders under --data-root")
    rd.add_argument("--data-root", default="../shared/datasets")
    rd.add_argument("--methods", type=_csv_list, default=None,
                    help=f"any of {','.join(METHODS)} (default: all; at --scale 2 all but sr_baseline, which is 4x)")
    rd.add_argument("--scale", type=int, choices=(2, 4), default=4,
                    help="which shipped model; --scale 2 writes rd_x2.* instead of rd.*")
    rd.add_argument("--weights", default=None, help="our weights (.safetensors/.pt); default: shipped for --scale")
    rd.add_argument("--thumbnails-by", default=None, metavar="WEIGHTS",
                    help="make our thumbnails with these (older) weights and rebuild them with --weights: how a new "
                    "decoder serves the thumbnails users already store")
    rd.add_argument("--runtime", choices=("openvino", "onnx", "torch"), default="openvino", help="our pipeline's runtime")
    rd.add_argument("--sr-weights", default=None, help="SR baseline weights; default: shipped")
    rd.add_argument("--out", default="benchmarks/results")
    rd.add_argument("--limit", type=int, default=None, help="first N images of each dataset")
    rd.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    rd.set_defaults(func=run_rd)

    crops = bench.add_parser(
        "crops", help="side-by-side crops: bicubic vs old vs new weights' thumbnails and rebuilt photos",
        description="For each image (default: Kodak kodim05, kodim08, Set14 comic): the old and new weights' .jpg "
        "(Pipeline.encode) and a bicubic JPEG of the new file's size; crops of the thumbnails as Pillow decodes "
        "them next to Pillow's bicubic downscale at --thumb-zoom nearest zoom, and of the rebuilt photos next to "
        "bicubic JPEG + bicubic up and the original at --photo-zoom. Writes <image>_thumbnail.png, "
        "<image>_photo.png, the .jpg files and crops.json.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    crops.add_argument("--new-weights", required=True, help="the new weights (.safetensors/.pt)")
    crops.add_argument("--old-weights", default=None, help="the old weights; default: shipped for the new ones' scale")
    crops.add_argument("--data-root", default="../shared/datasets", help="where kodak/ and set14/ are (default images)")
    crops.add_argument("--image", action="append", default=None, metavar="PATH:X,Y,W,H:X,Y,W,H",
                       help="an image with its thumbnail region and photo region in HR pixels, instead of the "
                       "default three (repeatable)")
    crops.add_argument("--thumb-zoom", type=int, default=4, help="nearest-neighbour zoom of the thumbnail crops")
    crops.add_argument("--photo-zoom", type=int, default=2, help="nearest-neighbour zoom of the photo crops")
    crops.add_argument("--runtime", choices=("openvino", "onnx", "torch"), default="openvino")
    crops.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    crops.add_argument("--out", default="benchmarks/results/crops")
    crops.set_defaults(func=_module_run("crops"))

    sp = bench.add_parser(
        "speed", help="encode/decode time per resolution and runtime, in-process vs Triton, vs the compute floor",
        description="Times encode and decode at each resolution (default 1080p, 4k, 6k) with each runtime variant "
        "(onnx: ONNX Runtime f32; openvino-f32; openvino: the default precision, bf16 where the CPU has it), "
        "in-process and through Triton (HTTP, gRPC, system shared memory; one embedded server per variant, one at a "
        "time), with a stage breakdown, peak memory per measurement, the compute floor of this CPU (graph GMACs over "
        "a measured peak MAC rate) and an EDSR-baseline decoder on ONNX Runtime at the largest resolution. Writes "
        "speed.json, speed.csv, speed.png. The full default run takes about half an hour on 2 idle cores.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sp.add_argument("--resolutions", "--resolution", dest="resolutions", default="1080p,4k,6k",
                    help="comma-separated: 1080p (1920x1080), 4k (3840x2160), 6k (6144x4096) or WxH")
    sp.add_argument("--variants", default="onnx,openvino-f32,openvino",
                    help="runtime variants: onnx (ONNX Runtime f32), openvino-f32, openvino (--precision auto)")
    sp.add_argument("--url", default=None, help="HTTP host:port of a running server (default: start one per variant); "
                    "it serves one variant: name it with --variants")
    sp.add_argument("--grpc-url", default=None, help="gRPC host:port of that server (with --url)")
    sp.add_argument("--protocols", type=_csv_list, default=["http", "grpc", "shm"],
                    help="Triton paths to time: http, grpc, shm (system shared memory over HTTP); '' via --no-triton")
    sp.add_argument("--no-triton", action="store_true", help="in-process (and EDSR) only")
    sp.add_argument("--no-edsr", action="store_true", help="skip the EDSR-baseline decoder")
    sp.add_argument("--weights", default=None, help="our weights; default: shipped")
    sp.add_argument("--image", default=None, help="input photo, resized+cropped to each resolution "
                    "(default: the first of <data-root>/highres, else a synthetic photo-like image)")
    sp.add_argument("--data-root", default="../shared/datasets")
    sp.add_argument("--repeats", default=None, help="timed runs per measurement (median reported): one number, or "
                    "one per resolution (default: 3, and 2 from 16 MP on)")
    sp.add_argument("--warmup", type=int, default=1, help="untimed runs before them (the first is the reference output)")
    sp.add_argument("--threads", type=int, default=0, help="in-process runtime threads (0 = all cores; servers use all)")
    sp.add_argument("--model-repository", default="build/bench/model_repository",
                    help="where the embedded servers' repositories are built (one folder per variant)")
    sp.add_argument("--out", default="benchmarks/results")
    sp.set_defaults(func=run_speed)

    curve = bench.add_parser(
        "rd-curve", help="rate-distortion curve of one model by rate control, vs bicubic+JPEG",
        description="For every image and target bpp: --target-bpp rate control (encoder once per image, a "
        "table-scale search per target), decode, and bicubic+JPEG 4:4:4 at the quality whose file is closest. "
        "Writes rd_curve.json and rd_curve.png (rd_curve_x2.* at --scale 2).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    curve.add_argument("--data", default="../shared/datasets/kodak", help="folder of test images")
    curve.add_argument("--targets", default="0.15,0.2,0.3,0.45", help="comma-separated target bpp values")
    curve.add_argument("--tolerance", type=float, default=0.03, help="relative tolerance of each target")
    curve.add_argument("--scale", type=int, choices=(2, 4), default=4,
                       help="which shipped weights (ignored with --weights); 2x results go to rd_curve_x2.*")
    curve.add_argument("--weights", default=None, help="weights (.safetensors/.pt); default: shipped for --scale")
    curve.add_argument("--runtime", choices=("openvino", "onnx", "torch"), default="openvino")
    curve.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    curve.add_argument("--limit", type=int, default=None, help="first N images")
    curve.add_argument("--out", default="benchmarks/results")
    curve.set_defaults(func=_module_run("rd_curve"))

    opt = bench.add_parser(
        "optimize", help="what encode --optimize N buys (HR/thumbnail PSNR, bpp) and what it costs",
        description="Per image: the plain encode, then --optimize with each N in --steps; every file decoded "
        "and measured like `bench rd`. Writes optimize.json.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    opt.add_argument("--data", default="../shared/datasets/kodak", help="folder of test images")
    opt.add_argument("--limit", type=int, default=4, help="first N images")
    opt.add_argument("--steps", default="10,30", help="comma-separated numbers of optimization steps")
    opt.add_argument("--table-scale", type=float, default=1.0, help="rate: QPM table scale of every encode")
    opt.add_argument("--lr", type=float, default=None, help="Adam step, in quantization steps (default: OptimizeConfig's)")
    opt.add_argument("--weights", default=None, help="weights (.safetensors/.pt); default: shipped")
    opt.add_argument("--runtime", choices=("openvino", "onnx", "torch"), default="openvino",
                     help="runtime of the plain encode and of every decode (the optimization itself is PyTorch)")
    opt.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    opt.add_argument("--out", default="benchmarks/results")
    opt.set_defaults(func=_module_run("optimize_encoding"))

    proxy = bench.add_parser(
        "rate-proxy", help="the training rate proxy against real .jpg bytes (needs a training checkpoint)",
        description="Per image: the rate model's bits (rounded and noisy coefficients), the calibrated training "
        "term and the real file's bits. Writes rate_proxy.json.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    proxy.add_argument("--checkpoint", default="runs/x4/best.pt", help="training checkpoint (.pt) with its rate model")
    proxy.add_argument("--data", default="../shared/datasets/kodak", help="folder of test images")
    proxy.add_argument("--out", default="benchmarks/results/rate_proxy.json", help="output JSON file")
    proxy.set_defaults(func=_module_run("rate_proxy"))

    scale = bench.add_parser(
        "scaleout", help="1 vs N replicas: `perf` through the front port of `serve --replicas N`",
        description="For each replica count: start `hyperthumbnail serve --replicas N`, run `hyperthumbnail perf` "
        "through its front port, and record the requests each replica served and the server CPU-s per request. "
        "Writes scaleout_r{N}.json/.csv and scaleout.json (docs/scaleout.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    scale.add_argument("--replicas", default="1,2", help="replica counts to compare")
    scale.add_argument("--model", default="hyperthumbnail_decode", choices=("hyperthumbnail_encode", "hyperthumbnail_decode"))
    scale.add_argument("--resolution", default="1080p")
    scale.add_argument("--concurrency", default="1:4")
    scale.set_defaults(func=_module_run("scaleout"))

    engines = bench.add_parser(
        "perf-engines", help="our load generator vs NVIDIA's perf_analyzer, one after the other on one server",
        description="Each case (decode/encode, 1080p/6K, HTTP/gRPC) runs `hyperthumbnail perf` with --engine builtin, "
        "then --engine perf_analyzer, against one server. Writes perf_engines.json/.csv/.png and each run's "
        "JSON/CSV in perf_engines/.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    engines.add_argument("--url", default=None, help="HTTP host:port of a running server (default: start one)")
    engines.add_argument("--grpc-url", default=None, help="gRPC host:port of that server (with --url)")
    engines.add_argument("--cases", type=_csv_list, default=None,
                         help="case names to (re)run, e.g. decode_6k_grpc_c1; the other cases already in "
                         "perf_engines.json are kept")
    engines.add_argument("--interval-ms", type=int, default=None, help="override the cases' measurement window")
    engines.add_argument("--max-windows", type=int, default=None, help="override the cases' window limit")
    engines.add_argument("--quick", action="store_true", help="one small case with 1 s windows (a smoke run)")
    engines.add_argument("--out", default="benchmarks/results")
    engines.set_defaults(func=_module_run("perf_engines"))

    analyzer = bench.add_parser(
        "model-analyzer", help="triton-model-analyzer (remote mode) on the decode ensemble's instances/batching",
        description="Starts a server in explicit model-control mode and runs model-analyzer's quick search over the "
        "decode ensemble's steps with the venv's perf_analyzer (needs `make model-analyzer`). Writes "
        "model_analyzer/ (its result tables, log, config, summary.json).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    analyzer.add_argument("--resolution", default="256x192", help="HR size of the decode input (a real photo cut to it)")
    analyzer.add_argument("--max-instances", type=int, default=2, help="instance counts searched per step")
    analyzer.add_argument("--max-batch", type=int, default=4, help="largest max_batch_size searched")
    analyzer.add_argument("--max-concurrency", type=int, default=2, help="largest client concurrency")
    analyzer.add_argument("--out", default="benchmarks/results")
    analyzer.set_defaults(func=_module_run("model_analyzer"))


    tiles = bench.add_parser(
        "tiling", help="whole vs tiled encode of real photos at the default precision (bf16 rounding ties)",
        description="Encodes each photo whole and in the smallest tiles, with the same runtime and precision "
        "(default: bf16 where the CPU has it), and records how many quantized coefficients differ, whether the "
        "tables agree, the thumbnails' PSNR against each other and both rebuilt photos' HR PSNR. Writes tiling.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    tiles.add_argument("folders", nargs="+", type=Path, help="folders of photos (e.g. ../shared/datasets/kodak samples/photos)")
    tiles.add_argument("--scale", type=int, choices=(2, 4), default=4)
    tiles.add_argument("--weights", default=None, help="default: the shipped weights for --scale")
    tiles.add_argument("--precision", choices=("auto", "f32", "bf16"), default="auto")
    tiles.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    tiles.add_argument("--out", default="benchmarks/results")
    tiles.set_defaults(func=_module_run("tiling"))


    fold = bench.add_parser(
        "fold", help="the decoder body with its bicubic skip folded into the LR tail vs the readable form",
        description="Exports both decoder_body forms from the same weights and runs them with the same runtime and "
        "precision: HR PSNR of each on --photos (the product's thumbnails), the two against each other, and the body "
        "alone at --resolution, alternating. Writes fold.json.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    fold.add_argument("--photos", type=Path, default=Path("../shared/datasets/kodak"))
    fold.add_argument("--resolution", default="6k", help="1080p, 4k, 6k, WxH or an image file (as `perf`)")
    fold.add_argument("--repeats", type=int, default=3, help="timed runs of each body")
    fold.add_argument("--weights", default=None, help="default: the shipped 4x weights")
    fold.add_argument("--precision", choices=("auto", "f32", "bf16"), default="auto")
    fold.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    fold.add_argument("--out", default="benchmarks/results")
    fold.set_defaults(func=_module_run("fold"))

    soak = bench.add_parser(
        "soak", help="a long stream of mixed photo sizes through `serve --replicas N`, with faults; memory sampled",
        description="Encode and decode requests of a seeded mix of photo sizes (0.3 MP to 8192x6144) over HTTP and "
        "gRPC through `hyperthumbnail serve --replicas N` (nginx), for --minutes; every response checked and compared "
        "with the in-process result; a replica SIGKILLed, clients giving up and a burst of malformed requests at "
        "stated times; the serving tree's PSS/RSS, /dev/shm, fds and queue time sampled. Writes soak.json and "
        "soak.png; exit 1 when issue #26's acceptance fails (docs/benchmarks.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    soak.add_argument("--minutes", type=float, required=True, help="how long new requests are sent")
    soak.add_argument("--replicas", type=int, default=2, help="replicas of the `serve` this command starts")
    soak.add_argument("--concurrency", type=int, default=2, help="requests in flight")
    soak.add_argument("--url", default=None, metavar="HTTP[,GRPC]",
                      help="an existing server's host:port (no replica is killed, no memory sampled)")
    soak.add_argument("--max-requests", type=int, default=100_000, help="stop after this many requests")
    soak.add_argument("--mix", default=None, help="size classes: names of the default mix or NAME=WxH:WEIGHT, "
                      "comma-separated (default: the stated mix, docs/benchmarks.md)")
    soak.add_argument("--per-class", type=int, default=2, help="photos per size class, each from another source")
    soak.add_argument("--photos", type=_csv_list, default=["../shared/datasets/highres"],
                      help="folders of extra source photos besides samples/photos (used when present)")
    soak.add_argument("--faults", type=_csv_list, default=["kill_replica", "disconnects", "malformed_burst"],
                      help="which faults (at 25%%, 50%%, 70%% of the run)")
    soak.add_argument("--compare-fraction", type=float, default=1.0,
                      help="share of responses byte-compared with the in-process result")
    soak.add_argument("--sample-every", type=float, default=2.0, help="seconds between memory samples")
    soak.add_argument("--seed", type=int, default=26)
    soak.add_argument("--out", default="benchmarks/results")
    soak.set_defaults(func=_module_run("soak"))

    versus = bench.add_parser(
        "versus", help="this checkout's `decode` against a git revision's, alternating, same venv",
        description="Checks REV out into a temporary git worktree, encodes PHOTO with REV's CLI, then runs "
        "`hyperthumbnail decode` of that thumbnail from REV and from this checkout in turn (fresh processes, one "
        "untimed round first), with this interpreter and its packages. Writes versus.json (wall times, the CLI's "
        "report lines, speed-up, PSNR between the two outputs) and versus.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    versus.add_argument("revision", help="git revision to compare against, e.g. c92aa8b")
    versus.add_argument("photo", help="photo to encode (with REV's CLI) and decode")
    versus.add_argument("--weights", default=None, help="weights for both (default: each revision's shipped ones)")
    versus.add_argument("--rounds", type=int, default=3, help="timed rounds, each version once per round")
    versus.add_argument("--work", default="build/versus", help="folder for the thumbnail and rebuilt photos")
    versus.add_argument("--out", default="benchmarks/results")
    versus.set_defaults(func=_module_run("versus"))

    stages = bench.add_parser(
        "decode-stages", help="where a CLI decode's time goes: JPEG, coefficient branch, body, crop, PNG, start",
        description="Times the steps `hyperthumbnail decode` takes on THUMBNAIL in one process (the product's code "
        "path, its two decoder graphs wrapped in timers; --repeats runs after an untimed one), splits the body by "
        "OpenVINO's per-operation counters, and runs the CLI once in a fresh process for its start, loading and "
        "exit. Writes decode_stages.json.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    stages.add_argument("thumbnail", help="a HyperThumbnail .jpg")
    stages.add_argument("--weights", default=None, help="default: the shipped 4x weights")
    stages.add_argument("--repeats", type=int, default=3, help="timed runs (median reported)")
    stages.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    stages.add_argument("--out", default="benchmarks/results")
    stages.set_defaults(func=_module_run("decode_stages"))

    width = bench.add_parser(
        "decoder-width", help="the decoder body's time at 6K for several widths (random weights), alternating",
        description="Exports the folded, uint8 decoder_body of random models with each --widths decoder_feats and "
        "times them with the default runtime and precision on the features of a --resolution photo, alternating. "
        "Writes decoder_width.json (issue #24: widen only where it is no slower).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    width.add_argument("--widths", default="24,32,40",
                       help="comma-separated decoder shapes, W (features) or WxB (features x residual blocks; "
                       "B defaults to the shipped 16); ratios are to the first")
    width.add_argument("--resolution", default="6k", help="1080p, 4k, 6k or WxH")
    width.add_argument("--repeats", type=int, default=3, help="timed runs of each body")
    width.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    width.add_argument("--out", default="benchmarks/results")
    width.set_defaults(func=_module_run("decoder_width"))


def _module_run(module_name: str):
    """`run(args)` of hyperthumbnail.benchmarks.<module_name>, imported only when it runs (torch is heavy)."""
    def run(args: argparse.Namespace) -> int:
        module = importlib.import_module(f"hyperthumbnail.benchmarks.{module_name}")
        try:
            return module.run(args)
        except (FileNotFoundError, ValueError) as exc:
            raise CLIError(str(exc)) from exc
    return run


def _command(args: argparse.Namespace, words: list[str]) -> str:
    return shlex.join(["hyperthumbnail", "bench", args.benchmark, *words])


def _given(*flags: tuple[str, object]) -> list[str]:
    """`--flag value` words for the optional flags that have a value (for the recorded command)."""
    return [word for flag, value in flags if value is not None for word in (flag, str(value))]


def run_rd(args: argparse.Namespace) -> int:
    from ..benchmarks import METHODS
    from ..benchmarks.rd import RDBenchmark, RDConfig, output_stem

    if args.methods is None:
        args.methods = [m for m in METHODS if args.scale == 4 or m != "sr_baseline"]
    words = ["--datasets", ",".join(args.datasets), "--data-root", args.data_root, "--methods", ",".join(args.methods),
             "--scale", str(args.scale), "--runtime", args.runtime, "--out", args.out]
    words += _given(("--weights", args.weights), ("--thumbnails-by", args.thumbnails_by), ("--sr-weights", args.sr_weights),
                    ("--limit", args.limit), ("--threads", args.threads or None))
    cfg = RDConfig(datasets=args.datasets, data_root=Path(args.data_root), methods=args.methods,
                   scale=args.scale, weights=args.weights, runtime=args.runtime,
                   thumbnail_weights=Path(args.thumbnails_by) if args.thumbnails_by else None,
                   sr_weights=args.sr_weights, out=Path(args.out),
                   limit=args.limit, threads=args.threads, command=_command(args, words))
    try:
        bench = RDBenchmark(cfg)
    except (FileNotFoundError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    results = bench.run()
    _print_rd(results)
    stem = output_stem(bench.scale)
    print(f"wrote {Path(args.out) / (stem + '.json')} (+ {stem}.csv, {stem}_images.csv, {stem}_psnr.png, "
          f"{stem}_thumbnail.png, {stem}_bars.png)")
    return 0


def _print_rd(results: dict) -> None:
    """Two tables (HR photo, thumbnail) so that each fits an 80-column terminal."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    rows = [(d, m, v) for d, per_method in results.items() if d != "meta" for m, v in per_method.items()]
    photo = Table(title="HR photo (means per dataset; PSNR in dB)", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in ("dataset", "method", "bpp", "RGB", "RGB\n-2px", "SSIM", "Y\nJFIF", "Y\nBasicSR"):
        photo.add_column(col, justify="left" if col in ("dataset", "method") else "right")
    for d, m, v in rows:
        photo.add_row(d, m, f"{v['bpp']:.4f}", f"{v['psnr']:.2f}", f"{v['psnr_border2']:.2f}", f"{v['ssim']:.4f}",
                      f"{v['psnr_y']:.2f}", f"{v['psnr_y_basicsr']:.2f}")
    thumb = Table(title="thumbnail vs Pillow bicubic (PSNR in dB)", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in ("dataset", "method", "RGB", "worst image", "Y", "CbCr"):
        thumb.add_column(col, justify="left" if col in ("dataset", "method") else "right")
    for d, m, v in rows:
        thumb.add_row(d, m, f"{v['lr_psnr']:.2f}", f"{v['lr_psnr_worst']:.2f} {v['lr_psnr_worst_image']}",
                      f"{v['lr_psnr_y']:.2f}", f"{v['lr_psnr_cbcr']:.2f}")
    console = Console()
    console.print(photo)
    console.print(thumb)


def run_speed(args: argparse.Namespace) -> int:
    from ..benchmarks.speed import (
        SpeedBenchmark,
        SpeedConfig,
        parse_repeats,
        parse_resolutions,
        parse_variants,
    )

    protocols = [] if args.no_triton else args.protocols
    unknown = sorted(set(protocols) - {"http", "grpc", "shm"})
    if unknown:
        raise CLIError(f"unknown protocols {unknown}; choose from http, grpc, shm")
    try:
        sizes = parse_resolutions(args.resolutions)
        variants = parse_variants(args.variants)
        repeats = parse_repeats(args.repeats, len(sizes)) if args.repeats is not None else None
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    if args.warmup < 1:
        raise CLIError("--warmup must be at least 1 (the first run is the reference output)")
    words = ["--resolutions", args.resolutions, "--variants", args.variants, "--warmup", str(args.warmup),
             "--out", args.out]
    words += ["--no-triton"] if args.no_triton else ["--protocols", ",".join(args.protocols)]
    words += ["--no-edsr"] if args.no_edsr else []
    words += _given(("--repeats", args.repeats), ("--url", args.url), ("--grpc-url", args.grpc_url),
                    ("--weights", args.weights), ("--image", args.image), ("--threads", args.threads or None))
    cfg = SpeedConfig(resolutions=sizes, variants=variants, url=args.url, grpc_url=args.grpc_url, protocols=protocols,
                      weights=args.weights, image=args.image, data_root=Path(args.data_root), repeats=repeats,
                      warmup=args.warmup, threads=args.threads, edsr=not args.no_edsr,
                      model_repository=Path(args.model_repository), out=Path(args.out), command=_command(args, words))
    try:
        bench = SpeedBenchmark(cfg)
    except (FileNotFoundError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    results = bench.run()
    _print_speed(results)
    print(f"wrote {Path(args.out) / 'speed.json'} (+ speed.csv, speed.png)")
    return 0


def _print_speed(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    def cell(r: dict | None, what: str) -> str:
        if not r:
            return "-"
        if what == "ms":
            return f"{r['total_ms'] / 1e3:.2f} s ({r['over_floor']:.1f}x)"
        peak = r.get("peak_rss_mb", r.get("client_peak_rss_mb"))
        server = r.get("server_peak_rss_mb")
        return f"{peak:.0f}" + (f" + server {server:.0f}" if server else "")

    console = Console()
    for key, per_variant in results["speed"].items():
        floor = results["floor_ms"][key]
        table = Table(title=f"{key}: median time (x the compute floor), peak RSS (MB)")
        for col in ("variant", "path", "encode", "decode", "encode RSS", "decode RSS"):
            table.add_column(col)
        for variant, paths in per_variant.items():
            for path, per_dir in paths.items():
                table.add_row(variant, path, cell(per_dir.get("encode"), "ms"), cell(per_dir.get("decode"), "ms"),
                              cell(per_dir.get("encode"), "rss"), cell(per_dir.get("decode"), "rss"))
        console.print(table)
        print("compute floor: " + ", ".join(f"{v} encode {f['encode'] / 1e3:.2f} s / decode {f['decode'] / 1e3:.2f} s"
                                            for v, f in floor.items()))
    print("peak MAC rate (GMAC/s): " + ", ".join(f"{p} {r}" for p, r in results["peak_rate"]["peak_gmac_per_s"].items()))
    for variant, per_res in results["ratios"]["onnx_over"].items():
        for key, per_dir in per_res.items():
            print(f"onnx / {variant} at {key}: " + "; ".join(
                f"{d} " + ", ".join(f"{path} {r}" for path, r in paths.items() if r is not None)
                for d, paths in per_dir.items()))
    for key in ("decode_6k_onnx_over_openvino", "edsr_over_ours_decode_total", "edsr_over_ours_gmacs_6k"):
        if key in results["ratios"]:
            print(f"{key}: {results['ratios'][key]}")
    differ = [f"{key} {variant} {path} {d}" for key, per_variant in results["speed"].items()
              for variant, paths in per_variant.items() for path, per_dir in paths.items()
              for d, r in per_dir.items() if r.get("equal_to_inprocess") is False]
    if differ:
        print("WARNING: served output differs from the in-process output of the same variant: " + "; ".join(differ))
