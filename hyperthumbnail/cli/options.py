"""Options several subcommands share, and what they build: where the model runs (in-process
runtime and weights) and the Triton server path (`--url`, protocol, shared memory).

Every subcommand imports this module at the top; it imports nothing heavy itself.
"""
from __future__ import annotations

import argparse

from .errors import CLIError

__all__ = ["add_runtime_options", "add_server_options", "make_pipeline"]


def add_runtime_options(p: argparse.ArgumentParser) -> None:
    """Where the model runs in-process (encode, decode)."""
    p.add_argument("--weights", default=None, help="weights (.safetensors) or training checkpoint (.pt); default: shipped")
    p.add_argument("--runtime", choices=("openvino", "onnx", "torch"), default="openvino",
                   help="in-process runtime (default openvino); the same runtime and precision as the "
                   "Triton server's repository give the same bytes")
    p.add_argument("--precision", choices=("auto", "f32", "bf16"), default="auto",
                   help="openvino: auto (default) = bf16 for the encoder and the decoder body where the CPU "
                   "has native bf16, f32 elsewhere; f32 everywhere; bf16 = as auto")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")


def make_pipeline(args: argparse.Namespace, scale: int = 4):
    """The in-process `Pipeline` the runtime options describe."""
    from ..pipeline import Pipeline

    try:
        return Pipeline(args.weights, scale=scale, runtime=args.runtime, threads=args.threads,
                        precision=getattr(args, "precision", "auto"))
    except (FileNotFoundError, ValueError) as exc:
        raise CLIError(str(exc)) from exc


def add_server_options(p: argparse.ArgumentParser) -> None:
    """--url / --protocol / --shm / --concurrency / --timeout (the server path)."""
    g = p.add_argument_group("through a Triton server (default: in-process)")
    g.add_argument("--url", default=None, metavar="HOST:PORT",
                   help="send the work to the hyperthumbnail ensembles on this Triton server")
    g.add_argument("--protocol", choices=("http", "grpc"), default="http")
    g.add_argument("--shm", action="store_true", help="pass image tensors through system shared memory "
                   "(the server must run on this machine)")
    g.add_argument("--concurrency", type=int, default=2, metavar="N",
                   help="folder mode through a server: requests in flight at once")
    g.add_argument("--timeout", type=float, default=300.0, metavar="S", help="per-request timeout (server path)")
