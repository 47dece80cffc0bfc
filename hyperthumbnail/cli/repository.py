"""`hyperthumbnail repository publish URI`: build the model repository if needed and upload it to
object storage, where every replica's tritonserver reads it (`serve --model-repository URI`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "repository", help="model repository on object storage (publish)",
        description="Model repositories for many replicas: `publish` uploads one to object storage.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    pub = actions.add_parser(
        "publish", help="build (if needed) and upload the model repository to s3://...",
        description="Build the model repository like `hyperthumbnail serve --build-only` (skipped when up to "
        "date) and upload it to URI, written the way tritonserver reads it: s3://bucket/path (AWS), or "
        "s3://http://HOST:PORT/bucket/path for an S3-compatible endpoint (MinIO, Ceph, moto). Credentials and "
        "region come from the standard AWS environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
        "AWS_SESSION_TOKEN, AWS_DEFAULT_REGION; AWS_ENDPOINT_URL when the URI names no endpoint), which "
        "tritonserver reads too. Empty version folders get a marker file (object storage has no empty "
        "folders, and Triton needs a version folder); objects under the path that the repository does not "
        "have are removed. Needs boto3: pip install 'hyperthumbnail[s3]'. Then: hyperthumbnail serve "
        "--model-repository URI [--replicas N]. gs:// and as:// are read by tritonserver too, but upload them "
        "with your cloud's tool (docs/scaleout.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    pub.add_argument("uri", metavar="URI", help="s3://bucket/path or s3://http://HOST:PORT/bucket/path")
    pub.add_argument("--model-repository", default="build/model_repository", metavar="DIR",
                     help="local repository to upload; built here if missing or stale")
    pub.add_argument("--weights", default=None, metavar="PATH", help="weights or checkpoint (default: shipped weights)")
    pub.add_argument("--scale", type=int, choices=(2, 4), default=4)
    pub.add_argument("--target", choices=("cpu", "gpu"), default="cpu",
                     help="repository flavour: cpu (embedded server) or gpu (NGC Triton container)")
    pub.add_argument("--plans", default=None, metavar="DIR", help="gpu target: directory of <model>.plan TensorRT plans")
    pub.add_argument("--rebuild", action="store_true", help="rebuild the repository even if it is up to date")
    pub.add_argument("--create-bucket", action="store_true", help="create the bucket if it does not exist")
    pub.set_defaults(func=run_publish)


def run_publish(args: argparse.Namespace) -> int:
    from ..serving.object_store import ObjectStoreError, parse_s3, publish
    from ..serving.repository import RepositoryError, build_repository, read_stamp

    try:
        parse_s3(args.uri)  # a bad URI fails before a minute of export
    except ObjectStoreError as exc:
        raise CLIError(str(exc)) from exc

    def log(message: str) -> None:
        print(f"hyperthumbnail: {message}", file=sys.stderr, flush=True)

    repo = Path(args.model_repository)
    if repo.exists() and read_stamp(repo) is None and not args.rebuild:
        if args.weights:
            raise CLIError(f"{repo} was not built by hyperthumbnail; --weights needs --rebuild (which replaces it)")
        log(f"{repo} was not built by hyperthumbnail: uploading it as is")
    else:
        try:
            repo = build_repository(repo, weights=args.weights, scale=args.scale, target=args.target,
                                    plans=args.plans, rebuild=args.rebuild, log=log)
        except (RepositoryError, FileNotFoundError, ValueError) as exc:
            raise CLIError(str(exc)) from exc
    try:
        uri = publish(repo, args.uri, create_bucket=args.create_bucket, log=log)
    except ObjectStoreError as exc:
        raise CLIError(str(exc)) from exc
    print(uri)
    log(f"serve it with: hyperthumbnail serve --model-repository {uri} [--replicas N]")
    return 0
