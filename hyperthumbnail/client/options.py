"""Connection options shared by the sync and asyncio clients."""
from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Literal, Union

from ..interface import ADMIN_HEADER, ADMIN_KEY_ENV, GRPC_ADMIN_HEADER

__all__ = ["DEFAULT_URLS", "SHM_AUTO_MIN_BYTES", "ClientOptions", "Protocol", "ShmMode"]

Protocol = Literal["http", "grpc"]
ShmMode = Union[bool, Literal["auto"]]
DEFAULT_URLS = {"http": "127.0.0.1:8000", "grpc": "127.0.0.1:8001"}  # `hyperthumbnail serve` defaults
SHM_AUTO_MIN_BYTES = 1 << 20  # "auto": below this, the socket copy costs less than two extra calls
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}


@dataclass(frozen=True)
class ClientOptions:
    urls: tuple[str, ...]   # one or more servers, host:port each; requests go round robin
    protocol: Protocol
    timeout_s: float
    use_shm: ShmMode
    max_batch_size: int
    admin_key: str | None = None
    retries: int = 1        # extra attempts on the next server after a ServerUnavailableError

    @property
    def url(self) -> str:
        """The first server (the only one, usually)."""
        return self.urls[0]

    @classmethod
    def make(cls, url: str | Sequence[str] | None, protocol: str, timeout_s: float, use_shm: ShmMode,
             max_batch_size: int, admin_key: str | None = None, retries: int | None = None) -> ClientOptions:
        if protocol not in DEFAULT_URLS:
            raise ValueError(f"protocol must be 'http' or 'grpc', got {protocol!r}")
        if use_shm not in (True, False, "auto"):
            raise ValueError(f"use_shm must be True, False or 'auto', got {use_shm!r}")
        if timeout_s <= 0 or max_batch_size < 1:
            raise ValueError("timeout_s must be > 0 and max_batch_size >= 1")
        given = [url] if isinstance(url, str) or url is None else list(url)
        urls = []
        for one in (u or DEFAULT_URLS[protocol] for u in (given or [None])):
            for part in one.split(","):  # "host1:8000,host2:8000" works too (CLI --url)
                for scheme in ("http://", "https://", "grpc://"):
                    part = part.strip().removeprefix(scheme)  # tritonclient wants host:port
                if part:
                    urls.append(part)
        if not urls:
            raise ValueError(f"no server url in {url!r}")
        # Default: every other server once; with one url (a load balancer) one retry on it.
        retries = max(1, len(urls) - 1) if retries is None else int(retries)
        if retries < 0:
            raise ValueError("retries must be >= 0")
        admin_key = admin_key or os.environ.get(ADMIN_KEY_ENV) or None
        return cls(tuple(urls), protocol, float(timeout_s), use_shm, int(max_batch_size),  # type: ignore[arg-type]
                   admin_key, retries)

    @property
    def module(self) -> ModuleType:
        """tritonclient.http or tritonclient.grpc (their InferInput/InferRequestedOutput classes)."""
        return importlib.import_module(f"tritonclient.{self.protocol}")

    @property
    def is_local(self) -> bool:
        return all(url.rsplit(":", 1)[0] in _LOCAL_HOSTS for url in self.urls)

    def shm_for(self, nbytes: int) -> bool:
        """Whether a tensor of `nbytes` goes through system shared memory."""
        if self.use_shm == "auto":
            return self.is_local and nbytes >= SHM_AUTO_MIN_BYTES
        return bool(self.use_shm)

    def shm_for_images(self, size: tuple[int, int] | None, count: int) -> bool:
        """Whether `count` decoded images of HR `size` (None: unknown, so no) come back through shm."""
        return size is not None and self.shm_for(count * size[0] * size[1] * 3)

    @property
    def admin_kwargs(self) -> dict:
        """call_kwargs plus the admin key header, for the restricted (shared-memory) calls."""
        if not self.admin_key:
            return self.call_kwargs
        header = ADMIN_HEADER if self.protocol == "http" else GRPC_ADMIN_HEADER
        return {**self.call_kwargs, "headers": {header: self.admin_key}}

    @property
    def call_kwargs(self) -> dict:
        """Per-call timeout: gRPC takes it on each call, HTTP on the client (connection/network timeouts)."""
        return {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
