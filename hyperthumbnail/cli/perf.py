"""`hyperthumbnail perf`: perf_analyzer-style concurrency sweep against a running server.

Two engines measure it: our load generator (`hyperthumbnail.client.perf`, the default where the
real tool is missing) or NVIDIA's perf_analyzer (`hyperthumbnail.client.perf_analyzer`), given
the same options. Inputs in `hyperthumbnail.client.perf_inputs`. Writes a rich table,
`--output` JSON (naming the engine and its version) and a CSV next to it; exits 1 if any
request failed.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

from ..benchmarks.machine import machine_info
from ..interface import ADMIN_HEADER, ADMIN_KEY_ENV, DECODE_MODEL, ENSEMBLES, MODELS
from .errors import CLIError

DEFAULT_WINDOW_MS = 5000.0
# Auto windows hold about this many requests of the probed length (perf_analyzer ends a run on a
# window in which nothing completed, and 1-2 requests a window never agree on p95).
REQUESTS_PER_WINDOW = 4
# The probe times this many requests and keeps the faster: a server's first request of a new shape
# also prepares its kernels (a 6K decode with one core busy: 12 s first, 8.9 s the next).
PROBE_REQUESTS = 2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "perf", help="load-test the ensembles on a running server (perf_analyzer-style)",
        description="For each concurrency level N, N threads each keep one request in flight; after a "
        "warm-up, measurement windows repeat until the last 3 agree within --stability % on throughput "
        "and p95 latency (or --max-windows, then the level is flagged unstable). Reports throughput, "
        "p50/p90/p95/p99/mean latency, errors, and the server-side queue/compute split from Triton's "
        "statistics for the ensemble and each step. The input is a real photo resized and cropped to "
        "the resolution (../shared/datasets/highres), or an image FILE; decode inputs are encoded once "
        "by the server first. --engine perf_analyzer runs NVIDIA's perf_analyzer (one run per level) with "
        "the same options and payload and reads its report into the same table/JSON/CSV. See docs/client.md.",
    )
    p.add_argument("--url", default=None, metavar="HOST:PORT[,HOST:PORT...]",
                   help="server, or several (requests go round robin; e.g. the replicas' own ports for --shm) "
                   "(default 127.0.0.1:8000 http, :8001 grpc)")
    p.add_argument("--protocol", choices=("http", "grpc"), default="http", help="(default %(default)s)")
    p.add_argument("--model", choices=ENSEMBLES, default=DECODE_MODEL, help="(default %(default)s)")
    p.add_argument("--resolution", default="1080p", metavar="1080p|4k|6k|WxH|FILE",
                   help="input size (6k = 6144x4096, 4k = 3840x2160, 1080p = 1920x1080) or an image file "
                   "(default %(default)s)")
    p.add_argument("--concurrency", default="1", metavar="START:END[:STEP]", help="concurrency levels (default %(default)s)")
    p.add_argument("--output", default=None, metavar="FILE.json", help="write the results as JSON (+ .csv next to it)")
    p.add_argument("--shm", action="store_true", help="image tensors through system shared memory (local server)")
    p.add_argument("--admin-key", default=None, metavar="KEY",
                   help="the server's admin key, needed by --shm when the server restricts its admin APIs "
                   "(default $HYPERTHUMBNAIL_ADMIN_KEY)")
    p.add_argument("--measurement-interval-ms", type=float, default=None, metavar="MS",
                   help=f"window length (default: {DEFAULT_WINDOW_MS:g}, or {REQUESTS_PER_WINDOW} requests' time "
                   f"where one request takes longer: the faster of {PROBE_REQUESTS} requests timed before the sweep)")
    p.add_argument("--stability", type=float, default=10.0, metavar="PCT",
                   help="allowed max/min spread of throughput and p95 over the last 3 windows (default %(default)g)")
    p.add_argument("--max-windows", type=int, default=10, metavar="N",
                   help="windows per level before giving up on stability (default %(default)s)")
    p.add_argument("--warmup", type=int, default=2, metavar="N",
                   help="completed requests discarded at the start of each level (default %(default)s)")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S", help="per-request timeout (default %(default)g)")
    p.add_argument("--engine", choices=("builtin", "perf_analyzer"), default=None,
                   help="who sends the load: our generator or NVIDIA's perf_analyzer (`make setup` installs it "
                   "into the venv); default perf_analyzer where it is installed, else builtin")
    p.add_argument("--write-input-data", default=None, metavar="FILE.json",
                   help="only write perf_analyzer --input-data JSON for this model/resolution (and print the "
                   "perf_analyzer command); no load test")
    p.set_defaults(func=run)


def _timed(call, client) -> float:
    started = time.perf_counter()
    call(client)
    return time.perf_counter() - started


def auto_window_ms(request_s: float) -> float:
    """Window length for requests that take `request_s`: the default, or whole seconds that hold
    `REQUESTS_PER_WINDOW` of them (e.g. a 6.6 s 6K decode -> 27 s windows)."""
    return max(DEFAULT_WINDOW_MS, 1000.0 * math.ceil(REQUESTS_PER_WINDOW * request_s))


def _server_version(client) -> str | None:
    from ..client.errors import TRANSLATED

    try:
        meta = client.triton.get_server_metadata(**({"as_json": True} if client.options.protocol == "grpc" else {}))
    except TRANSLATED:
        return None
    return meta.get("version")


def _flat(row: dict) -> dict:
    """One CSV row: the client numbers plus the server split of the ensemble and each step."""
    out = {k: v for k, v in row.items() if k != "server"}
    server = row.get("server") or {}
    models = {server["model"]["name"]: server["model"], **server.get("composing", {})} if server else {}
    for name, split in models.items():
        for key, value in split.items():
            if key != "name":
                out[f"{name}.{key}"] = value
    return out


def _table(config: dict, results: list[dict]):
    from rich.table import Table

    engine = config["engine"] + (f" {config['perf_analyzer_version']}" if config["perf_analyzer_version"] else "")
    table = Table(title=f"{config['model']} {config['resolution']} via {config['protocol']}"
                  + (" +shm" if config["shm"] else "") + f" ({engine})",
                  caption="latencies in ms; srv: Triton statistics summed over the ensemble's steps, per request")
    for column in ("conc", "infer/s", "p50", "p90", "p95", "p99", "mean", "errors", "windows", "stable",
                   "srv queue", "srv compute"):
        table.add_column(column, justify="right")
    for r in results:
        steps = (r.get("server") or {}).get("composing", {}).values()
        queue = sum(s["queue_ms"] or 0 for s in steps)
        compute = sum((s["compute_input_ms"] or 0) + (s["compute_infer_ms"] or 0) + (s["compute_output_ms"] or 0)
                      for s in steps)
        table.add_row(str(r["concurrency"]), f"{r['throughput']:.3f}", *(f"{r[k]:.0f}" for k in
                      ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms")), str(r["errors"]), str(r["windows"]),
                      "yes" if r["stable"] else "[yellow]no[/yellow]", f"{queue:.0f}", f"{compute:.0f}")
    return table


def _perf_analyzer_command(args: argparse.Namespace, url: str, path: str, output_bytes: int | None) -> str:
    shm = ""
    if args.shm:
        shm = " --shared-memory system" + (f" --output-shared-memory-size {output_bytes}" if output_bytes else "")
    return (f"perf_analyzer -m {args.model} -u {url} -i {args.protocol} --input-data {path}"
            f" --concurrency-range {args.concurrency} -p {args.measurement_interval_ms:.0f}"
            f" -s {args.stability:g} -r {args.max_windows} --percentile 95{shm} -f perf_analyzer.csv")


def _engine(args: argparse.Namespace) -> tuple[str, Path | None, str | None]:
    """(engine, perf_analyzer binary, its version); --engine perf_analyzer without the binary is an error."""
    from ..client.perf_analyzer import PerfAnalyzerError, binary_version, find_binary

    binary = find_binary()
    # What perf_analyzer 2.48 cannot do: shared memory for a model with optional inputs (encode's
    # TABLE_SCALE), several servers at once, and request headers (the admin key --shm may need) over gRPC.
    cannot = []
    if args.shm and any(tensor.optional for tensor in MODELS[args.model].inputs):
        cannot.append(f"--shm with {args.model} (perf_analyzer refuses shared memory for optional inputs)")
    if args.url and "," in args.url:
        cannot.append("several --url servers (perf_analyzer takes one)")
    if args.shm and args.protocol == "grpc" and _admin_key(args):
        cannot.append("--shm with an admin key over gRPC (perf_analyzer sends headers over HTTP only)")
    engine = args.engine or ("perf_analyzer" if binary and not cannot else "builtin")
    if engine == "builtin":
        return engine, None, None
    if cannot:
        raise CLIError(f"--engine perf_analyzer cannot run {cannot[0]}; use --engine builtin")
    if binary is None:
        raise CLIError("--engine perf_analyzer: no perf_analyzer in the venv or on the PATH (`make setup` installs it)")
    try:
        return engine, binary, binary_version(binary)
    except PerfAnalyzerError as exc:
        raise CLIError(str(exc)) from exc


def _admin_key(args: argparse.Namespace) -> str | None:
    return args.admin_key or os.environ.get(ADMIN_KEY_ENV) or None


def _run_perf_analyzer(args: argparse.Namespace, url: str, binary: Path, levels: list[int], settings,
                       image, thumbnail: bytes | None, on_level) -> list[dict]:
    """One perf_analyzer run per level on the same payload our engine would send."""
    from ..client.perf_analyzer import PerfAnalyzerError, PerfAnalyzerJob, run_levels
    from ..client.perf_inputs import write_input_data

    height, width = image.shape[:2]
    with tempfile.TemporaryDirectory(prefix="hyperthumbnail-perf-") as tmp:
        data = write_input_data(Path(tmp) / "input_data.json", args.model, image, thumbnail)
        key = _admin_key(args) if args.shm else None  # the restricted shared-memory APIs want it
        job = PerfAnalyzerJob(binary, args.model, url, args.protocol, data, settings, shm=args.shm,
                              output_shm_bytes=width * height * 3 if thumbnail is not None else None,
                              headers=[f"{ADMIN_HEADER}:{key}"] if key else [])
        try:
            return [r.to_json() for r in run_levels(job, levels, args.timeout, on_level)]
        except PerfAnalyzerError as exc:
            raise CLIError(str(exc)) from exc


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..client import HyperThumbnailClient, HyperThumbnailError
    from ..client.perf import PerfSettings, ServerStatistics, parse_concurrency, run_levels
    from ..client.perf_inputs import make_input, write_input_data

    console = Console(stderr=True, highlight=False)
    engine, binary, pa_version = _engine(args) if not args.write_input_data else ("builtin", None, None)
    try:
        levels = parse_concurrency(args.concurrency)
        perf_input = make_input(args.resolution)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    if (args.measurement_interval_ms is not None and args.measurement_interval_ms <= 0) or args.max_windows < 1 \
            or args.warmup < 0 or args.stability <= 0:
        raise CLIError("--measurement-interval-ms and --stability must be > 0, --max-windows >= 1, --warmup >= 0")
    height, width = perf_input.image.shape[:2]
    console.print(f"input: {perf_input.source}")

    def connect() -> HyperThumbnailClient:
        return HyperThumbnailClient(args.url, protocol=args.protocol, timeout_s=args.timeout, use_shm=args.shm,
                                    admin_key=args.admin_key)

    with connect() as client:
        if not client.is_ready():
            raise CLIError(f"no ready HyperThumbnail server at {args.protocol}://{client.options.url}")
        thumbnail = None
        try:
            if args.model == DECODE_MODEL:
                console.print("encoding the input once on the server (the decode requests' payload) ...")
                thumbnail = client.encode(perf_input.image)
            image = perf_input.image
            call = (lambda c: c.decode(thumbnail)) if thumbnail is not None else (lambda c: c.encode(image))
            probe_s = None
            if args.measurement_interval_ms is None:
                probe_s = min(_timed(call, client) for _ in range(PROBE_REQUESTS))
                args.measurement_interval_ms = auto_window_ms(probe_s)
                console.print(f"one request took {probe_s:.2f} s: measurement windows of "
                              f"{args.measurement_interval_ms / 1e3:g} s")
            if args.write_input_data:
                path = write_input_data(args.write_input_data, args.model, perf_input.image, thumbnail)
                output_bytes = width * height * 3 if args.model == DECODE_MODEL else None
                print(f"wrote {path} ({args.model}, {width}x{height})")
                print("run the real perf_analyzer with:\n  "
                      + _perf_analyzer_command(args, client.options.url, str(path), output_bytes))
                return 0
            stats = ServerStatistics(client, args.model)
        except HyperThumbnailError as exc:
            raise CLIError(str(exc)) from exc

        config = {
            "engine": engine, "perf_analyzer_version": pa_version,
            "machine": machine_info(), "url": client.options.url, "protocol": args.protocol, "model": args.model,
            "resolution": f"{width}x{height}", "input": perf_input.source, "shm": args.shm,
            "thumbnail_bytes": len(thumbnail) if thumbnail is not None else None,
            "concurrency": levels, "measurement_interval_ms": args.measurement_interval_ms, "probe_request_s": probe_s,
            "stability_pct": args.stability, "max_windows": args.max_windows,
            "warmup": args.warmup if engine == "builtin" else None,  # perf_analyzer 2.48 has no warm-up
            "server_version": _server_version(client),
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }

        def on_window(level: int, window) -> None:
            console.print(f"concurrency {level}: window {window.end - window.start:.1f} s, "
                          f"{len(window.latencies)} ok, {window.errors} errors, "
                          f"{window.throughput:.3f} infer/s, p95 {window.p95 * 1e3:.0f} ms")

        settings = PerfSettings(measurement_interval_s=args.measurement_interval_ms / 1e3,
                                stability_pct=args.stability, max_windows=args.max_windows, warmup=args.warmup)
        if engine == "perf_analyzer":
            console.print(f"engine: perf_analyzer {pa_version} ({binary}), one run per concurrency level")
            results = _run_perf_analyzer(
                args, client.options.url, binary, levels, settings, perf_input.image, thumbnail,
                lambda r: console.print(f"concurrency {r.concurrency}: {r.windows} windows, "
                                        f"{'stable' if r.stable else 'unstable'}, {r.errors} errors"
                                        + (f" ({r.note})" if r.note else "")))
        else:
            results = [r.to_json() for r in run_levels(connect, call, levels, settings, stats, on_window)]
    config["load_average_1m_end"] = round(os.getloadavg()[0], 2)

    Console(width=None if sys.stdout.isatty() else 132).print(_table(config, results))  # no squeezing in logs
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"config": config, "results": results}, indent=2) + "\n")
        rows = [_flat(r) for r in results]
        with out.with_suffix(".csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
            writer.writeheader()
            writer.writerows(rows)
        console.print(f"wrote {out} and {out.with_suffix('.csv')}")
    failed = sum(r["errors"] for r in results)
    if failed:
        first = next(r["first_error"] for r in results if r["first_error"])
        print(f"hyperthumbnail perf: {failed} requests failed; first: {first}", file=sys.stderr)
        return 1
    return 0
