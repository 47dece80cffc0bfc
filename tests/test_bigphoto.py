"""A phone photo at the default pixel limit (8192x6144, 50.3 MP) encodes and decodes through the
CLI (default runtime) within issue #19's memory bounds: <= 3 GiB to encode, <= 2 GiB to decode
(peak RSS of the command, measured as `benchmarks/bigphoto.py` does). About a minute per command
on 2 cores. The server side at this size: benchmarks/results/bigphoto.json."""
from __future__ import annotations

import numpy as np
from conftest import photo_like
from PIL import Image

from hyperthumbnail.benchmarks.bigphoto import BOUNDS_GIB
from hyperthumbnail.benchmarks.cli_runtimes import run_cli
from hyperthumbnail.codec.images import load_image
from hyperthumbnail.interface import DEFAULT_MAX_PIXELS
from hyperthumbnail.runtime import tiling

WIDTH, HEIGHT = 8192, 6144


def test_50mp_photo_encodes_and_decodes_within_the_memory_bounds(tmp_path):
    assert WIDTH * HEIGHT == DEFAULT_MAX_PIXELS  # the largest photo accepted by default
    # ... and one that tiles the decoder's coefficient branch too
    assert len(tiling.plan_tiles(HEIGHT // 32, WIDTH // 32, tiling.DECODER_FEATURES_MARGIN_BLOCKS,
                                 tiling.DEFAULT_FEATURE_TILE_BLOCKS)) > 1
    photo = tmp_path / "photo.jpg"
    # 1024x768 of photo-like content, Lanczos-upscaled: smooth like a phone photo's detail, cheap to make
    Image.fromarray(photo_like(1024, 768, seed=7)).resize((WIDTH, HEIGHT), Image.LANCZOS).save(photo, quality=95)
    encoded = run_cli(["encode", str(photo), "-o", str(tmp_path / "t.jpg")])
    assert encoded["peak_rss_gib"] <= BOUNDS_GIB["encode"], encoded
    decoded = run_cli(["decode", str(tmp_path / "t.jpg"), "-o", str(tmp_path / "d.png")])
    assert decoded["peak_rss_gib"] <= BOUNDS_GIB["decode"], decoded
    image = load_image(tmp_path / "d.png")
    assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8
    assert abs(float(image.mean()) - float(load_image(photo).mean())) < 3  # a real decode, not a blank
