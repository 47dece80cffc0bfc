"""Resumable training checkpoints, written atomically (tmp file + rename) so a kill -9 at any
moment leaves the previous checkpoint intact. Loaded with weights_only=True (no arbitrary pickle)."""
from __future__ import annotations

import os
import pickle
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
    """Tensors and plain containers only: anything else in the pickle is refused, never run."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message wraps the reason in advice to retry with weights_only=False: drop that.
        paragraphs = [p.strip() for p in str(exc).split("\n\n") if p.strip()]
        reason = paragraphs[1] if len(paragraphs) > 2 else paragraphs[-1]
        raise ValueError(f"{path}: refused to load: not a plain tensor checkpoint (only tensors and "
                         f"containers are unpickled; {reason})") from exc


def load_checkpoint_model(path: Path, use_ema: bool = True) -> HyperThumbnail:
    state = load_checkpoint(path)
    model = HyperThumbnail(ModelConfig(**state["model_config"]))
    model.load_state_dict(state["ema"] if use_ema and state.get("ema") else state["model"])
    return model.eval()
