"""Evaluate a model on images with real .jpg files: bpp of the whole file, HR PSNR/SSIM, and the
thumbnail (as a JPEG viewer decodes it) against Pillow's bicubic downscale."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .codec.images import bicubic_downscale, crop_to, list_images, load_image, pad_to_multiple
from .codec.steps import encode_thumbnail
from .metrics import bpp as bits_per_pixel
from .metrics import psnr
from .model import HyperThumbnail


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None].float().div(255.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x[0].clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


@torch.no_grad()
def thumbnail_file(model: HyperThumbnail, image: np.ndarray,
                   device: torch.device | str = "cpu") -> tuple[bytes, torch.Tensor, torch.Tensor]:
    """The .jpg `model` makes of an HxWx3 uint8 photo, with its quantized coefficients and tables."""
    height, width = image.shape[:2]
    hr = to_tensor(pad_to_multiple(image, model.block)).to(device)
    q, tables = model.encode(hr)
    return encode_thumbnail(q[0].cpu().numpy(), tables[0].cpu().numpy(), (width, height), model.scale), q, tables


def folder_bpp(model: HyperThumbnail, folder: str | Path, device: torch.device | str = "cpu") -> float:
    """Mean bpp of the .jpg files `model` makes of a folder's photos (no decoding)."""
    images = [load_image(p) for p in list_images(folder)]
    return float(np.mean([bits_per_pixel(len(thumbnail_file(model, im, device)[0]), im.shape[1], im.shape[0])
                          for im in images]))


@torch.no_grad()
def evaluate_image(model: HyperThumbnail, image: np.ndarray, device: torch.device | str = "cpu",
                   encoder: HyperThumbnail | None = None) -> dict[str, float]:
    """`encoder`: another model's encoder and QPM make the thumbnail (older weights' thumbnails
    rebuilt by `model`'s decoder); by default `model`'s own."""
    height, width = image.shape[:2]
    s = model.scale
    jpeg, q, tables = thumbnail_file(encoder or model, image, device)
    recon = crop_to(to_uint8(model.decode(q, tables)), width, height)
    thumb = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))  # what any viewer shows
    ref = bicubic_downscale(image, s)
    return {
        "bpp": bits_per_pixel(len(jpeg), width, height),
        "psnr": psnr(recon, image),
        "lr_psnr": psnr(thumb, ref),
    }


def evaluate_folder(model: HyperThumbnail, folder: str | Path, device: torch.device | str = "cpu",
                    limit: int | None = None, encoder: HyperThumbnail | None = None) -> dict[str, float]:
    """Means over the images, plus the worst image's thumbnail PSNR (`lr_psnr_worst`)."""
    rows = [evaluate_image(model, load_image(p), device, encoder) for p in list_images(folder)[:limit]]
    means = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    return {**means, "lr_psnr_worst": float(min(r["lr_psnr"] for r in rows))}
