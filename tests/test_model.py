"""The model's own contracts: QPM tables in baseline-JPEG range, an untrained encoder emits
Pillow's bicubic thumbnail, the decoder's output shape, the quantization limit."""
from __future__ import annotations

import numpy as np
import torch
from conftest import photo_like

from hyperthumbnail.codec.images import bicubic_downscale
from hyperthumbnail.interface import COEF_LIMIT
from hyperthumbnail.model import HyperThumbnail, ModelConfig
from hyperthumbnail.model.dct import image_to_coefficients


def untrained(scale: int = 4) -> HyperThumbnail:
    torch.manual_seed(0)
    return HyperThumbnail(ModelConfig(scale=scale)).eval()


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0


def test_qpm_tables_stay_in_baseline_range_at_any_scale():
    model = untrained()
    coef = image_to_coefficients(torch.rand(2, 3, 64, 96) * 1.0)
    for table_scale in (1 / 1024, 0.3, 1.0, 7.0, 1e4):
        with torch.no_grad():
            tables = model.qpm(coef, table_scale)
        assert tables.shape == (2, 2, 64)
        assert torch.equal(tables, tables.round())
        assert tables.min() >= 1 and tables.max() <= 255


def test_untrained_encoder_emits_the_bicubic_thumbnail():
    """The encoder's last layer starts at zero: its thumbnail is Pillow's bicubic downscale."""
    for scale in (2, 4):
        image = photo_like(128, 96, seed=scale)
        with torch.no_grad():
            thumbnail = untrained(scale).encoder(to_tensor(image))
        pixels = (thumbnail[0].permute(1, 2, 0).numpy() * 255).round()
        assert np.abs(pixels - bicubic_downscale(image, scale)).max() <= 1  # float vs Pillow's integer rounding


def test_decode_shape_and_range():
    model = untrained()
    hr = to_tensor(photo_like(96, 64))
    q, tables = model.encode(hr)
    assert q.dtype == torch.int16 and q.shape == (1, 3, 64, 2, 3)
    assert tables.dtype == torch.uint8 and tables.shape == (1, 2, 64)
    out = model.decode(q, tables)
    assert out.shape == hr.shape and out.min() >= 0 and out.max() <= 1


def test_quantization_clamps_to_the_baseline_limit():
    model = untrained()
    huge = torch.full((1, 3, 64, 1, 1), 1e7)
    q, _ = model.quantize(huge)
    assert q.abs().max() == COEF_LIMIT


def test_the_served_split_reads_the_thumbnail_before_bf16_rounds_it():
    """The served decoder splits one conv later than training (`Decoder.head_features`): the same
    photo either way, the body's head conv reads the exact float features and the thumbnail comes in
    two parts, the first exact in bf16, so rounding the body's input to bf16 (what an OpenVINO bf16
    body does) costs a fraction of what it did."""
    from hyperthumbnail.codec.images import load_image
    from hyperthumbnail.serving.demo import SAMPLE_PHOTOS
    from hyperthumbnail.weights import default_weights_path, load_model

    model = load_model(default_weights_path(4), 4).eval()
    photo = np.array(load_image(SAMPLE_PHOTOS / "maple.jpg")[:256, :384])
    hr = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        q, tables = model.quantize(image_to_coefficients(model.encoder(hr)))
        decoder = model.decoder
        reference = decoder(q, tables)
        head_features = decoder.head_features(q, tables)
        torch.testing.assert_close(decoder.body_from_head_features(head_features), reference, rtol=0, atol=1e-5)
        coarse = head_features[:, :3]
        assert torch.equal(coarse.bfloat16().float(), coarse)
        as_trained = decoder.body_from_features(decoder.features(q, tables).bfloat16().float())
        as_served = decoder.body_from_head_features(head_features.bfloat16().float())
    error = {name: float(((out - reference) * 255).square().mean()) for name, out in
             {"trained split": as_trained, "served split": as_served}.items()}
    assert error["served split"] < 0.25 * error["trained split"], error
