"""The EDSR-baseline decoder the speed benchmark compares against (Lim et al. 2017: 64 features,
16 residual blocks, x4), exported to ONNX with seeded random weights: its cost, not its output,
is what is measured."""
from __future__ import annotations

from pathlib import Path

import torch

from ..model.blocks import EDSRLite
from .onnx_export import quiet_exporter, validate_onnx

__all__ = ["EDSR_SHAPE", "export_edsr"]

EDSR_SHAPE = {"feats": 64, "blocks": 16}


def export_edsr(path: Path) -> Path:
    """EDSR-baseline (64 feats, 16 res blocks, x4, seeded random weights) as ONNX with dynamic H, W."""
    torch.manual_seed(0)
    model = EDSRLite(3, 3, EDSR_SHAPE["feats"], EDSR_SHAPE["blocks"], 4).eval()
    with torch.no_grad(), quiet_exporter():
        program = torch.onnx.export(model, (torch.rand(1, 3, 40, 48),), dynamo=True, input_names=["lr"],
                                    output_names=["hr"], dynamic_shapes={"x": {2: "height", 3: "width"}},
                                    external_data=False)
    program.save(str(path))
    validate_onnx(path)
    return path
