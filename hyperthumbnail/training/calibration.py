"""Measure the rate proxy against real Huffman-coded JPEG bytes.

Training crops are small, so whole-file sizes are dominated by headers; we compare only the
entropy-coded scan (bytes between the SOS header and EOI) against the proxy's bits, and keep
headers as a separate constant.
"""
from __future__ import annotations

import numpy as np
import torch

from ..codec.steps import encode_thumbnail
from ..codec.thumbnail import scan_bytes


def real_scan_bits(q: torch.Tensor, tables: torch.Tensor, scale: int) -> np.ndarray:
    """Huffman-coded scan bits per image for quantized coefficients (B,3,64,h,w)."""
    q_np = q.detach().round().to(torch.int16).cpu().numpy()
    t_np = tables.detach().round().clamp(1, 255).to(torch.uint8).cpu().numpy()
    h, w = q_np.shape[-2:]
    hr_size = (w * 8 * scale, h * 8 * scale)
    return np.asarray([8 * scan_bytes(encode_thumbnail(coef, tab, hr_size, scale)) for coef, tab in zip(q_np, t_np)],
                      dtype=np.float64)
