"""Check the exported ONNX graphs against the PyTorch model they came from (ONNX Runtime, CPU).

Quantized coefficients can only differ where `coefficient / table` sits on a rounding tie
(x.5): there a float32 difference in the last bits between runtimes picks the other integer.
`ParityResult` counts those and measures how close to a tie each one was, so a real bug
(an off-by-one table, a wrong layout) can not hide behind "a few mismatches".
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F

from ..model import HyperThumbnail
from ..model.dct import image_to_coefficients
from ..model.qpm import expand_tables
from .onnx_export import GRAPH_IO, GRAPH_NAMES

HR_TOLERANCE = 1.0 / 255.0  # decoded images: one 8-bit level
TIE_MARGIN = 1e-3  # a mismatch must lie this close to x.5 to count as a rounding tie
MAX_TIE_FRACTION = 1e-4  # of all coefficients


def smooth_image(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A photo-like (3,H,W) image in [0,1]: smooth shading, soft texture and a few hard edges."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy, xx = yy / height, xx / width
    coarse = torch.from_numpy(rng.random((1, 3, 6, 8), dtype=np.float32))
    texture = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)[0].numpy()
    img = 0.35 + 0.3 * texture + 0.15 * np.sin(2 * np.pi * (1.5 * xx + 0.7 * yy))[None]
    img += 0.1 * np.array([xx, yy, 1 - xx], dtype=np.float32)
    disk = ((xx - 0.6) ** 2 + (yy - 0.4) ** 2) < 0.04
    img[:, disk] = np.array([0.9, 0.75, 0.2], dtype=np.float32)[:, None]
    img[:, int(0.7 * height):, : width // 3] *= 0.4
    img += rng.normal(0.0, 0.01, img.shape).astype(np.float32)  # sensor noise
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def sample_images(height: int, width: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Named (1,3,H,W) float32 inputs: uniform noise (every rounding path) and a smooth photo."""
    rng = np.random.default_rng(seed)
    return {
        f"noise {width}x{height}": rng.random((1, 3, height, width), dtype=np.float32),
        f"smooth {width}x{height}": smooth_image(height, width, rng)[None],
    }


class OnnxGraphs:
    """ONNX Runtime sessions for an export directory's three graphs."""

    def __init__(self, onnx_dir: str | Path, providers: tuple[str, ...] = ("CPUExecutionProvider",)):
        self.sessions = {
            name: ort.InferenceSession(str(Path(onnx_dir) / f"{name}.onnx"), providers=list(providers))
            for name in GRAPH_NAMES
        }

    def run(self, name: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        outputs = [t.name for t in GRAPH_IO[name][1]]
        return dict(zip(outputs, self.sessions[name].run(outputs, inputs)))

    def encode(self, image: np.ndarray, table_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        coefficients = self.run("encoder", image=image)["coefficients"]
        out = self.run("qpm", coefficients=coefficients, table_scale=table_scale)
        return out["quantized"], out["tables"]

    def decode(self, quantized: np.ndarray, tables: np.ndarray) -> np.ndarray:
        return self.run("decoder", quantized=quantized, tables=tables)["image"]


@dataclass(frozen=True)
class ParityResult:
    """ONNX Runtime vs PyTorch for one input batch."""

    name: str
    coef_max_diff: float  # encoder: unquantized coefficients (0..~1000 scale)
    qpm_mismatches: int  # QPM fed the same (PyTorch) coefficients: must be 0
    mismatches: int  # whole encode chain (ORT encoder -> ORT QPM vs `HyperThumbnail.encode`)
    coefficients: int
    max_q_step: int  # largest |q_ort - q_torch|
    worst_tie_distance: float  # max over mismatches of ||frac(coef/table)| - 0.5|; 0 if none
    tables_equal: bool
    hr_max_diff: float  # decoder fed PyTorch's q/tables, [0,1] scale

    @property
    def ok(self) -> bool:
        ties_only = self.max_q_step <= 1 and self.worst_tie_distance <= TIE_MARGIN
        few = self.mismatches <= max(1, int(MAX_TIE_FRACTION * self.coefficients))
        return (self.tables_equal and self.qpm_mismatches == 0 and ties_only and few
                and self.hr_max_diff <= HR_TOLERANCE)


def _tie_distance(scaled: np.ndarray) -> np.ndarray:
    """How far |x| is from the nearest x.5 (0 = exactly on a rounding tie)."""
    frac = np.abs(scaled) - np.floor(np.abs(scaled))
    return np.abs(frac - 0.5)


@torch.no_grad()
def compare_with_torch(model: HyperThumbnail, graphs: OnnxGraphs, image: np.ndarray, name: str = "",
                       table_scale: np.ndarray | None = None) -> ParityResult:
    """Run `image` (B,3,H,W float32, H/W multiples of `model.block`) through both and compare."""
    batch = image.shape[0]
    scale = np.ones(batch, np.float32) if table_scale is None else table_scale.astype(np.float32)
    hr = torch.from_numpy(image)

    coef_t = image_to_coefficients(model.encoder(hr))
    coef_o = graphs.run("encoder", image=image)["coefficients"]
    q_t, tables_t = model.encode(hr, torch.from_numpy(scale) if table_scale is not None else 1.0)
    q_t, tables_t = q_t.numpy().astype(np.int32), tables_t.numpy().astype(np.int32)

    same_input = graphs.run("qpm", coefficients=coef_t.numpy(), table_scale=scale)
    q_o, tables_o = graphs.encode(image, scale)

    diff = q_o != q_t
    scaled = (coef_t.double() / expand_tables(torch.from_numpy(tables_t)).double()).numpy()
    hr_t = model.decode(torch.from_numpy(q_t), torch.from_numpy(tables_t)).numpy()
    hr_o = graphs.decode(q_t, tables_t)
    return ParityResult(
        name=name,
        coef_max_diff=float(np.abs(coef_o - coef_t.numpy()).max()),
        qpm_mismatches=int((same_input["quantized"] != q_t).sum() + (same_input["tables"] != tables_t).sum()),
        mismatches=int(diff.sum()),
        coefficients=int(q_t.size),
        max_q_step=int(np.abs(q_o - q_t).max()),
        worst_tie_distance=float(_tie_distance(scaled[diff]).max()) if diff.any() else 0.0,
        tables_equal=bool(np.array_equal(tables_o, tables_t)),
        hr_max_diff=float(np.abs(hr_o - hr_t).max()),
    )
