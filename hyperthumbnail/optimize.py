"""Optimization-based encoding: refine one image's quantized coefficients by gradient descent.

The trained encoder is one feed-forward guess; for a single image we can do better by asking the
frozen decoder directly. Starting from the encoder's coefficients, Adam moves `y = coefficients /
table` (in quantization steps) through the frozen decoder to lower

    c * MSE(decoder(y), HR) + w_guide * MSE(thumbnail(y), bicubic(HR)) + w_rate * bpp_est(y)

and the file is written from `round(y)`. The tables stay the ones the QPM predicted for the
encoder's output (times `table_scale`), so rate control keeps its meaning.

Distortion: HR MSE (what PSNR reports), scaled by c = L1/MSE of the plain encode so the terms
weigh as in training, where the loss is L1. Optimizing L1 itself was measured first (Kodak
kodim01-02, N=20): it lowered L1 and the file but cost 0.18 dB PSNR (L1 and MSE disagree).

Rounding: the decoder sees the continuous `y` while optimizing (a relaxation), and every step's
*rounded* coefficients are evaluated exactly (decoder, thumbnail, real Huffman-coded size). Straight-
through rounding (decoder on round(y), identity gradient) was tried first and made every term
worse from the first steps: Adam's sign-like steps flip rounding decisions whose gradients are
noise. Annealing from relaxed to straight-through did the same once the rounding weight grew.

Constraints are held at the plain encode: the real file may not grow and the thumbnail PSNR
(against the bicubic downscale) may fall at most `thumbnail_slack_db`. `w_rate` and `w_guide` are
Lagrange multipliers moved by dual ascent (as in training) on those measured values, and the
returned file is the step with the highest HR PSNR that met both, so it is never worse than the
plain encode (step 0 is the plain encode): the encoder has the original, so this is measured.
`bpp_est` is a smooth proxy, sum(log2(1 + |y|)), scaled to the real scan bits of the plain file
(shipped weights carry no learned rate model); it only steers, the constraint uses real bytes.

Needs the PyTorch model (gradients): `Pipeline(runtime="torch").model`.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import psutil
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .codec.steps import StepError, encode_thumbnail, preprocess
from .codec.thumbnail import scan_bytes
from .interface import COEF_LIMIT
from .model import HyperThumbnail
from .model.dct import coefficients_to_image, image_to_coefficients
from .model.qpm import expand_tables
from .weights import model_id

__all__ = ["BYTES_PER_PIXEL", "OptimizeConfig", "OptimizeResult", "check_memory", "optimize_encoding"]

# A step keeps the decoder's activations at HR size for its backward pass. Peak RSS of
# `encode --optimize 1` (one thread, Zen 4): 0.64 / 1.43 / 2.53 GB at 0.52 / 2.07 / 4.67 Mpx, i.e.
# ~0.4 GB plus ~460 bytes per photo pixel (a 6028x3391 photo: ~10 GB).
BYTES_PER_PIXEL = 460


@dataclass(frozen=True)
class OptimizeConfig:
    lr: float = 0.05                 # Adam step size, in quantization steps
    init_rate_weight: float = 0.05   # starting multipliers; training's rate weight, the guide weight
    init_guide_weight: float = 20.0  # that held the thumbnail in DESIGN.md's probes
    dual_lr: float = 5.0             # log-multiplier step per unit of violation (few steps: act fast)
    thumbnail_slack_db: float = 0.1  # how far the thumbnail PSNR may fall below the plain encode's
    max_weight: float = 1e4


@dataclass
class OptimizeResult:
    data: bytes                    # the .jpg written from the chosen step's coefficients
    table_scale: float
    best_step: int                 # 0: no step beat the plain encode
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)  # measured terms per step


def _rate_proxy(y: torch.Tensor) -> torch.Tensor:
    """Smooth stand-in for Huffman bits: log2(1 + |y|) summed over every coefficient."""
    return torch.log2(1.0 + y.abs()).sum()


def _psnr(mse: torch.Tensor) -> float:
    return -10.0 * math.log10(max(float(mse), 1e-12))


def check_memory(width: int, height: int, available: int | None = None) -> None:
    """Refuse (StepError) a photo whose optimization would not fit in the memory available now,
    rather than let the kernel kill the process halfway."""
    need = BYTES_PER_PIXEL * width * height
    available = psutil.virtual_memory().available if available is None else available
    if need > available:
        raise StepError(f"optimizing a {width}x{height} photo needs about {need / 2**30:.1f} GiB for its gradients, "
                        f"{available / 2**30:.1f} GiB is available: encode it without --optimize, or a smaller photo")


def optimize_encoding(model: HyperThumbnail, image: np.ndarray, steps: int, table_scale: float = 1.0,
                      config: OptimizeConfig = OptimizeConfig(), progress: bool = False) -> OptimizeResult:
    """Encode `image` (HxWx3 uint8 RGB) with `steps` Adam steps on its coefficients -> .jpg bytes + log.
    `progress`: a bar on stderr when it is a terminal (a 6K photo takes minutes per step)."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if steps:
        check_memory(image.shape[1], image.shape[0])
    was_training, flags = model.training, [p.requires_grad for p in model.parameters()]
    model.eval().requires_grad_(False)  # gradients for the coefficients only
    try:
        return _optimize(model, image, steps, table_scale, config, progress)
    finally:
        model.train(was_training)
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


