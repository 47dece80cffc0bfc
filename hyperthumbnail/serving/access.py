"""Which of Triton's APIs stay open and which need the operator's admin key.

Triton 2.51 puts API groups behind a required request header:
`--http-restricted-api=GROUPS:KEY=VALUE` and `--grpc-restricted-protocol=GROUPS:KEY=VALUE`.
Over HTTP the client sends the header `KEY: VALUE`; over gRPC Triton expects the metadata key
`triton-grpc-protocol-KEY` (seen on the real server: it answers UNAVAILABLE "This protocol is
restricted, expecting header 'triton-grpc-protocol-admin-key'").

Restricted: shared memory (any client could otherwise map an existing /dev/shm region by name,
the Python backend's own included), the model repository (load/unload is code execution),
logging and trace settings. Open: inference, health, metadata, model config, statistics (and
the metrics port, which has no API groups).
"""
from __future__ import annotations

import re
import secrets

# The header names are shared with the client SDK, which sends them.
from ..client.options import ADMIN_HEADER, ADMIN_KEY_ENV, GRPC_ADMIN_HEADER

__all__ = ["RESTRICTED_APIS", "ADMIN_HEADER", "GRPC_ADMIN_HEADER", "ADMIN_KEY_ENV", "AdminKeyError",
           "generate_admin_key", "check_admin_key", "restricted_api_args", "is_loopback"]

RESTRICTED_APIS = ("shared-memory", "model-repository", "logging", "trace")
_KEY = re.compile(r"^[A-Za-z0-9._~-]{16,256}$")  # goes inside Triton's GROUPS:KEY=VALUE flag and a header
_LOOPBACK = ("127.", "localhost", "::1", "[::1]")


class AdminKeyError(ValueError):
    """An admin key Triton's flag syntax or an HTTP header cannot carry, or too short to guess."""


def generate_admin_key() -> str:
    return secrets.token_urlsafe(24)  # 32 characters from [A-Za-z0-9_-]


def check_admin_key(key: str) -> str:
    if not _KEY.match(key):
        raise AdminKeyError("the admin key must be 16-256 characters of A-Z a-z 0-9 . _ ~ - "
                            "(it travels in an HTTP header and in tritonserver's GROUPS:KEY=VALUE flag)")
    return key


def restricted_api_args(key: str) -> list[str]:
    """tritonserver flags that put RESTRICTED_APIS behind `key` on HTTP and gRPC."""
    spec = f"{','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={check_admin_key(key)}"
    return [f"--http-restricted-api={spec}", f"--grpc-restricted-protocol={spec}"]


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server on this machine (anything else needs the admin key)."""
    return host.startswith(_LOOPBACK)
