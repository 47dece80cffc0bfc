"""`hyperthumbnail serve`: build the model repository if needed and run the embedded Triton server."""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from .errors import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="serve the encode/decode ensembles with the embedded Triton server (CPU)",
        description="Build the Triton model repository (ONNX export of the weights; skipped when it is "
        "up to date), start the tritonserver shipped in the nvidia-pytriton wheel, wait until every model "
        "is ready, print the endpoints and stream the server log until Ctrl+C / SIGTERM. "
        "Exits non-zero with the reason if a model fails to load. With --build-only --target gpu it "
        "writes a repository for the NGC Triton container instead (see docs/serving.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model-repository", default="build/model_repository", metavar="DIR",
                   help="repository to serve; built here if missing or stale (a repository not made by "
                   "this command is served as is unless --rebuild)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind HTTP, gRPC and metrics to (0.0.0.0: all)")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--weights", default=None, metavar="PATH", help="weights or checkpoint (default: shipped weights)")
    p.add_argument("--scale", type=int, choices=(2, 4), default=4)
    p.add_argument("--rebuild", action="store_true", help="rebuild the repository even if it is up to date")
    p.add_argument("--target", choices=("cpu", "gpu"), default="cpu",
                   help="repository flavour; gpu (onnxruntime/TensorRT backends) needs --build-only")
    p.add_argument("--plans", default=None, metavar="DIR", help="gpu target: directory of <model>.plan TensorRT plans")
    p.add_argument("--plan-max-batch", type=int, default=None, metavar="N",
                   help="gpu target: largest batch of the plans' profile (default: hyperthumbnail export's)")
    p.add_argument("--build-only", action="store_true", help="build the repository and exit")
    p.add_argument("--quiet", action="store_true", help="do not stream the server log")
    p.add_argument("--log-file", default=None, metavar="PATH", help="also append the server log to this file")
    p.add_argument("--log-verbose", type=int, default=0, help="tritonserver --log-verbose level")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the models to load")
    p.set_defaults(func=run)


class _Stop(Exception):
    """SIGINT or SIGTERM arrived."""


def _raise_stop(signum, frame):
    raise _Stop()


def _prepare_repository(args: argparse.Namespace) -> Path:
    from ..serving.repository import RepositoryError, build_repository, read_stamp

    repo = Path(args.model_repository)
    managed = not repo.exists() or read_stamp(repo) is not None
    if not (managed or args.rebuild):
        if args.weights:
            raise CLIError(f"{repo} was not built by hyperthumbnail; --weights needs --rebuild (which replaces it)")
        return repo
    try:
        return build_repository(repo, weights=args.weights, scale=args.scale, target=args.target,
                                plans=args.plans, plan_max_batch=args.plan_max_batch, rebuild=args.rebuild,
                                log=lambda message: print(f"hyperthumbnail: {message}", file=sys.stderr, flush=True))
    except (RepositoryError, FileNotFoundError, ValueError) as exc:
        raise CLIError(str(exc)) from exc


def run(args: argparse.Namespace) -> int:
    if args.target == "gpu" and not args.build_only:
        raise CLIError("the embedded server runs the CPU target only: use --target gpu --build-only and serve "
                       "the repository with the NGC Triton container (docs/serving.md)")
    # Explicit handlers: SIGINT may arrive ignored (e.g. started in the background by a script).
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        repo = _prepare_repository(args)
        if args.build_only:
            print(repo)
            return 0
        return _serve(args, repo)
    except _Stop:
        print("hyperthumbnail: interrupted", file=sys.stderr, flush=True)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _serve(args: argparse.Namespace, repo: Path) -> int:
    from ..serving.server_log import failure_reasons
    from ..serving.server_process import TritonServer, TritonServerError

    def stream(line: str) -> None:
        sys.stderr.write(line)
        sys.stderr.flush()

    server = TritonServer(repo, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                          metrics_port=args.metrics_port, log_callback=None if args.quiet else stream,
                          log_file=args.log_file, log_verbose=args.log_verbose)
    try:
        try:
            server.start(timeout=args.timeout)
        except TritonServerError as exc:
            raise CLIError(str(exc)) from exc
        print(f"hyperthumbnail: Triton is ready (models from {repo})\n"
              f"  HTTP     http://{server.http_url}\n"
              f"  gRPC     {server.grpc_url}\n"
              f"  metrics  {server.metrics_url}\n"
              "  ensembles: hyperthumbnail_encode (IMAGE -> THUMBNAIL), hyperthumbnail_decode (THUMBNAIL -> IMAGE)\n"
              "  Ctrl+C to stop", flush=True)
        while server.is_running():
            time.sleep(0.5)
        server.stop()  # joins the log reader so the reasons are complete
        reasons = "; ".join(failure_reasons(server.log_lines())) or "no reason in the log"
        raise CLIError(f"tritonserver exited unexpectedly with code {server.returncode}: {reasons}")
    except (KeyboardInterrupt, _Stop):
        print("hyperthumbnail: stopping Triton...", file=sys.stderr, flush=True)
        code = server.stop()
        print(f"hyperthumbnail: Triton stopped (exit code {code})", file=sys.stderr, flush=True)
        return 0
    finally:
        if server.is_running():
            server.stop()
