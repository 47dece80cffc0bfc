"""`python -m hyperthumbnail.training.release`: a checkpoint becomes the shipped weights, with a card
measured on the shipped bytes, and the generation it replaces stays shipped for its thumbnails."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import SMALL, photo_like, small_weights
from PIL import Image

import hyperthumbnail.weights as weights
from hyperthumbnail.cli import main as cli
from hyperthumbnail.model import HyperThumbnail, ModelConfig
from hyperthumbnail.training.release import main as release
from hyperthumbnail.weights import card_path, file_sha256, model_id, served_model_ids


def checkpoint(path: Path, seed: int) -> Path:
    """A training checkpoint as `train` writes it (only what an export reads)."""
    torch.manual_seed(seed)
    model = HyperThumbnail(ModelConfig(**SMALL))
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    torch.save({"model_config": model.config.to_dict(), "model": model.state_dict(), "ema": None}, path)
    return path


def bench_rd(data_root: Path, out: Path, candidate: Path, *extra: str) -> Path:
    assert cli(["bench", "rd", "--datasets", "tiny", "--data-root", str(data_root), "--methods", "hyperthumbnail,bicubic_jpeg",
                "--weights", str(candidate), "--out", str(out), *extra]) == 0
    return out / "rd.json"


def test_release_ships_the_measured_bytes_and_keeps_the_generations_users_store(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HYPERTHUMBNAIL_CACHE", str(tmp_path / "graphs"))
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path / "weights")
    monkeypatch.setattr(weights, "OLDER_WEIGHTS_DIR", tmp_path / "weights" / "older")
    (tmp_path / "data" / "tiny").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(photo_like(96, 64, seed=i)).save(tmp_path / "data" / "tiny" / f"img{i}.png")
    installed = weights.default_weights_path(4)
    first = small_weights(installed, 1)
    card_path(first).write_text(json.dumps({"version": "v1", "runs": [{"run": "r1"}]}))
    first_bytes, first_id = first.read_bytes(), model_id(first)

    # v2 does not decode v1's thumbnails: v1 moves to older/, byte for byte, with its card.
    v2 = tmp_path / "c2" / "c2.safetensors"
    assert release(["export", str(checkpoint(tmp_path / "c2.pt", 2)), str(v2)]) == 0
    rd = bench_rd(tmp_path / "data", tmp_path / "c2" / "rd", v2)
    (tmp_path / "card.json").write_text(json.dumps({"version": "v2", "runs": [{"run": "r2"}], "sha256": "stale"}))
    assert release(["ship", str(v2), "--rd", str(rd), "--card", str(tmp_path / "card.json")]) == 0
    retired = weights.OLDER_WEIGHTS_DIR / f"hyperthumbnail_x4_{first_id}.safetensors"
    assert retired.read_bytes() == first_bytes and json.loads(card_path(retired).read_text())["version"] == "v1"
    assert installed.read_bytes() == v2.read_bytes()
    card = json.loads(card_path(installed).read_text())
    measured = json.loads(rd.read_text())["tiny"]
    assert card["version"] == "v2" and [r["run"] for r in card["runs"]] == ["r1", "r2"]
    assert card["sha256"] == file_sha256(installed) and card["model_id"] == model_id(installed)
    assert card["measured"]["tiny"]["psnr"] == round(measured["hyperthumbnail"]["psnr"], 3)
    assert card["measured"]["tiny"]["gain_over_bicubic_jpeg_db"] == round(
        measured["hyperthumbnail"]["psnr"] - measured["bicubic_jpeg"]["psnr"], 2)
    assert weights.shipped_weights(4) == (installed, retired)

    # v3's decoder serves v2's thumbnails: v2 is simply replaced, and the card records how v2's stored files decode.
    v3 = tmp_path / "c3" / "c3.safetensors"
    v2_id = model_id(installed)
    assert release(["export", str(checkpoint(tmp_path / "c3.pt", 3)), str(v3), "--also-decode", v2_id]) == 0
    assert served_model_ids(v3) == (model_id(v3), v2_id)
    rd3 = bench_rd(tmp_path / "data", tmp_path / "c3" / "rd", v3)
    capsys.readouterr()
    assert release(["ship", str(v3), "--rd", str(rd), "--card", str(tmp_path / "card.json")]) == 1  # v2's numbers
    assert f"not the candidate's {file_sha256(v3)}" in capsys.readouterr().err
    assert installed.read_bytes() == v2.read_bytes()  # nothing touched
    stored = bench_rd(tmp_path / "data", tmp_path / "c3" / "stored_v2", v3, "--thumbnails-by", str(installed))
    assert release(["ship", str(v3), "--rd", str(rd3), "--stored", f"stored_thumbnails_v2={stored}"]) == 0
    assert installed.read_bytes() == v3.read_bytes() and weights.shipped_weights(4) == (installed, retired)
    card = json.loads(card_path(installed).read_text())
    assert card["version"] == "v2" and card["served_model_ids"] == [model_id(v3), v2_id]
    assert card["measured"]["stored_thumbnails_v2"]["thumbnails_by"]["model_id"] == v2_id
    assert not list(weights.WEIGHTS_DIR.glob("*.new"))


@pytest.mark.parametrize("spec", ["stored.json", "=x.json", "key="])
def test_release_refuses_a_malformed_stored_spec(spec, tmp_path, capsys):
    with pytest.raises(SystemExit):
        release(["ship", str(tmp_path / "c.safetensors"), "--rd", str(tmp_path / "rd.json"), "--stored", spec])
    assert "expected KEY=PATH" in capsys.readouterr().err


def test_folding_a_table_scale_scales_the_learned_tables():
    """`QPM.fold_table_scale`: the learned part of each table (above the +1.49 rounding offset)
    grows by the scale, within one rounding step, for luma and chroma."""
    from conftest import photo_like as photo

    from hyperthumbnail.evaluation import to_tensor

    torch.manual_seed(0)
    model = HyperThumbnail(ModelConfig(**SMALL)).eval()
    hr = to_tensor(photo(64, 64, seed=3))
    _, before = model.encode(hr)
    model.qpm.fold_table_scale(1.5)
    _, after = model.encode(hr)
    expected = (before.float() - 1.49) * 1.5 + 1.49
    assert (after.float() - expected).abs().max() <= 1.0 and (after > before).float().mean() > 0.5
    with pytest.raises(ValueError, match="positive"):
        model.qpm.fold_table_scale(0.0)


def test_export_fits_the_table_scale_to_a_target_bitrate(tmp_path, capsys):
    """`export --fit-bpp`: the exported file's own .jpg files average the target (within 2e-4 bpp) on the given photos,
    its card records the folded scale, and a target out of reach is a clear error."""
    from hyperthumbnail.evaluation import folder_bpp
    from hyperthumbnail.weights import load_model

    data = tmp_path / "photos"
    data.mkdir()
    for i in range(2):
        Image.fromarray(photo_like(128, 96, seed=i)).save(data / f"img{i}.png")
    ckpt, out = checkpoint(tmp_path / "c.pt", 2), tmp_path / "c.safetensors"
    assert release(["export", str(ckpt), str(out)]) == 0
    plain = folder_bpp(load_model(out), data)
    target = round(plain * 0.9, 4)
    assert release(["export", str(ckpt), str(out), "--fit-bpp", str(target), "--fit-data", str(data)]) == 0
    assert "table scale" in capsys.readouterr().out
    fitted = folder_bpp(load_model(out), data)
    assert abs(fitted - target) <= 2e-4 or target - 0.02 * plain <= fitted <= target  # the tolerance, else under it
    assert json.loads(card_path(out).read_text())["qpm_table_scale"] > 1.0
    assert release(["export", str(ckpt), str(out), "--fit-bpp", "0.0001", "--fit-data", str(data)]) == 1
    assert "no table scale" in capsys.readouterr().err
    assert release(["export", str(ckpt), str(out), "--fit-bpp", "0.3"]) == 1
    assert "--fit-data" in capsys.readouterr().err
