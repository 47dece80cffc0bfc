"""Inference requests for the two ensembles, shared by the sync and the asyncio client.

A `Request` holds the tritonclient inputs/outputs, the system shared-memory regions the client
must register before sending it (and release after), and how to read the per-image results out
of the response. Only the sending differs between the clients (blocking call vs `await`).

Shared memory: the image tensors (the encode input, the decode output) are the big ones; with
`shm=True` they travel through `/dev/shm` instead of the socket. The decode output needs its
byte size up front: it is the HR size recorded in the thumbnail's marker. The encode output is
BYTES of unknown size, so it always comes back in the response.
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from types import ModuleType

import numpy as np
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import serialize_byte_tensor

from ..codec.metadata import Metadata
from ..codec.thumbnail import ThumbnailError, read_metadata, read_thumbnail, restore_marker, with_metadata
from ..interface import DECODE_MODEL, ENCODE_AT_BPP_MODEL, ENCODE_MODEL
from .errors import InvalidInputError

__all__ = ["Region", "Request",
           "UNREGISTER_RETRY_DELAYS_S", "region_in_use", "check_image", "decode_request",
           "encode_at_bpp_request", "encode_request", "chunks", "hr_size", "scatter", "stripped"]



@dataclass
class Region:
    """A system shared-memory segment created by this process for one tensor of one request."""

    name: str  # what the server calls it (register/unregister, set_shared_memory)
    key: str  # the /dev/shm key
    byte_size: int
    handle: shm.SharedMemoryRegion

    @classmethod
    def create(cls, byte_size: int) -> Region:
        name = f"hyperthumbnail_{os.getpid()}_{secrets.token_hex(6)}"
        return cls(name, "/" + name, byte_size, shm.create_shared_memory_region(name, "/" + name, byte_size, create_only=True))

    def destroy(self) -> None:
        shm.destroy_shared_memory_region(self.handle)


@dataclass
class Request:
    model: str
    inputs: list
    outputs: list
    read: Callable[[object], list]  # InferResult -> one result per item, in order
    regions: list[Region] = field(default_factory=list)

    def release(self) -> None:
        """Destroy the shared-memory regions (after the server has unregistered them)."""
        _destroy(self.regions)
        self.regions.clear()


# Triton (2.50+) refuses to unregister a shm region while a request still holds it, and releases
# the hold just after the response is sent: a client that unregisters at once can lose that race.
UNREGISTER_RETRY_DELAYS_S = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def region_in_use(exc: BaseException) -> bool:
    """True for the server's 'cannot unregister ... currently in use' refusal (worth retrying)."""
    return "currently in use" in str(exc)


def check_image(image: np.ndarray) -> np.ndarray:
    """An HxWx3 uint8 RGB array, else InvalidInputError (caught here rather than as a server error)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or image.size == 0:
        raise InvalidInputError(f"expected an HxWx3 uint8 RGB image, got {image.dtype} array of shape {image.shape}")
    return np.ascontiguousarray(image)


def hr_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) the thumbnail decodes to, or None if it is unreadable (the server will say why)."""
    try:
        return read_thumbnail(data).hr_size
    except ThumbnailError:
        return None


def stripped(jpeg: bytes, scale: int | None, size: tuple[int, int] | None) -> bytes:
    """A thumbnail whose APP segments were stripped, made whole again from the scale and original
    size the caller knows (`decode --scale 4 --size WxH`); with scale None, `jpeg` as it is."""
    if scale is None:
        if size is not None:
            raise InvalidInputError("a size for a stripped thumbnail needs its scale too")
        return jpeg
    try:
        return restore_marker(jpeg, scale, size)
    except ThumbnailError as exc:
        raise InvalidInputError(str(exc)) from exc


def _metadata_inputs(module: ModuleType, metadata: Metadata | None, batch: int) -> list:
    """The optional ICC_PROFILE / EXIF inputs (the same for every image of the request)."""
    inputs = []
    for name, value in (("ICC_PROFILE", metadata and metadata.icc_profile), ("EXIF", metadata and metadata.exif)):
        if value:
            tensor = np.array([[bytes(value)]] * batch, dtype=np.object_)
            inp = module.InferInput(name, list(tensor.shape), "BYTES")
            inp.set_data_from_numpy(tensor)
            inputs.append(inp)
    return inputs


def _with_xmp(jpeg: bytes, xmp: bytes | None) -> bytes:
    """XMP has no served tensor: it is added here, next to what the server put in."""
    return with_metadata(jpeg, replace(read_metadata(jpeg), xmp=xmp)) if xmp else jpeg


