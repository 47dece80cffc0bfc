"""The soak's traffic: a stated mix of real photo sizes, the photos of each size, their in-process
references, and the seeded order of requests.

Why a pool: the stream repeats a small set of photos per size class, so every response can be
compared byte for byte with what `Pipeline` (the same runtime as the server) makes of the same
input, computed once before the stream starts.
"""
from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["MIX", "SizeClass", "Photo", "Job", "parse_mix", "source_photos", "build_pool", "largest", "schedule"]


@dataclass(frozen=True)
class SizeClass:
    name: str
    width: int
    height: int
    weight: float  # share of the stream

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6


# Weighted towards phone photos; 0.3 MP web images up to today's 50 MP phone files (the default
# pixel limit, interface.DEFAULT_MAX_PIXELS).
MIX: tuple[SizeClass, ...] = (
    SizeClass("web_0.3mp", 640, 480, 0.25),
    SizeClass("hd_2mp", 1920, 1080, 0.20),
    SizeClass("phone_12mp", 4032, 3024, 0.28),
    SizeClass("phone_portrait_12mp", 3024, 4032, 0.12),
    SizeClass("6k_25mp", 6144, 4096, 0.10),
    SizeClass("camera_50mp", 8192, 6144, 0.05),
)


def parse_mix(text: str | None) -> tuple[SizeClass, ...]:
    """`name=WxH:weight,...` (or a comma list of MIX names) -> size classes; None -> MIX."""
    if not text:
        return MIX
    known = {c.name: c for c in MIX}
    classes = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if item in known:
            classes.append(known[item])
            continue
        try:
            name, spec = item.split("=", 1)
            size, weight = spec.split(":", 1)
            width, height = (int(v) for v in size.lower().split("x"))
            classes.append(SizeClass(name, width, height, float(weight)))
        except ValueError:
            raise ValueError(f"--mix item {item!r}: expected one of {', '.join(known)} or NAME=WxH:WEIGHT") from None
        if width < 8 or height < 8 or classes[-1].weight <= 0:
            raise ValueError(f"--mix item {item!r}: sizes must be >= 8 pixels and weights > 0")
    if not classes:
        raise ValueError("--mix is empty")
    return tuple(classes)


@dataclass
class Photo:
    size_class: SizeClass
    source: str
    image: np.ndarray            # HxWx3 uint8
    thumbnail: bytes = b""       # Pipeline.encode(image)
    decoded_digest: bytes = b""  # sha256 of Pipeline.decode(thumbnail)


@dataclass(frozen=True)
class Job:
    index: int
    op: str          # "encode" | "decode"
    protocol: str    # "http" | "grpc"
    photo: int       # index into the pool


def source_photos(extra_dirs: Sequence[Path] = ()) -> list[Path]:
    """The shipped sample photos, plus the JPEGs of `extra_dirs` that exist (e.g. ../shared/datasets/highres)."""
    from ..serving.demo import SAMPLE_PHOTOS  # the shipped photos (samples/photos)

    found = sorted(Path(SAMPLE_PHOTOS).glob("*.jpg"))
    for folder in extra_dirs:
        if folder.is_dir():
            found += sorted(folder.glob("*.jpg"))
    if not found:
        raise FileNotFoundError(f"no source photos in {SAMPLE_PHOTOS}")
    return found


def _cover_crop(source: Path, width: int, height: int, rng: random.Random) -> np.ndarray:
    """`source` resized (Lanczos) to cover width x height with a random margin, cropped at a random place."""
    from PIL import Image

    with Image.open(source) as opened:
        photo = opened.convert("RGB")
    k = max(width / photo.width, height / photo.height) * rng.uniform(1.0, 1.15)
    photo = photo.resize((max(width, round(photo.width * k)), max(height, round(photo.height * k))), Image.LANCZOS)
    left, top = rng.randint(0, photo.width - width), rng.randint(0, photo.height - height)
    return np.asarray(photo.crop((left, top, left + width, top + height)))


def build_pool(classes: Sequence[SizeClass], sources: Sequence[Path], per_class: int, seed: int) -> list[Photo]:
    """`per_class` photos per size class, each from another source photo (seeded)."""
    rng = random.Random(seed)
    pool = []
    for size_class in classes:
        for path in rng.sample(list(sources), min(per_class, len(sources))):
            pool.append(Photo(size_class, path.name, _cover_crop(path, size_class.width, size_class.height, rng)))
    return pool


def largest(pool: Sequence[Photo]) -> int:
    """The index of a photo of the largest class."""
    return max(range(len(pool)), key=lambda i: pool[i].size_class.width * pool[i].size_class.height)


def schedule(pool: Sequence[Photo], seed: int, limit: int, start: int = 0) -> Iterator[Job]:
    """Seeded draws from the mix: the class by weight, a photo of it, encode or decode and HTTP or
    gRPC with even odds."""
    rng = random.Random(seed + 1)
    classes = sorted({p.size_class for p in pool}, key=lambda c: c.name)
    weights = [c.weight for c in classes]
    members = {c: [i for i, p in enumerate(pool) if p.size_class == c] for c in classes}
    for index in range(start, limit):
        size_class = rng.choices(classes, weights)[0]
        yield Job(index, rng.choice(("encode", "decode")), rng.choice(("http", "grpc")), rng.choice(members[size_class]))
