"""The operator's admin key: generated or checked, and when it is required.

Triton 2.51 puts API groups behind a required request header (server_flags.restricted_api_flags).
Over HTTP the client sends `admin-key: KEY`; over gRPC Triton expects the metadata key
`triton-grpc-protocol-admin-key` (seen on the real server: it answers UNAVAILABLE "This protocol
is restricted, expecting header 'triton-grpc-protocol-admin-key'"). `serve` requires a key when it
runs replicas or binds beyond loopback.
"""
from __future__ import annotations

import re
import secrets

from .server_flags import restricted_api_flags

__all__ = ["AdminKeyError", "generate_admin_key", "check_admin_key", "restricted_api_args", "is_loopback"]

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
    """tritonserver flags that put RESTRICTED_APIS behind `key` (checked) on HTTP and gRPC."""
    return restricted_api_flags(check_admin_key(key))


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server on this machine (anything else needs the admin key)."""
    return host.startswith(_LOOPBACK)
