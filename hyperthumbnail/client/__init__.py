"""Triton client SDK for the HyperThumbnail ensembles, and perf_analyzer-style load testing.

>>> from hyperthumbnail.client import HyperThumbnailClient
>>> with HyperThumbnailClient("127.0.0.1:8000") as client:
...     jpeg = client.encode(image)          # HxWx3 uint8 RGB -> .jpg bytes
...     restored = client.decode(jpeg)       # -> HxWx3 uint8 of the original size

See docs/client.md.
"""
from __future__ import annotations

from .aio import AsyncHyperThumbnailClient
from .errors import AccessDeniedError, HyperThumbnailError, InvalidInputError, ServerError, ServerUnavailableError
from .sync import HyperThumbnailClient

__all__ = ["HyperThumbnailClient", "AsyncHyperThumbnailClient", "HyperThumbnailError", "InvalidInputError",
           "ServerUnavailableError", "ServerError", "AccessDeniedError"]
