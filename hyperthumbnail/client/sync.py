"""`HyperThumbnailClient`: encode/decode through a Triton server, over HTTP or gRPC.

Like tritonclient's clients (which it wraps), one instance is meant for one thread; give each
thread its own client.
"""
from __future__ import annotations

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

__all__ = ["HyperThumbnailClient"]


class HyperThumbnailClient:
    """Client of the `hyperthumbnail_encode` / `hyperthumbnail_decode` ensembles.

    url: "host:port" (default 127.0.0.1:8000 for HTTP, :8001 for gRPC), or several servers (a list,
        or "host1:port,host2:port"): requests then go round robin over them (client-side balancing,
        the standard answer to a gRPC channel pinned to one server).
    timeout_s: per request; a server that does not answer in time raises ServerUnavailableError.
    use_shm: send the image tensors through system shared memory (the server must run on this
        host); "auto" does so for tensors of 1 MiB and more when the url is a loopback address.
    max_batch_size: the ensembles' max_batch_size; batch calls split larger groups.
    admin_key: the server's admin key (default $HYPERTHUMBNAIL_ADMIN_KEY), sent with the
        shared-memory calls when the server restricts them (docs/scaleout.md).
    retries: after a ServerUnavailableError (not a timeout) the request is resent to the next
        server, up to `retries` times (default: every other server once; one retry with one url,
        which behind a load balancer reaches another replica). Inference is idempotent.
    `.triton` is the (first) underlying tritonclient client, for the rest of Triton's API (statistics, ...).

    >>> with HyperThumbnailClient("127.0.0.1:8001", protocol="grpc") as client:
    ...     jpeg = client.encode(image)
    ...     restored = client.decode(jpeg)
    """

    def __init__(self, url: str | Sequence[str] | None = None, protocol: Protocol = "http", timeout_s: float = 300.0,
                 use_shm: ShmMode = False, max_batch_size: int = MAX_BATCH, verbose: bool = False,
                 admin_key: str | None = None, retries: int | None = None):
        self.options = ClientOptions.make(url, protocol, timeout_s, use_shm, max_batch_size, admin_key, retries)
        module = self.options.module
        if protocol == "http":
            self.tritons = [module.InferenceServerClient(u, verbose=verbose, connection_timeout=timeout_s,
                                                         network_timeout=timeout_s) for u in self.options.urls]
        else:
            self.tritons = [module.InferenceServerClient(u, verbose=verbose) for u in self.options.urls]
        self.triton = self.tritons[0]
        self._turn = 0  # round robin position

    # ----------------------------------------------------------------- single images
    def encode(self, image: np.ndarray, table_scale: float | None = None, metadata: Metadata | None = None
               ) -> bytes:
        """HxWx3 uint8 RGB -> HyperThumbnail .jpg bytes (`table_scale` > 1: coarser tables, smaller file).

        `metadata` (e.g. from `load_image_with_metadata`): its ICC profile and EXIF go to the server
        (ICC_PROFILE / EXIF inputs) and come back inside the thumbnail, its XMP is added here."""
        if metadata is None:
            return (self.encode_batch([image], table_scale))[0]
        batch = check_image(image)[None]
        return (self._run(encode_request(self.options.module, batch, self.options.shm_for(batch.nbytes),
                                                table_scale, metadata)))[0]

    def encode_at_bpp(self, image: np.ndarray, target_bpp: float, tolerance: float | None = None
                      ) -> tuple[bytes, float, float]:
        """Server-side rate control in one request (`hyperthumbnail_encode_at_bpp`): -> (.jpg bytes,
        table scale used, bpp of the file). `tolerance` (default: the model's, 0.03) is relative;
        a target out of reach returns the closest file (compare the bpp with the target)."""
        image = check_image(image)
        batch = image[None]
        return self._run(encode_at_bpp_request(self.options.module, batch, self.options.shm_for(batch.nbytes),
                                               target_bpp, tolerance))[0]

    def decode(self, jpeg: bytes, scale: int | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
        """HyperThumbnail .jpg bytes -> HxWx3 uint8 RGB of the original size.

        `scale` (and `size`, the original (width, height); default: the thumbnail size times the
        scale) decode a thumbnail whose APP segments were stripped: its marker is written again here."""
        jpeg = stripped(jpeg, scale, size)
        size = hr_size(jpeg) if self.options.use_shm else None  # only shm needs the output size
        return (self._run(decode_request(self.options.module, [jpeg], self.options.shm_for_images(size, 1), size)))[0]

    def decode_with_metadata(self, jpeg: bytes, scale: int | None = None, size: tuple[int, int] | None = None
                             ) -> tuple[np.ndarray, Metadata]:
        """As `decode`, plus the photo's metadata: ICC profile and EXIF from the server (the ICC_PROFILE /
        EXIF outputs), XMP from the file; `save_image(image, path, metadata)` writes them."""
        jpeg = stripped(jpeg, scale, size)
        size = hr_size(jpeg) if self.options.use_shm else None
        return (self._run(decode_request(self.options.module, [jpeg], self.options.shm_for_images(size, 1), size,
                                                metadata=True)))[0]

    # ----------------------------------------------------------------- batches
    def encode_batch(self, images: Sequence[np.ndarray], table_scale: float | None = None) -> list[bytes]:
        """Images of the same size go in one request (up to max_batch_size), others in separate ones."""
        images = [check_image(image) for image in images]
        groups = chunks([image.shape for image in images], self.options.max_batch_size)
        results = []
        for group in groups:
            batch = np.stack([images[i] for i in group])
            results.append(self._run(encode_request(self.options.module, batch, self.options.shm_for(batch.nbytes),
                                                    table_scale)))
        return scatter(len(images), groups, results)

    def decode_batch(self, jpegs: Sequence[bytes]) -> list[np.ndarray]:
        """Thumbnails of the same HR size go in one request, others (and unreadable ones) separately."""
        sizes = [hr_size(jpeg) for jpeg in jpegs]
        keys = [size if size is not None else ("unreadable", i) for i, size in enumerate(sizes)]
        groups = chunks(keys, self.options.max_batch_size)
        results = []
        for group in groups:
            size = sizes[group[0]]
            results.append(self._run(decode_request(self.options.module, [jpegs[i] for i in group],
                                                    self.options.shm_for_images(size, len(group)), size)))
        return scatter(len(jpegs), groups, results)

    # ----------------------------------------------------------------- health
    def is_ready(self) -> bool:
        """A server is up and both ensembles are ready (with several urls: at least one server)."""
        kwargs = self.options.call_kwargs
        for triton in self.tritons:
            try:
                if triton.is_server_ready(**kwargs) and all(triton.is_model_ready(model, **kwargs) for model in ENSEMBLES):
                    return True
            except TRANSLATED:
                continue
        return False

    def wait_until_ready(self, timeout: float = 60.0) -> None:
        """Block until `is_ready()`, or raise ServerUnavailableError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if time.monotonic() > deadline:
                raise ServerUnavailableError(f"{self.options.protocol} server at {','.join(self.options.urls)} "
                                             f"not ready after {timeout:g} s")
            time.sleep(0.25)

    def close(self) -> None:
        for triton in self.tritons:
            triton.close()

    def __enter__(self) -> HyperThumbnailClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----------------------------------------------------------------- internals
    def _run(self, request: Request) -> list:
        """Send the request to the next server; on ServerUnavailableError resend it to the one after."""
        try:
            for attempt in range(self.options.retries + 1):
                triton = self.tritons[self._turn % len(self.tritons)]
                self._turn += 1
                try:
                    return self._run_on(triton, request)
                except ServerUnavailableError as exc:
                    if not exc.retryable or attempt == self.options.retries:
                        raise
            raise AssertionError("unreachable")
        finally:
            request.release()

    def _run_on(self, triton, request: Request) -> list:
        """Register the request's shm regions, infer, read the results, unregister the regions."""
        kwargs, admin = self.options.call_kwargs, self.options.admin_kwargs
        registered = []
        try:
            for region in request.regions:
                triton.register_system_shared_memory(region.name, region.key, region.byte_size, **admin)
                registered.append(region)
            result = triton.infer(request.model, request.inputs, outputs=request.outputs, **kwargs)
            return request.read(result)
        except TRANSLATED as exc:
            raise translate(exc) from exc
        finally:
            for region in registered:
                self._unregister(triton, region.name, admin)

    def _unregister(self, triton, name: str, kwargs: dict) -> None:
        """Unregister a region, retrying while the server still holds it for the finished request."""
        for delay in UNREGISTER_RETRY_DELAYS_S:
            try:
                triton.unregister_system_shared_memory(name, **kwargs)
                return
            except TRANSLATED as exc:
                if not region_in_use(exc):
                    return  # server gone: nothing left to unregister; the segment is freed anyway
            time.sleep(delay)
