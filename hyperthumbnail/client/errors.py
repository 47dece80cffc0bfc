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

__all__ = ["HyperThumbnailError", "InvalidInputError", "ServerUnavailableError", "ServerError", "TRANSLATED", "translate"]


class HyperThumbnailError(Exception):
    """Base class of every error the client raises."""


class InvalidInputError(HyperThumbnailError):
    """The server refused the request (HTTP 4xx, gRPC INVALID_ARGUMENT/NOT_FOUND); the message is the server's."""


class ServerUnavailableError(HyperThumbnailError):
    """The server could not be reached, went away, or did not answer within the timeout."""


class ServerError(HyperThumbnailError):
    """The server failed to process a valid request (HTTP 5xx, gRPC INTERNAL, ...)."""


_GRPC_INVALID = {"StatusCode.INVALID_ARGUMENT", "StatusCode.NOT_FOUND", "StatusCode.UNIMPLEMENTED",
                 "StatusCode.OUT_OF_RANGE", "StatusCode.ALREADY_EXISTS"}
_GRPC_UNAVAILABLE = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED"}
_HTTP_UNAVAILABLE = {"502", "503", "504"}


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
        if status in _GRPC_UNAVAILABLE or status in _HTTP_UNAVAILABLE:
            return ServerUnavailableError(f"{message} ({status})")
        if status in _GRPC_INVALID or (len(status) == 3 and status.startswith("4")):
            return InvalidInputError(message)
        return ServerError(f"{message} ({status})" if status else message)
    if isinstance(exc, SharedMemoryException):
        return HyperThumbnailError(f"system shared memory: {exc}")
    return ServerUnavailableError(f"cannot reach the server: {type(exc).__name__}: {exc}")
