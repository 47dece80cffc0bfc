"""Resumable training checkpoints, written atomically (tmp file + rename) so a kill -9 at any
moment leaves the previous checkpoint intact. Loading (weights_only=True: no arbitrary pickle) is
`hyperthumbnail.weights.load_checkpoint`, since inference also reads checkpoints."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["save_checkpoint"]


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
