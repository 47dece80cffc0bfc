"""Connection options shared by the sync and asyncio clients."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Literal, Union

__all__ = ["DEFAULT_URLS", "SHM_AUTO_MIN_BYTES", "ClientOptions", "Protocol", "ShmMode"]

Protocol = Literal["http", "grpc"]
ShmMode = Union[bool, Literal["auto"]]
DEFAULT_URLS = {"http": "127.0.0.1:8000", "grpc": "127.0.0.1:8001"}  # `hyperthumbnail serve` defaults
SHM_AUTO_MIN_BYTES = 1 << 20  # "auto": below this, the socket copy costs less than two extra calls
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}


@dataclass(frozen=True)
class ClientOptions:
    url: str
    protocol: Protocol
    timeout_s: float
    use_shm: ShmMode
    max_batch_size: int

    @classmethod
    def make(cls, url: str | None, protocol: str, timeout_s: float, use_shm: ShmMode,
             max_batch_size: int) -> ClientOptions:
        if protocol not in DEFAULT_URLS:
            raise ValueError(f"protocol must be 'http' or 'grpc', got {protocol!r}")
        if use_shm not in (True, False, "auto"):
            raise ValueError(f"use_shm must be True, False or 'auto', got {use_shm!r}")
        if timeout_s <= 0 or max_batch_size < 1:
            raise ValueError("timeout_s must be > 0 and max_batch_size >= 1")
        url = url or DEFAULT_URLS[protocol]
        for scheme in ("http://", "https://", "grpc://"):
            url = url.removeprefix(scheme)  # tritonclient wants host:port
        return cls(url, protocol, float(timeout_s), use_shm, int(max_batch_size))  # type: ignore[arg-type]

    @property
    def module(self) -> ModuleType:
        """tritonclient.http or tritonclient.grpc (their InferInput/InferRequestedOutput classes)."""
        return importlib.import_module(f"tritonclient.{self.protocol}")

    @property
    def is_local(self) -> bool:
        return self.url.rsplit(":", 1)[0] in _LOCAL_HOSTS

    def shm_for(self, nbytes: int) -> bool:
        """Whether a tensor of `nbytes` goes through system shared memory."""
        if self.use_shm == "auto":
            return self.is_local and nbytes >= SHM_AUTO_MIN_BYTES
        return bool(self.use_shm)

    def shm_for_images(self, size: tuple[int, int] | None, count: int) -> bool:
        """Whether `count` decoded images of HR `size` (None: unknown, so no) come back through shm."""
        return size is not None and self.shm_for(count * size[0] * size[1] * 3)

    @property
    def call_kwargs(self) -> dict:
        """Per-call timeout: gRPC takes it on each call, HTTP on the client (connection/network timeouts)."""
        return {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
