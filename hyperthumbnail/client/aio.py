"""`AsyncHyperThumbnailClient`: the same API for asyncio, on tritonclient.http.aio / tritonclient.grpc.aio.

Create it inside a running event loop (aiohttp's session needs one). Concurrent calls on one
instance are fine: each request has its own shared-memory regions, and batch calls send their
requests concurrently.
"""
from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Sequence

import numpy as np

from ..codec.metadata import Metadata
from ..interface import ENSEMBLES, MAX_BATCH
from .errors import TRANSLATED, ServerUnavailableError, translate
from .options import ClientOptions, Protocol, ShmMode
from .requests import (
    UNREGISTER_RETRY_DELAYS_S,
    Request,
    check_image,
    chunks,
    decode_request,
    encode_at_bpp_request,
    encode_request,
    hr_size,
    region_in_use,
    scatter,
    stripped,
)

__all__ = ["AsyncHyperThumbnailClient"]


class AsyncHyperThumbnailClient:
    """asyncio twin of `HyperThumbnailClient` (same arguments, `await` every call, `async with`)."""

    def __init__(self, url: str | Sequence[str] | None = None, protocol: Protocol = "http", timeout_s: float = 300.0,
                 use_shm: ShmMode = False, max_batch_size: int = MAX_BATCH, verbose: bool = False,
                 admin_key: str | None = None, retries: int | None = None):
        self.options = ClientOptions.make(url, protocol, timeout_s, use_shm, max_batch_size, admin_key, retries)
        aio = importlib.import_module(f"tritonclient.{protocol}.aio")
        if protocol == "http":
            self.tritons = [aio.InferenceServerClient(u, verbose=verbose, conn_timeout=timeout_s) for u in self.options.urls]
        else:
            self.tritons = [aio.InferenceServerClient(u, verbose=verbose) for u in self.options.urls]
        self.triton = self.tritons[0]
        self._turn = 0  # round robin position

    async def encode(self, image: np.ndarray, table_scale: float | None = None, metadata: Metadata | None = None
               ) -> bytes:
        """HxWx3 uint8 RGB -> HyperThumbnail .jpg bytes (`table_scale` > 1: coarser tables, smaller file).

        `metadata` (e.g. from `load_image_with_metadata`): its ICC profile and EXIF go to the server
        (ICC_PROFILE / EXIF inputs) and come back inside the thumbnail, its XMP is added here."""
        if metadata is None:
            return (await self.encode_batch([image], table_scale))[0]
        batch = check_image(image)[None]
        return (await self._run(encode_request(self.options.module, batch, self.options.shm_for(batch.nbytes),
                                                table_scale, metadata)))[0]

    async def encode_at_bpp(self, image: np.ndarray, target_bpp: float, tolerance: float | None = None
                            ) -> tuple[bytes, float, float]:
        """Server-side rate control in one request: -> (.jpg bytes, table scale used, bpp of the file)."""
        image = check_image(image)
        batch = image[None]
        return (await self._run(encode_at_bpp_request(self.options.module, batch, self.options.shm_for(batch.nbytes),
                                                      target_bpp, tolerance)))[0]

    async def decode(self, jpeg: bytes, scale: int | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
        """HyperThumbnail .jpg bytes -> HxWx3 uint8 RGB of the original size.

        `scale` (and `size`, the original (width, height); default: the thumbnail size times the
        scale) decode a thumbnail whose APP segments were stripped: its marker is written again here."""
        jpeg = stripped(jpeg, scale, size)
        size = hr_size(jpeg) if self.options.use_shm else None  # only shm needs the output size
        return (await self._run(decode_request(self.options.module, [jpeg], self.options.shm_for_images(size, 1), size)))[0]

    async def decode_with_metadata(self, jpeg: bytes, scale: int | None = None, size: tuple[int, int] | None = None
                             ) -> tuple[np.ndarray, Metadata]:
        """As `decode`, plus the photo's metadata: ICC profile and EXIF from the server (the ICC_PROFILE /
        EXIF outputs), XMP from the file; `save_image(image, path, metadata)` writes them."""
        jpeg = stripped(jpeg, scale, size)
        size = hr_size(jpeg) if self.options.use_shm else None
        return (await self._run(decode_request(self.options.module, [jpeg], self.options.shm_for_images(size, 1), size,
                                                metadata=True)))[0]

    async def encode_batch(self, images: Sequence[np.ndarray], table_scale: float | None = None) -> list[bytes]:
        """Images of the same size go in one request (up to max_batch_size); the requests run concurrently."""
        images = [check_image(image) for image in images]
        groups = chunks([image.shape for image in images], self.options.max_batch_size)

        async def one(group: list[int]) -> list[bytes]:
            batch = np.stack([images[i] for i in group])
            return await self._run(encode_request(self.options.module, batch, self.options.shm_for(batch.nbytes),
                                                  table_scale))

        return scatter(len(images), groups, await asyncio.gather(*(one(g) for g in groups)))

    async def decode_batch(self, jpegs: Sequence[bytes]) -> list[np.ndarray]:
        """Thumbnails of the same HR size go in one request; the requests run concurrently."""
        sizes = [hr_size(jpeg) for jpeg in jpegs]
        keys = [size if size is not None else ("unreadable", i) for i, size in enumerate(sizes)]
        groups = chunks(keys, self.options.max_batch_size)

        async def one(group: list[int]) -> list[np.ndarray]:
            size = sizes[group[0]]
            return await self._run(decode_request(self.options.module, [jpegs[i] for i in group],
                                                  self.options.shm_for_images(size, len(group)), size))

        return scatter(len(jpegs), groups, await asyncio.gather(*(one(g) for g in groups)))

    async def is_ready(self) -> bool:
        """A server is up and both ensembles are ready (with several urls: at least one server)."""
        kwargs = self.options.call_kwargs
        for triton in self.tritons:
            try:
                if await triton.is_server_ready(**kwargs) and all(
                        [await triton.is_model_ready(model, **kwargs) for model in ENSEMBLES]):
                    return True
            except TRANSLATED:
                continue
        return False

    async def wait_until_ready(self, timeout: float = 60.0) -> None:
        """Wait until `is_ready()`, or raise ServerUnavailableError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not await self.is_ready():
            if time.monotonic() > deadline:
                raise ServerUnavailableError(f"{self.options.protocol} server at {','.join(self.options.urls)} "
                                             f"not ready after {timeout:g} s")
            await asyncio.sleep(0.25)

    async def close(self) -> None:
        for triton in self.tritons:
            await triton.close()

    async def __aenter__(self) -> AsyncHyperThumbnailClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _run(self, request: Request) -> list:
        """Send the request to the next server; on ServerUnavailableError resend it to the one after."""
        try:
            for attempt in range(self.options.retries + 1):
                triton = self.tritons[self._turn % len(self.tritons)]
                self._turn += 1
                try:
                    return await self._run_on(triton, request)
                except ServerUnavailableError as exc:
                    if not exc.retryable or attempt == self.options.retries:
                        raise
            raise AssertionError("unreachable")
        finally:
            request.release()

    async def _run_on(self, triton, request: Request) -> list:
        """Register the request's shm regions, infer, read the results, unregister the regions."""
        kwargs, admin = self.options.call_kwargs, self.options.admin_kwargs
        registered = []
        try:
            for region in request.regions:
                await triton.register_system_shared_memory(region.name, region.key, region.byte_size, **admin)
                registered.append(region)
            result = await triton.infer(request.model, request.inputs, outputs=request.outputs, **kwargs)
            return request.read(result)
        except TRANSLATED as exc:
            raise translate(exc) from exc
        finally:
            for region in registered:
                await self._unregister(triton, region.name, admin)

    async def _unregister(self, triton, name: str, kwargs: dict) -> None:
        """Unregister a region, retrying while the server still holds it for the finished request."""
        for delay in UNREGISTER_RETRY_DELAYS_S:
            try:
                await triton.unregister_system_shared_memory(name, **kwargs)
                return
            except TRANSLATED as exc:
                if not region_in_use(exc):
                    return  # server gone: nothing left to unregister; the segment is freed anyway
            await asyncio.sleep(delay)