def _optimize(model: HyperThumbnail, image: np.ndarray, steps: int, table_scale: float,
              config: OptimizeConfig, progress: bool) -> OptimizeResult:
    start_time = time.perf_counter()
    scale = model.scale
    chw, hr_size = preprocess(image, scale)
    width, height = hr_size
    lw, lh = math.ceil(width / scale), math.ceil(height / scale)
    hr = torch.from_numpy(chw)[None]
    with torch.no_grad():
        coefficients = image_to_coefficients(model.encoder(hr))
        q0, tables = model.quantize(coefficients, table_scale)
        lr_ref = model.reference_downscale(hr)[..., :lh, :lw]
    t = expand_tables(tables)
    hr = hr[..., :height, :width]
    pixels = width * height
    made_by = model_id(model)

    def write(q: torch.Tensor) -> bytes:
        return encode_thumbnail(q[0].to(torch.int16).numpy(), tables[0].to(torch.uint8).numpy(), hr_size, scale,
                                made_by)

    def terms(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(HR MSE, thumbnail MSE, HR L1) of coefficients q (rounded or relaxed)."""
        hr_hat = model.decoder(q, tables)[..., :height, :width]
        guide = F.mse_loss(coefficients_to_image(q * t)[..., :lh, :lw], lr_ref)
        return F.mse_loss(hr_hat.clamp(0, 1), hr), guide, F.l1_loss(hr_hat.detach(), hr)

    plain = write(q0)
    header_bits = 8.0 * (len(plain) - scan_bytes(plain))
    y = (coefficients / t).requires_grad_(True)
    with torch.no_grad():
        calibration = 8.0 * scan_bytes(plain) / max(float(_rate_proxy(y)), 1.0)
    optimizer = torch.optim.Adam([y], lr=config.lr)
    log_w_rate, log_w_guide = math.log(config.init_rate_weight), math.log(config.init_guide_weight)
    log_limit = math.log(config.max_weight)
    best_mse, best_data, best_step = math.inf, plain, 0
    history: list[dict[str, float]] = []
    bar = tqdm(total=steps, desc="optimize", unit="step", leave=False, disable=not (progress and sys.stderr.isatty()))
    for step in range(steps + 1):  # step 0 measures the plain encode; the last update is not taken
        with torch.no_grad():  # what the file written now would give
            q = torch.round(y).clamp(-COEF_LIMIT, COEF_LIMIT)
            mse, guide, l1 = terms(q)
            data = plain if step == 0 else write(q)
        thumb_psnr = _psnr(guide)
        if step == 0:
            thumb_floor = thumb_psnr - config.thumbnail_slack_db
            mse_weight = float(l1) / max(float(mse), 1e-12)
        stats = {"step": step, "l1": float(l1), "bpp": 8.0 * len(data) / pixels, "thumb_psnr": thumb_psnr,
                 "hr_psnr": _psnr(mse), "w_rate": math.exp(log_w_rate), "w_guide": math.exp(log_w_guide)}
        history.append(stats)
        if len(data) <= len(plain) and thumb_psnr >= thumb_floor and float(mse) < best_mse:
            best_mse, best_data, best_step = float(mse), data, step
        if step == steps:
            break
        mse_relaxed, guide_relaxed, _ = terms(y.clamp(-COEF_LIMIT, COEF_LIMIT))
        bpp_est = (calibration * _rate_proxy(y) + header_bits) / pixels
        loss = mse_weight * mse_relaxed + stats["w_guide"] * guide_relaxed + stats["w_rate"] * bpp_est
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # Dual ascent on the measured file: relative size overshoot, thumbnail dB below its floor.
        log_w_rate += config.dual_lr * (len(data) - len(plain)) / len(plain)
        log_w_guide += config.dual_lr * (thumb_floor - thumb_psnr) / 10.0
        log_w_rate = min(max(log_w_rate, -log_limit), log_limit)
        log_w_guide = min(max(log_w_guide, -log_limit), log_limit)
        bar.update()
        bar.set_postfix(hr_psnr=f"{stats['hr_psnr']:.2f}", kept=best_step)
    bar.close()
    return OptimizeResult(best_data, table_scale, best_step, time.perf_counter() - start_time, history)
