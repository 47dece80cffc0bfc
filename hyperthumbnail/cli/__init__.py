"""`hyperthumbnail` command line: one module per subcommand, each exposing `register(subparsers)`.

Errors are printed as one line on stderr with a non-zero exit code; `--debug` shows the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import CLIError

__all__ = ["CLIError", "build_parser", "main"]

# Subcommand modules (hyperthumbnail.cli.<name>), in the order `--help` lists them.
SUBCOMMANDS = ["encode", "decode", "serve", "repository", "export", "train", "perf", "bench", "viewer"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hyperthumbnail",
        description="Embed a high-resolution photo into a 4x-smaller standard JPEG thumbnail and "
        "rebuild the full photo from it (HyperThumbnail, CVPR 2023), in-process or through Triton.",
    )
    parser.add_argument("--debug", action="store_true", help="show full Python tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"hyperthumbnail.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"hyperthumbnail.cli.{name}":
                continue  # subcommand not built yet
            # A trimmed environment (e.g. a GPU training box) may lack a serving/client package:
            # keep the other subcommands working and say what this one needs.
            _register_unavailable(sub, name, exc.name or "?")
            continue
        module.register(sub)
    return parser


def _register_unavailable(sub: argparse._SubParsersAction, name: str, package: str) -> None:
    def fail(_: argparse.Namespace) -> int:
        raise CLIError(f"this command needs the Python package '{package}', which is not installed")

    p = sub.add_parser(name, help=f"(unavailable: needs '{package}')", add_help=True)
    p.set_defaults(func=fail)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("hyperthumbnail: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for the user; traceback only with --debug
        if args.debug:
            raise
        code = exc.exit_code if isinstance(exc, CLIError) else 1
        name = "" if isinstance(exc, CLIError) else f"{type(exc).__name__}: "
        message = " ".join(str(exc).split())  # one line, even for multi-line library messages
        print(f"hyperthumbnail {args.command}: error: {name}{message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
