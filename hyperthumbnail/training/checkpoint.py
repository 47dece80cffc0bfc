"""Resumable training checkpoints, written atomically (tmp file + rename) so a kill -9 at any
moment leaves the previous checkpoint intact. Loaded with weights_only=True (no arbitrary pickle)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..model import HyperThumbnail, ModelConfig


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=map_location, weights_only=True)


def load_checkpoint_model(path: Path, use_ema: bool = True) -> HyperThumbnail:
    state = load_checkpoint(path)
    model = HyperThumbnail(ModelConfig(**state["model_config"]))
    model.load_state_dict(state["ema"] if use_ema and state.get("ema") else state["model"])
    return model.eval()
