"""Model repositories on object storage, written the way tritonserver reads them.

tritonserver takes `--model-repository=s3://bucket/path`, or `s3://http://HOST:PORT/bucket/path`
(`https://` too) for an S3-compatible endpoint of its own (MinIO, Ceph, moto, ...); it reads the
credentials from the standard AWS environment variables (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_DEFAULT_REGION`). `publish` uploads a built
repository with boto3 (optional extra `hyperthumbnail[s3]`), which reads the same variables, so
one environment serves both.

Object storage has no folders, only keys: an empty version folder (the ensembles' `1/`) would not
exist there, and Triton refuses a model without a version ("at least one version must be
available"). Every empty folder therefore gets a small marker file.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ObjectStoreError", "S3Location", "is_remote", "parse_s3", "publish", "list_keys", "EMPTY_DIR_MARKER"]

EMPTY_DIR_MARKER = ".keep"  # gives an empty (version) folder a key; Triton ignores the file
REMOTE_SCHEMES = ("s3://", "gs://", "as://")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


class ObjectStoreError(RuntimeError):
    """A bad URI, a missing boto3, or a failed upload."""


def is_remote(uri: str | os.PathLike) -> bool:
    """Whether tritonserver reads this repository from object storage rather than a local path."""
    return str(uri).startswith(REMOTE_SCHEMES)


@dataclass(frozen=True)
class S3Location:
    """A parsed `s3://[http(s)://HOST:PORT/]bucket[/prefix]`."""

    bucket: str
    prefix: str            # "" or "a/b" (no leading or trailing slash)
    endpoint: str | None   # "http://HOST:PORT" for a custom endpoint, None for AWS (or AWS_ENDPOINT_URL)

    @property
    def uri(self) -> str:
        """The URI as tritonserver takes it."""
        base = f"s3://{self.endpoint}/" if self.endpoint else "s3://"
        return base + self.bucket + (f"/{self.prefix}" if self.prefix else "")


def parse_s3(uri: str) -> S3Location:
    """`s3://bucket/path` or `s3://http://HOST:PORT/bucket/path` -> S3Location (ObjectStoreError if malformed)."""
    if not uri.startswith("s3://"):
        scheme = uri.split("://", 1)[0] + "://" if "://" in uri else ""
        if scheme in ("gs://", "as://"):
            raise ObjectStoreError(f"{uri}: publishing supports s3:// only; tritonserver reads {scheme} itself, "
                                   "upload with your cloud's tool (docs/scaleout.md)")
        raise ObjectStoreError(f"{uri}: expected s3://bucket/path or s3://http://HOST:PORT/bucket/path")
    rest = uri[len("s3://"):]
    endpoint = None
    m = re.match(r"^(https?://[^/]+)/(.*)$", rest)
    if m:
        endpoint, rest = m.group(1), m.group(2)
        if not re.match(r"^https?://[^/:]+(:\d{1,5})?$", endpoint):
            raise ObjectStoreError(f"{uri}: endpoint {endpoint!r} is not http(s)://HOST[:PORT]")
    elif rest.startswith(("http://", "https://")):
        raise ObjectStoreError(f"{uri}: a custom endpoint needs a bucket after it: s3://{rest.rstrip('/')}/BUCKET/path")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.match(bucket):
        raise ObjectStoreError(f"{uri}: {bucket!r} is not a valid S3 bucket name (3-63 of a-z 0-9 . -)")
    return S3Location(bucket, prefix.strip("/"), endpoint)


def _client(location: S3Location):
    try:
        import boto3
    except ImportError as exc:
        raise ObjectStoreError("publishing to s3:// needs boto3: pip install 'hyperthumbnail[s3]'") from exc
    # An endpoint in the URI wins; else boto3 honours AWS_ENDPOINT_URL(_S3) itself.
    return boto3.client("s3", endpoint_url=location.endpoint) if location.endpoint else boto3.client("s3")


def _files(repository: Path) -> list[tuple[Path, str]]:
    """(local file or None for a marker, relative key) of every file, plus a marker per empty folder."""
    out: list[tuple[Path, str]] = []
    for root, dirs, files in os.walk(repository):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        rel = Path(root).relative_to(repository)
        kept = sorted(f for f in files if not f.endswith(".pyc"))
        for name in kept:
            out.append((Path(root) / name, (rel / name).as_posix()))
        if not kept and not dirs and rel != Path("."):
            out.append((None, (rel / EMPTY_DIR_MARKER).as_posix()))  # type: ignore[arg-type]
    return out


def _raise_for(exc: Exception, location: S3Location) -> None:
    name = type(exc).__name__
    if name == "NoCredentialsError":
        raise ObjectStoreError(f"{location.uri}: no AWS credentials: set AWS_ACCESS_KEY_ID and "
                               "AWS_SECRET_ACCESS_KEY (tritonserver reads the same variables)") from exc
    if name == "EndpointConnectionError":
        raise ObjectStoreError(f"{location.uri}: cannot reach the S3 endpoint: {exc}") from exc
    if name in ("ClientError", "S3UploadFailedError"):
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket", "404"):
            raise ObjectStoreError(f"{location.uri}: bucket {location.bucket!r} does not exist (create it, "
                                   "or pass --create-bucket)") from exc
        raise ObjectStoreError(f"{location.uri}: S3 refused the upload: {exc}") from exc
    raise exc


def _ensure_bucket(s3, location: S3Location, create: bool) -> None:
    try:
        s3.head_bucket(Bucket=location.bucket)
        return
    except Exception as exc:  # botocore ClientError: 404 means missing, anything else is real
        if getattr(exc, "response", {}).get("Error", {}).get("Code") not in ("404", "NoSuchBucket") or not create:
            raise
    region = s3.meta.region_name
    kwargs = {} if region in (None, "us-east-1") else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    s3.create_bucket(Bucket=location.bucket, **kwargs)


def publish(repository: str | Path, uri: str, *, create_bucket: bool = False,
            log: Callable[[str], None] | None = None) -> str:
    """Upload a built model repository to `uri` (s3://...); returns the URI for `--model-repository`.

    Objects under the prefix that the repository does not have are deleted, so the prefix holds
    exactly this repository (a stale model left there would be loaded by every replica)."""
    repository = Path(repository)
    if not (repository / "hyperthumbnail_encode" / "config.pbtxt").is_file():
        raise ObjectStoreError(f"{repository} is not a built model repository (no hyperthumbnail_encode/config.pbtxt)")
    location = parse_s3(uri)
    s3 = _client(location)
    prefix = f"{location.prefix}/" if location.prefix else ""
    try:
        _ensure_bucket(s3, location, create_bucket)
        wanted = _files(repository)
        for path, key in wanted:
            if path is None:
                s3.put_object(Bucket=location.bucket, Key=prefix + key, Body=b"")
            else:
                s3.upload_file(str(path), location.bucket, prefix + key)
        if log:
            log(f"uploaded {len(wanted)} files to {location.uri}")
        stale = set(list_keys(uri, _s3=s3)) - {key for _, key in wanted}
        for key in sorted(stale):
            s3.delete_object(Bucket=location.bucket, Key=prefix + key)
        if stale and log:
            log(f"removed {len(stale)} stale objects under {location.uri}")
    except ObjectStoreError:
        raise
    except Exception as exc:
        _raise_for(exc, location)
    return location.uri


def list_keys(uri: str, _s3=None) -> list[str]:
    """Keys under the URI's prefix, relative to it."""
    location = parse_s3(uri)
    s3 = _s3 or _client(location)
    prefix = f"{location.prefix}/" if location.prefix else ""
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=prefix):
        keys += [item["Key"][len(prefix):] for item in page.get("Contents", [])]
    return keys
