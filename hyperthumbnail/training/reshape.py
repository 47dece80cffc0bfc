"""A decoder body of another shape, started from trained weights: wider (exactly the same
function) and with fewer residual blocks (the ones whose removal costs least on training crops).

oneDNN's bf16 kernels run 32 channels more efficiently than 24 (`bench decoder-width`), so a body
32 wide and a few blocks shorter has more weights for the same 6K decode time. Widening is
function-preserving: every connection from a new channel into an old one starts at zero, every
connection into a new channel starts small and random (so the new channels have activations and
the zero connections get gradients). Dropping a residual block is not: blocks are removed one at a
time, each time the one whose removal raises the decoder's MSE least on a fixed set of training
crops (thumbnails by the model's own encoder), and decoder-only training then recovers.

    python -m hyperthumbnail.training.reshape hyperthumbnail/weights/hyperthumbnail_x4.safetensors \\
        build/x4_w32b13.safetensors --decoder-feats 32 --decoder-blocks 13 --data ../shared/datasets/train

The written file keeps the encoder and QPM (so the model id and every stored thumbnail stay
valid) and its `also_decodes`; `train --init-weights` takes the decoder's shape from it.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..model import HyperThumbnail
from ..model.blocks import EDSRLite
from ..weights import load_model, save_weights, served_model_ids

__all__ = ["drop_blocks", "main", "widen_body"]

NEW_CHANNEL_INIT_STD = 0.01  # small: the new channels start near silent


def _grow(weight: torch.Tensor, out_ch: int, in_ch: int, generator: torch.Generator) -> torch.Tensor:
    """A conv weight (O, I, k, k) grown to (out_ch, in_ch, k, k): old block kept, new inputs into old
    outputs zero, everything into new outputs small and random."""
    o, i, kh, kw = weight.shape
    grown = torch.zeros(out_ch, in_ch, kh, kw, dtype=weight.dtype)
    grown[:o, :i] = weight
    grown[o:] = NEW_CHANNEL_INIT_STD * torch.randn(out_ch - o, in_ch, kh, kw, generator=generator, dtype=weight.dtype)
    return grown


def _grow_conv(conv: nn.Conv2d, out_ch: int, in_ch: int, generator: torch.Generator) -> nn.Conv2d:
    new = nn.Conv2d(in_ch, out_ch, conv.kernel_size, padding=conv.padding, bias=conv.bias is not None)
    with torch.no_grad():
        new.weight.copy_(_grow(conv.weight.detach(), out_ch, in_ch, generator))
        if conv.bias is not None:
            new.bias.zero_()
            new.bias[:conv.out_channels] = conv.bias.detach()
    return new


def widen_body(body: EDSRLite, feats: int, seed: int = 0) -> None:
    """Widen an EDSR-lite body in place to `feats` channels without changing its output."""
    old = body.head.out_channels
    if feats < old:
        raise ValueError(f"cannot narrow a body of {old} features to {feats}")
    if feats == old:
        return
    generator = torch.Generator().manual_seed(seed)
    body.head = _grow_conv(body.head, feats, body.head.in_channels, generator)
    for block in body.body[:-1]:
        block.body[0] = _grow_conv(block.body[0], feats, feats, generator)
        block.body[2] = _grow_conv(block.body[2], feats, feats, generator)
    body.body[-1] = _grow_conv(body.body[-1], feats, feats, generator)
    tail = body.tail[0]
    body.tail[0] = _grow_conv(tail, tail.out_channels, feats, generator)  # reads the new channels with zeros


@torch.no_grad()
def _crops(model: HyperThumbnail, data: Path, count: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, HR) of `count` training crops, thumbnails by the model's own encoder (rounded)."""
    from ..codec.images import list_images, load_image
    from ..model.dct import image_to_coefficients

    rng = np.random.default_rng(seed)
    paths = list_images(data)
    feats, hrs = [], []
    while len(hrs) < count:
        image = load_image(paths[rng.integers(len(paths))])
        if min(image.shape[:2]) < size:
            continue
        y = rng.integers(0, image.shape[0] - size + 1)
        x = rng.integers(0, image.shape[1] - size + 1)
        hr = torch.from_numpy(np.ascontiguousarray(image[y:y + size, x:x + size])).permute(2, 0, 1)[None].float() / 255
        q, tables = model.quantize(image_to_coefficients(model.encoder(hr)))
        feats.append(model.decoder.features(q, tables))
        hrs.append(hr)
    return torch.cat(feats), torch.cat(hrs)


@torch.no_grad()
def _mse(model: HyperThumbnail, features: torch.Tensor, hr: torch.Tensor) -> float:
    return float(torch.nn.functional.mse_loss(model.decoder.body_from_features(features).clamp(0, 1), hr))


@torch.no_grad()
def drop_blocks(model: HyperThumbnail, blocks: int, features: torch.Tensor, hr: torch.Tensor) -> list[tuple[int, float]]:
    """Remove residual blocks of the decoder body until `blocks` remain, each time the one whose
    removal raises the MSE on (features, hr) least. Returns [(removed index in the original
    numbering, MSE after)]."""
    layers = list(model.decoder.body.body)
    residual, last = layers[:-1], layers[-1]
    original = list(range(len(residual)))
    removed = []
    while len(residual) > blocks:
        trials = []
        for i in range(len(residual)):
            model.decoder.body.body = nn.Sequential(*residual[:i], *residual[i + 1:], last)
            trials.append((_mse(model, features, hr), i))
        mse, i = min(trials)
        removed.append((original.pop(i), mse))
        residual.pop(i)
    model.decoder.body.body = nn.Sequential(*residual, last)
    return removed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hyperthumbnail.training.reshape", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", help="trained weights (.safetensors)")
    p.add_argument("out", help="reshaped weights to write (.safetensors, fp16)")
    p.add_argument("--decoder-feats", type=int, required=True, help="decoder body width (>= the current one)")
    p.add_argument("--decoder-blocks", type=int, required=True, help="residual blocks to keep (<= the current number)")
    p.add_argument("--data", default="../shared/datasets/train", help="training photos for choosing blocks to drop")
    p.add_argument("--crops", type=int, default=32, help="crops that judge each removal")
    p.add_argument("--crop-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    model = load_model(args.weights).float().eval()
    config = model.config
    if args.decoder_blocks > config.decoder_blocks or args.decoder_blocks < 1:
        p.error(f"--decoder-blocks must be 1..{config.decoder_blocks}")
    features, hr = _crops(model, Path(args.data), args.crops, args.crop_size, args.seed)
    before = _mse(model, features, hr)
    widen_body(model.decoder.body, args.decoder_feats, args.seed)
    widened = _mse(model, features, hr)
    removed = drop_blocks(model, args.decoder_blocks, features, hr)
    model.config = replace(config, decoder_feats=args.decoder_feats, decoder_blocks=args.decoder_blocks)
    def psnr(mse: float) -> float:
        return -10 * np.log10(mse)

    print(f"decoder on {args.crops} training crops: {psnr(before):.3f} dB; widened to {args.decoder_feats}: "
          f"{psnr(widened):.3f} dB")
    for index, mse in removed:
        print(f"  without block {index}: {psnr(mse):.3f} dB")
    save_weights(model, Path(args.out), {"reshaped_from": str(args.weights), "command": " ".join(sys.argv)},
                 also_decodes=served_model_ids(args.weights)[1:])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
