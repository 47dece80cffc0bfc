"""`make demo` (README command 1): the shipped sample photos and what the demo writes for each."""
from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import photo_like
from PIL import Image

from hyperthumbnail.codec.images import list_images
from hyperthumbnail.serving import demo

MAX_SAMPLE_BYTES = 8 * 2**20  # the repository's budget for sample photos


def test_shipped_samples_are_real_photos_within_the_budget():
    photos = list_images(demo.SAMPLE_PHOTOS)
    assert 3 <= len(photos) <= 4
    assert sum(p.stat().st_size for p in photos) <= MAX_SAMPLE_BYTES
    sizes = [Image.open(p).size for p in photos]
    assert max(w * h for w, h in sizes) >= 12_000_000  # the large-photo (tiled) path is part of the demo
    attribution = (demo.SAMPLE_PHOTOS.parent / "ATTRIBUTION.md").read_text()
    for path in photos:  # every photo has its source and licence
        section = attribution.split(f"## photos/{path.name}", 1)[1].split("\n## ", 1)[0]
        assert re.search(r"Licen[cs]e", section) and "Package" in section


@pytest.mark.server
def test_demo_writes_thumbnail_restored_photo_and_comparison(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    image = photo_like(416, 300, seed=60)
    Image.fromarray(image).save(photos / "garden.png")
    out = tmp_path / "demo"
    assert demo.main(["--photos", str(photos), "--out", str(out), "--repository", str(tmp_path / "repo")]) == 0
    thumb = Image.open(out / "garden.jpg")
    assert thumb.format == "JPEG" and thumb.size == (104, 75)
    restored = np.asarray(Image.open(out / "garden_restored.png"))
    assert restored.shape == image.shape
    picture = Image.open(out / "garden_comparison.png")
    assert picture.width > 4 * 192 and picture.height > 192  # four zoomed crop panels side by side
    printed = capsys.readouterr().out
    assert "garden.png" in printed and str(out / "garden_comparison.png") in printed


def test_demo_names_a_folder_without_photos(tmp_path, capsys):
    with pytest.raises(SystemExit):
        demo.main(["--photos", str(tmp_path)])
    assert f") in {tmp_path}" in capsys.readouterr().err  # "no images (.bmp, ...) in DIR"


def test_the_most_detailed_crop_is_where_the_detail_is():
    from hyperthumbnail.benchmarks.comparison import most_detailed_box

    image = np.full((400, 600, 3), 128, np.uint8)
    image[200:300, 384:480] = photo_like(96, 100, seed=61)
    x, y = most_detailed_box(image, 192)
    assert x <= 384 and x + 192 >= 480 and y <= 200 and y + 192 >= 300