def chunks(keys: Sequence[Hashable], max_batch: int) -> list[list[int]]:
    """Indices grouped by equal key (same-size items share a request), each group cut to max_batch."""
    groups: dict[Hashable, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return [g[i:i + max_batch] for g in groups.values() for i in range(0, len(g), max_batch)]


def scatter(count: int, groups: list[list[int]], results: Sequence[list]) -> list:
    """Per-group results (from `chunks` groups) back into input order."""
    out: list = [None] * count
    for group, group_results in zip(groups, results):
        for index, item in zip(group, group_results):
            out[index] = item
    return out


def _shm_input(module: ModuleType, name: str, shape: list[int], datatype: str, payload: np.ndarray,
               byte_size: int, regions: list[Region]):
    region = Region.create(byte_size)
    regions.append(region)  # before writing: the caller destroys what is listed if anything fails
    shm.set_shared_memory_region(region.handle, [payload])
    inp = module.InferInput(name, shape, datatype)
    inp.set_shared_memory(region.name, byte_size)
    return inp


def _destroy(regions: list[Region]) -> None:
    for region in regions:
        region.destroy()


def _image_input(module: ModuleType, images: np.ndarray, use_shm: bool, regions: list[Region]):
    if not use_shm:
        inp = module.InferInput("IMAGE", list(images.shape), "UINT8")
        inp.set_data_from_numpy(images)
        return inp
    try:
        return _shm_input(module, "IMAGE", list(images.shape), "UINT8", images, images.nbytes, regions)
    except BaseException:
        _destroy(regions)
        raise


def _per_image_input(module: ModuleType, name: str, value: float, batch: int):
    values = np.full((batch, 1), value, dtype=np.float32)
    inp = module.InferInput(name, list(values.shape), "FP32")
    inp.set_data_from_numpy(values)
    return inp


def encode_request(module: ModuleType, images: np.ndarray, use_shm: bool, table_scale: float | None = None,
                   metadata: Metadata | None = None) -> Request:
    """(B, H, W, 3) uint8 -> B thumbnails (bytes); `table_scale` fills the optional TABLE_SCALE input,
    `metadata` the optional ICC_PROFILE and EXIF inputs (its XMP is added to the returned files)."""
    regions: list[Region] = []
    inputs = [_image_input(module, images, use_shm, regions)]
    if table_scale is not None:  # rate control: multiplies the predicted quantization tables
        inputs.append(_per_image_input(module, "TABLE_SCALE", table_scale, len(images)))
    inputs += _metadata_inputs(module, metadata, len(images))
    xmp = metadata.xmp if metadata else None

    def read(result) -> list[bytes]:
        return [_with_xmp(bytes(item), xmp) for item in result.as_numpy("THUMBNAIL")[:, 0]]

    return Request(ENCODE_MODEL, inputs, [module.InferRequestedOutput("THUMBNAIL")], read, regions)


def encode_at_bpp_request(module: ModuleType, images: np.ndarray, use_shm: bool, target_bpp: float,
                          tolerance: float | None = None) -> Request:
    """(B, H, W, 3) uint8 -> B (thumbnail bytes, table scale used, bpp of the file)."""
    regions: list[Region] = []
    inputs = [_image_input(module, images, use_shm, regions),
              _per_image_input(module, "TARGET_BPP", target_bpp, len(images))]
    if tolerance is not None:
        inputs.append(_per_image_input(module, "TOLERANCE", tolerance, len(images)))
    names = ("THUMBNAIL", "TABLE_SCALE", "BPP")

    def read(result) -> list[tuple[bytes, float, float]]:
        files, scales, rates = (result.as_numpy(name)[:, 0] for name in names)
        return [(bytes(f), float(s), float(r)) for f, s, r in zip(files, scales, rates)]

    return Request(ENCODE_AT_BPP_MODEL, inputs, [module.InferRequestedOutput(n) for n in names], read, regions)


def decode_request(module: ModuleType, thumbnails: Sequence[bytes], use_shm: bool,
                   size: tuple[int, int] | None = None, metadata: bool = False) -> Request:
    """B thumbnails of one HR `size` -> B HxWx3 images. Without a known size, no shared memory.
    `metadata`: B (image, Metadata) pairs instead (ICC_PROFILE and EXIF from the server, XMP read here)."""
    batch = np.array([[bytes(t)] for t in thumbnails], dtype=np.object_)
    regions: list[Region] = []
    outputs = [module.InferRequestedOutput("IMAGE")]
    request = _decode_images(module, batch, use_shm, size, outputs, regions)
    if not metadata:
        return request
    outputs += [module.InferRequestedOutput("ICC_PROFILE"), module.InferRequestedOutput("EXIF")]
    read_images = request.read

    def read(result) -> list[tuple[np.ndarray, Metadata]]:
        found = zip(read_images(result), result.as_numpy("ICC_PROFILE")[:, 0], result.as_numpy("EXIF")[:, 0],
                    thumbnails)
        return [(image, Metadata(bytes(icc) or None, bytes(exif) or None, read_metadata(bytes(t)).xmp))
                for image, icc, exif, t in found]

    return Request(DECODE_MODEL, request.inputs, outputs, read, regions)


def _decode_images(module: ModuleType, batch: np.ndarray, use_shm: bool, size: tuple[int, int] | None,
                   outputs: list, regions: list[Region]) -> Request:
    thumbnails = batch[:, 0]
    if use_shm and size is not None:
        try:
            serialized = serialize_byte_tensor(batch)
            inp = _shm_input(module, "THUMBNAIL", list(batch.shape), "BYTES", serialized,
                             len(serialized.item()), regions)
            width, height = size
            out_region = Region.create(len(thumbnails) * height * width * 3)
            regions.append(out_region)
            outputs[0].set_shared_memory(out_region.name, out_region.byte_size)
        except BaseException:
            _destroy(regions)
            raise

        def read(result) -> list[np.ndarray]:
            out = result.get_output("IMAGE")
            shape = [int(s) for s in (out["shape"] if isinstance(out, dict) else out.shape)]
            return list(shm.get_contents_as_numpy(out_region.handle, np.uint8, shape).copy())
    else:
        inp = module.InferInput("THUMBNAIL", list(batch.shape), "BYTES")
        inp.set_data_from_numpy(batch)

        def read(result) -> list[np.ndarray]:
            return list(result.as_numpy("IMAGE"))

    return Request(DECODE_MODEL, [inp], outputs, read, regions)
