"""`hyperthumbnail serve`: build the model repository if needed and run the embedded Triton server
(one process, or N replicas behind nginx with `--replicas N`)."""
from __future__ import annotations

import argparse
import os
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
        "Exits non-zero with the reason if a model fails to load. With --build-only --target gpu|openvino "
        "it writes a repository for the NGC Triton container instead (see docs/serving.md). "
        "--replicas N runs N tritonservers (own internal ports, metrics on --metrics-port + i) behind "
        "nginx on the front ports: per-request balancing of HTTP and gRPC, a request whose replica dies "
        "is resent to another, a replica that exits is restarted (docs/scaleout.md). "
        "Admin APIs (shared memory, model repository, logging, trace) need an admin key when serving "
        "replicas or binding beyond loopback: --admin-key, else $HYPERTHUMBNAIL_ADMIN_KEY, else one is "
        "generated and printed once; inference, health, metadata, statistics and metrics stay open.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model-repository", default="build/model_repository", metavar="DIR|URI",
                   help="repository to serve; a DIR is built here if missing or stale (a repository not made by "
                   "this command is served as is unless --rebuild); an object-storage URI (s3://bucket/path, "
                   "s3://http://HOST:PORT/bucket/path; see `hyperthumbnail repository publish`) is read by "
                   "tritonserver itself, with credentials from the AWS_* environment variables")
    p.add_argument("--host", default="127.0.0.1", help="address to bind HTTP, gRPC and metrics to (0.0.0.0: all)")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--weights", default=None, metavar="PATH", help="weights or checkpoint (default: shipped weights)")
    p.add_argument("--scale", type=int, choices=(2, 4), default=4)
    p.add_argument("--rebuild", action="store_true", help="rebuild the repository even if it is up to date")
    p.add_argument("--target", choices=("cpu", "gpu", "openvino"), default="cpu",
                   help="repository flavour: cpu (Python-backend models, served here); gpu (onnxruntime/TensorRT "
                   "backends) and openvino (the neural models on Triton's own openvino backend, for CPU "
                   "deployments in the NGC Triton container) are for the NGC container and need --build-only "
                   "(docs/serving.md)")
    p.add_argument("--plans", default=None, metavar="DIR", help="gpu target: directory of <model>.plan TensorRT plans")
    p.add_argument("--plan-max-batch", type=int, default=None, metavar="N",
                   help="gpu target: largest batch of the plans' profile (default: hyperthumbnail export's)")
    p.add_argument("--build-only", action="store_true", help="build the repository and exit")
    p.add_argument("--quiet", action="store_true", help="do not stream the server log")
    p.add_argument("--log-file", default=None, metavar="PATH", help="also append the server log to this file")
    p.add_argument("--log-verbose", type=int, default=0, help="tritonserver --log-verbose level")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the models to load")
    p.add_argument("--replicas", type=int, default=1, metavar="N",
                   help="tritonserver processes behind nginx on the front ports (1: one server, no nginx)")
    p.add_argument("--nginx", default=None, metavar="PATH",
                   help="nginx binary for --replicas > 1 (default: found on PATH or in /usr/sbin)")
    p.add_argument("--admin-key", default=None, metavar="KEY",
                   help="key for the restricted admin APIs, sent as header 'admin-key' (HTTP) or "
                   "'triton-grpc-protocol-admin-key' (gRPC); default $HYPERTHUMBNAIL_ADMIN_KEY, else generated "
                   "when serving replicas or binding beyond loopback")
    p.add_argument("--unrestricted", action="store_true",
                   help="leave every admin API open to every client (only on a trusted network)")
    p.set_defaults(func=run)


class _Stop(Exception):
    """SIGINT or SIGTERM arrived."""


def _raise_stop(signum, frame):
    raise _Stop()


def _prepare_repository(args: argparse.Namespace) -> Path | str:
    from ..serving.object_store import is_remote
    from ..serving.repository import RepositoryError, build_repository, read_stamp

    if is_remote(args.model_repository):
        if args.rebuild or args.weights or args.build_only:
            raise CLIError(f"{args.model_repository} is on object storage: build and upload it with "
                           "`hyperthumbnail repository publish` (--rebuild, --weights and --build-only need a local DIR)")
        return args.model_repository
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
    if args.replicas < 1:
        raise CLIError("--replicas must be at least 1")
    if args.target != "cpu" and not args.build_only:
        raise CLIError(f"the embedded server runs the CPU target only: use --target {args.target} --build-only and "
                       "serve the repository with the NGC Triton container (docs/serving.md)")
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


