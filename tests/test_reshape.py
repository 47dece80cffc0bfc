"""`python -m hyperthumbnail.training.reshape`: a wider decoder body decodes exactly as before, and
blocks are dropped cheapest first; the encoder (model id) and the older ids it serves are kept."""
from __future__ import annotations

import torch
from conftest import SMALL, photo_like, small_weights
from PIL import Image

from hyperthumbnail.model import HyperThumbnail, ModelConfig
from hyperthumbnail.training.reshape import drop_blocks, main, widen_body
from hyperthumbnail.weights import load_model, model_id, served_model_ids


def trained_like(blocks: int) -> HyperThumbnail:
    """A tiny model whose decoder body is not the identity (its zero tail moved)."""
    torch.manual_seed(0)
    model = HyperThumbnail(ModelConfig(**{**SMALL, "decoder_blocks": blocks})).eval()
    with torch.no_grad():
        for p in model.decoder.body.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def test_widening_keeps_the_function_and_gives_the_new_channels_gradients():
    model = trained_like(3)
    features = torch.rand(2, 3 + SMALL["coef_feats"], 12, 12)
    before = model.decoder.body_from_features(features).detach()
    widen_body(model.decoder.body, 16)
    after = model.decoder.body_from_features(features)
    assert model.decoder.body.head.out_channels == 16
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)
    after.square().mean().backward()
    tail = model.decoder.body.tail[0].weight
    assert not tail[:, 8:].any() and tail.grad[:, 8:].abs().sum() > 0  # zero, yet it learns


def test_drop_blocks_removes_the_one_that_costs_least():
    model = trained_like(3)
    features = torch.rand(2, 3 + SMALL["coef_feats"], 12, 12)
    target = model.decoder.body_from_features(features).detach().clamp(0, 1)
    blocks = list(model.decoder.body.body[:-1])
    costs = []
    full = model.decoder.body.body
    with torch.no_grad():
        for i in range(3):  # each removal alone, measured here
            model.decoder.body.body = torch.nn.Sequential(*blocks[:i], *blocks[i + 1:], full[-1])
            out = model.decoder.body_from_features(features).clamp(0, 1)
            costs.append(float(torch.nn.functional.mse_loss(out, target)))
    model.decoder.body.body = full
    removed = drop_blocks(model, 2, features, target)
    assert [index for index, _ in removed] == [min(range(3), key=costs.__getitem__)]
    assert len(model.decoder.body.body) == 3  # two residual blocks and the closing conv


def test_reshape_cli_keeps_the_encoder_and_the_ids_it_serves(tmp_path):
    source = small_weights(tmp_path / "w.safetensors", 1, also_decodes=("0123456789abcdef",))
    data = tmp_path / "train"
    data.mkdir()
    for i in range(2):
        Image.fromarray(photo_like(96, 80, seed=i)).save(data / f"{i}.png")
    out = tmp_path / "wide.safetensors"
    assert main([str(source), str(out), "--decoder-feats", "16", "--decoder-blocks", "1", "--data", str(data),
                 "--crops", "2", "--crop-size", "64"]) == 0
    reshaped = load_model(out)
    assert reshaped.config.decoder_feats == 16 and reshaped.config.decoder_blocks == 1
    assert model_id(out) == model_id(source)
    assert served_model_ids(out) == served_model_ids(source)


def test_training_takes_the_decoder_shape_from_its_init_weights_then_from_its_checkpoint(tmp_path):
    from dataclasses import replace

    from hyperthumbnail.training.checkpoint import save_checkpoint
    from hyperthumbnail.training.train import TrainConfig, Trainer
    from hyperthumbnail.weights import save_weights

    model = trained_like(3)
    widen_body(model.decoder.body, 16)
    model.config = replace(model.config, decoder_feats=16, decoder_blocks=3)
    save_weights(model, tmp_path / "wide.safetensors", {})
    cfg = TrainConfig(data=str(tmp_path), run_dir=str(tmp_path / "run"), val_data=None,
                      init_weights=str(tmp_path / "wide.safetensors"), model=ModelConfig(**SMALL))  # SMALL: 8 x 1
    trainer = Trainer(cfg)
    assert (trainer.model.config.decoder_feats, trainer.model.config.decoder_blocks) == (16, 3)
    trainer._init_from(cfg.init_weights)
    wide = load_model(tmp_path / "wide.safetensors")
    assert all(torch.equal(v, wide.decoder.state_dict()[k]) for k, v in trainer.model.decoder.state_dict().items())
    save_checkpoint(tmp_path / "run" / "last.pt", trainer.state())
    resumed = Trainer(replace(cfg, init_weights=None))
    assert resumed.model.config.decoder_feats == 16 and resumed.resume()


def test_a_reshaped_decoder_still_trains_on_older_encoders_thumbnails(tmp_path):
    import pytest

    from hyperthumbnail.training.older_encoders import OlderEncoders

    older = small_weights(tmp_path / "older.safetensors", 2)
    config = ModelConfig(**{**SMALL, "decoder_feats": 16, "decoder_blocks": 3})
    assert OlderEncoders([str(older)], None, config, torch.device("cpu")).served_ids == (model_id(older),)
    with pytest.raises(ValueError, match="another architecture"):  # another encoder shape: refused
        OlderEncoders([str(older)], None, ModelConfig(**{**SMALL, "encoder_feats": 16}), torch.device("cpu"))
