"""Model weights: the shipped fp16 safetensors + a JSON card (config, command, data, Kodak
numbers), and training checkpoints (.pt), which inference also loads.

safetensors holds tensors only, so loading never unpickles anything; checkpoints are loaded with
`weights_only=True`.

torch and the model are imported where used: the graph runtimes (`runtime.graphs`) need only the
paths and hashes here, and importing torch costs seconds at every CLI start.
"""
from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from .model import HyperThumbnail

WEIGHTS_DIR = Path(__file__).parent / "weights"


def default_weights_path(scale: int = 4) -> Path:
    return WEIGHTS_DIR / f"hyperthumbnail_x{scale}.safetensors"


def card_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def inference_state(model: HyperThumbnail) -> dict[str, torch.Tensor]:
    """Weights needed at inference (the rate model is a training-time proxy only)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("rate_model.")}


def save_weights(model: HyperThumbnail, path: Path, card: dict) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().half().contiguous() if v.is_floating_point() else v.contiguous()
             for k, v in inference_state(model).items()}
    save_file(state, str(path), metadata={"config": json.dumps(model.config.to_dict())})
    card_path(path).write_text(json.dumps({"config": model.config.to_dict(), **card}, indent=2) + "\n")


def load_model(path: str | Path | None = None, scale: int = 4) -> HyperThumbnail:
    """Load shipped (or given) weights in float32, eval mode."""
    from safetensors.torch import load_file

    from .model import HyperThumbnail, ModelConfig

    path = Path(path) if path is not None else default_weights_path(scale)
    if not path.exists():
        raise FileNotFoundError(f"weights not found: {path}")
    if path.suffix == ".pt":  # a training checkpoint
        return load_checkpoint_model(path)
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            config = ModelConfig(**json.loads((f.metadata() or {})["config"]))
        state = {k: v.float() for k, v in load_file(str(path)).items()}
    except (SafetensorError, KeyError, TypeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path}: not a HyperThumbnail weights file (.safetensors with a 'config' "
                         f"entry in its metadata): {type(exc).__name__}: {exc}") from exc
    model = HyperThumbnail(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("rate_model.")]
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval()


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Tensors and plain containers only: anything else in the pickle is refused, never run."""
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message wraps the reason in advice to retry with weights_only=False: drop that.
        paragraphs = [p.strip() for p in str(exc).split("\n\n") if p.strip()]
        reason = paragraphs[1] if len(paragraphs) > 2 else paragraphs[-1]
        raise ValueError(f"{path}: refused to load: not a plain tensor checkpoint (only tensors and "
                         f"containers are unpickled; {reason})") from exc


def load_checkpoint_model(path: Path, use_ema: bool = True) -> HyperThumbnail:
    from .model import HyperThumbnail, ModelConfig

    state = load_checkpoint(path)
    model = HyperThumbnail(ModelConfig(**state["model_config"]))
    model.load_state_dict(state["ema"] if use_ema and state.get("ema") else state["model"])
    return model.eval()