def _stream(line: str) -> None:
    sys.stderr.write(line)
    sys.stderr.flush()


def _admin_key(args: argparse.Namespace) -> tuple[str | None, bool]:
    """(key or None, whether it was generated). Restricted by default with replicas or beyond loopback."""
    from ..interface import ADMIN_KEY_ENV
    from ..serving.access import AdminKeyError, check_admin_key, generate_admin_key, is_loopback

    needed = args.replicas > 1 or not is_loopback(args.host)
    if args.unrestricted:
        if args.admin_key:
            raise CLIError("--unrestricted and --admin-key contradict each other")
        if needed:
            print("hyperthumbnail: WARNING: --unrestricted: any client can register shared memory and load or "
                  "unload models", file=sys.stderr, flush=True)
        return None, False
    key = args.admin_key or os.environ.get(ADMIN_KEY_ENV)
    if key:
        try:
            return check_admin_key(key), False
        except AdminKeyError as exc:
            raise CLIError(str(exc)) from exc
    return (generate_admin_key(), True) if needed else (None, False)


def _admin_lines(key: str | None, generated: bool) -> str:
    from ..interface import ADMIN_HEADER, ADMIN_KEY_ENV, GRPC_ADMIN_HEADER
    from ..serving.server_flags import RESTRICTED_APIS

    if key is None:
        return "  admin APIs: open to every client\n"
    shown = f"{key} (generated; shown only now)" if generated else "as given"
    return (f"  admin key: {shown}\n"
            f"    {', '.join(RESTRICTED_APIS)} APIs need header '{ADMIN_HEADER}' (HTTP) / '{GRPC_ADMIN_HEADER}' "
            f"(gRPC);\n    the SDK and `hyperthumbnail perf` send it from ${ADMIN_KEY_ENV}\n")


def _serve(args: argparse.Namespace, repo: Path | str) -> int:
    from ..serving.access import restricted_api_args
    from ..serving.server_log import failure_reasons
    from ..serving.server_process import TritonServer, TritonServerError

    key, generated = _admin_key(args)
    if args.replicas > 1:
        return _serve_replicas(args, repo, key, generated)
    stream = _stream
    server = TritonServer(repo, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                          metrics_port=args.metrics_port, log_callback=None if args.quiet else stream,
                          log_file=args.log_file, log_verbose=args.log_verbose,
                          extra_args=restricted_api_args(key) if key else ())
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
              + _admin_lines(key, generated) +
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


def _serve_replicas(args: argparse.Namespace, repo: Path | str, key: str | None, generated: bool) -> int:
    from ..serving.nginx import NginxError
    from ..serving.replicas import ReplicaSet
    from ..serving.server_process import TritonServerError

    if args.log_file or args.log_verbose:
        raise CLIError("--log-file and --log-verbose are for one server; with --replicas the logs of all "
                       "replicas stream to stderr, each line prefixed [replica i]")
    replicas = ReplicaSet(repo, args.replicas, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                          metrics_port=args.metrics_port, admin_key=key, nginx=args.nginx,
                          log_callback=None if args.quiet else _stream, start_timeout=args.timeout)
    try:
        try:
            replicas.start()
        except (TritonServerError, NginxError) as exc:
            raise CLIError(str(exc)) from exc
        metrics = "\n".join(f"  replica {r.index}  metrics {r.server.metrics_url}  (internal HTTP {r.server.http_url}, "
                            f"gRPC {r.server.grpc_url})" for r in replicas.replicas)
        print(f"hyperthumbnail: {args.replicas} Triton replicas are ready behind nginx (models from {repo})\n"
              f"  HTTP     http://{replicas.http_url}\n"
              f"  gRPC     {replicas.grpc_url}\n"
              f"{metrics}\n"
              "  ensembles: hyperthumbnail_encode (IMAGE -> THUMBNAIL), hyperthumbnail_decode (THUMBNAIL -> IMAGE)\n"
              + _admin_lines(key, generated) +
              "  a replica that exits is restarted; Ctrl+C to stop", flush=True)
        while replicas.is_running():
            time.sleep(0.5)
        raise CLIError(f"nginx exited unexpectedly: {replicas.balancer.log.strip() if replicas.balancer else ''}")
    except (KeyboardInterrupt, _Stop):
        print("hyperthumbnail: stopping nginx and the replicas...", file=sys.stderr, flush=True)
        replicas.stop()
        print("hyperthumbnail: stopped", file=sys.stderr, flush=True)
        return 0
    finally:
        replicas.stop()
