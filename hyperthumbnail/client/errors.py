"""Typed client errors, so callers can tell a bad input from a server that is down.

tritonclient raises one `InferenceServerException` for everything (with an HTTP status or a gRPC
status code as text) and lets socket / aiohttp errors through for connection failures; `translate`
maps all of them onto this small hierarchy.
"""
from __future__ import annotations

import asyncio
import http.client

from tritonclient.utils import InferenceServerException
from tritonclient.utils.shared_memory import SharedMemoryException

__all__ = ["HyperThumbnailError", "InvalidInputError", "ServerUnavailableError", "ServerError", "AccessDeniedError",
           "TRANSLATED", "translate"]


class HyperThumbnailError(Exception):
    """Base class of every error the client raises."""


class InvalidInputError(HyperThumbnailError):
    """The server refused the request (HTTP 4xx, gRPC INVALID_ARGUMENT/NOT_FOUND); the message is the server's."""


class ServerUnavailableError(HyperThumbnailError):
    """The server could not be reached, went away, or did not answer within the timeout.

    `retryable`: False for a timeout (resending work to an overloaded cluster makes it worse);
    the client retries the others on the next server."""

    def __init__(self, message: str, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


class AccessDeniedError(HyperThumbnailError):
    """A restricted admin API (shared memory, model repository, ...) refused a call without the
    right admin key: pass `admin_key=` or set HYPERTHUMBNAIL_ADMIN_KEY (docs/scaleout.md)."""


class ServerError(HyperThumbnailError):
    """The server failed to process a valid request (HTTP 5xx, gRPC INTERNAL, ...)."""


_GRPC_INVALID = {"StatusCode.INVALID_ARGUMENT", "StatusCode.NOT_FOUND", "StatusCode.UNIMPLEMENTED",
                 "StatusCode.OUT_OF_RANGE", "StatusCode.ALREADY_EXISTS"}
_GRPC_UNAVAILABLE = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED"}
_HTTP_UNAVAILABLE = {"502", "503", "504"}
_TIMEOUTS = {"StatusCode.DEADLINE_EXCEEDED", "504"}
_RESTRICTED = "is restricted, expecting header"  # Triton's refusal of a restricted API (HTTP 403, gRPC UNAVAILABLE)


def _connection_errors() -> tuple[type[BaseException], ...]:
    # http.client.HTTPException: the sync HTTP client's transport (geventhttpclient) raises
    # HTTPConnectionClosed, a subclass, when the server dies while a request is in flight.
    errors: tuple[type[BaseException], ...] = (OSError, asyncio.TimeoutError, ConnectionError,
                                               http.client.HTTPException)
    try:  # the HTTP aio client's transport; its disconnect errors are not OSErrors
        import aiohttp

        errors += (aiohttp.ClientConnectionError, aiohttp.ServerTimeoutError)
    except ImportError:
        pass
    return errors


_CONNECTION_ERRORS = _connection_errors()
TRANSLATED = (InferenceServerException, SharedMemoryException) + _CONNECTION_ERRORS
"""What `translate` understands: catch these around tritonclient calls (other exceptions are bugs)."""


def translate(exc: BaseException) -> HyperThumbnailError:
    """The typed error for an exception raised by a tritonclient call (one of `TRANSLATED`)."""
    if isinstance(exc, InferenceServerException):
        status = str(exc.status() or "")
        message = exc.message() or str(exc)
        if _RESTRICTED in message:
            return AccessDeniedError(f"{message}: the server restricts this API to its admin key "
                                     "(admin_key= or $HYPERTHUMBNAIL_ADMIN_KEY)")
        if status in _GRPC_UNAVAILABLE or status in _HTTP_UNAVAILABLE:
            return ServerUnavailableError(f"{message} ({status})", retryable=status not in _TIMEOUTS)
        if status in _GRPC_INVALID or (len(status) == 3 and status.startswith("4")):
            return InvalidInputError(message)
        return ServerError(f"{message} ({status})" if status else message)
    if isinstance(exc, SharedMemoryException):
        return HyperThumbnailError(f"system shared memory: {exc}")
    timeout = isinstance(exc, (TimeoutError, asyncio.TimeoutError)) or "timed out" in str(exc).lower()
    return ServerUnavailableError(f"cannot reach the server: {type(exc).__name__}: {exc}", retryable=not timeout)
