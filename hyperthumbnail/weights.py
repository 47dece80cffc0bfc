"""Model weights: the shipped fp16 safetensors + a JSON card (config, command, data, Kodak
numbers), and training checkpoints (.pt), which inference also loads.

safetensors holds tensors only, so loading never unpickles anything; checkpoints are loaded with
`weights_only=True`.

torch and the model are imported where used: the graph runtimes (`runtime.graphs`) need only the
paths and hashes here, and importing torch costs seconds at every CLI start.
"""
from __future__ import annotations

import functools
import hashlib
import json
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .codec.thumbnail import MODEL_ID_BYTES

if TYPE_CHECKING:
    import torch

    from .model import HyperThumbnail

WEIGHTS_DIR = Path(__file__).parent / "weights"
# Earlier generations of a scale, kept because their decoders rebuild the thumbnails users stored
# with them better than the newest decoder can (`shipped_weights`).
OLDER_WEIGHTS_DIR = WEIGHTS_DIR / "older"
_ENCODER_PREFIXES = ("encoder.", "qpm.")  # the parts that make the thumbnail's coefficients
ALSO_DECODES_KEY = "also_decodes"


def default_weights_path(scale: int = 4) -> Path:
    return WEIGHTS_DIR / f"hyperthumbnail_x{scale}.safetensors"


def shipped_weights(scale: int = 4) -> tuple[Path, ...]:
    """The shipped weights files of `scale`, newest first: the default, then the older generations
    (`older/hyperthumbnail_x{scale}_MODELID.safetensors`) whose stored thumbnails it does not serve."""
    older = sorted(OLDER_WEIGHTS_DIR.glob(f"hyperthumbnail_x{scale}_*.safetensors"))
    return (default_weights_path(scale), *older)


def shipped_weights_serving(thumbnail_model: str, scale: int = 4) -> Path | None:
    """The newest shipped weights of `scale` whose decoder serves thumbnails of `thumbnail_model`."""
    return next((path for path in shipped_weights(scale)
                 if path.is_file() and thumbnail_model in served_model_ids(path)), None)


def weights_config(path: str | Path) -> dict[str, Any]:
    """The model config a .safetensors weights file records in its metadata (read without torch)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return json.loads((f.metadata() or {})["config"])


def card_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def encoder_fingerprint(weights: str | Path | HyperThumbnail) -> str:
    """SHA-256 of the encoder's and QPM's tensors as fp16 (as shipped): what makes the thumbnails.
    Weights that share an encoder share it (a decoder-only run's checkpoints and exports, v3 and
    v3.1). A .safetensors file is read with numpy, without torch."""
    if isinstance(weights, (str, Path)) and Path(weights).suffix != ".pt":
        from safetensors import safe_open

        with safe_open(str(weights), framework="numpy") as f:
            state = {k: f.get_tensor(k) for k in f.keys() if k.startswith(_ENCODER_PREFIXES)}
    else:  # a model instance or a training checkpoint
        model = load_checkpoint_model(Path(weights)) if isinstance(weights, (str, Path)) else weights
        state = {k: v.detach().half().numpy() for k, v in model.state_dict().items() if k.startswith(_ENCODER_PREFIXES)}
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(name.encode() + tensor.astype("float16").tobytes())
    return digest.hexdigest()


def model_id(weights: str | Path | HyperThumbnail) -> str:
    """The id a thumbnail's marker records: 16 hex digits of the encoder fingerprint."""
    return encoder_fingerprint(weights)[:2 * MODEL_ID_BYTES]


def served_model_ids(weights: str | Path | HyperThumbnail) -> tuple[str, ...]:
    """The model ids whose thumbnails these weights' decoder rebuilds: its own encoder's first, then
    the ones a .safetensors file lists in its `also_decodes` metadata (older encoders it was
    trained on)."""
    if isinstance(weights, (str, Path)) and Path(weights).suffix != ".pt":
        stat = Path(weights).stat()
        return _file_served_model_ids(str(weights), stat.st_ino, stat.st_mtime_ns, stat.st_size)
    return (model_id(weights),)


@functools.lru_cache(maxsize=32)
def _file_served_model_ids(path: str, inode: int, mtime_ns: int, size: int) -> tuple[str, ...]:
    """`served_model_ids` of a .safetensors file, hashed once per version of the file (a refused
    thumbnail asks it of every shipped file: that must not cost a read of each per request)."""
    from safetensors import safe_open

    with safe_open(path, framework="numpy") as f:
        extra = json.loads((f.metadata() or {}).get(ALSO_DECODES_KEY, "[]"))
    own = model_id(path)
    return (own, *[i for i in extra if i != own])


def inference_state(model: HyperThumbnail) -> dict[str, torch.Tensor]:
    """Weights needed at inference (the rate model is a training-time proxy only)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("rate_model.")}


def save_weights(model: HyperThumbnail, path: Path, card: dict, also_decodes: tuple[str, ...] = ()) -> None:
    """fp16 safetensors + card. `also_decodes`: model ids of older encoders whose thumbnails
    this decoder was trained on (kept in the file, so serving refuses only what it cannot do)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().half().contiguous() if v.is_floating_point() else v.contiguous()
             for k, v in inference_state(model).items()}
    metadata = {"config": json.dumps(model.config.to_dict())}
    if also_decodes:
        metadata[ALSO_DECODES_KEY] = json.dumps(list(also_decodes))
    save_file(state, str(path), metadata=metadata)
    card = {"config": model.config.to_dict(), "model_id": model_id(path), "served_model_ids": list(served_model_ids(path)),
            **card}
    card_path(path).write_text(json.dumps(card, indent=2) + "\n")


def load_model(path: str | Path | None = None, scale: int = 4) -> HyperThumbnail:
    """Load shipped (or given) weights in float32, eval mode."""
    from safetensors.torch import load_file

    from .model import HyperThumbnail, ModelConfig

    path = Path(path) if path is not None else default_weights_path(scale)
    if not path.exists():
        raise FileNotFoundError(f"weights not found: {path}")
    if path.suffix == ".pt":  # a training checkpoint
        return load_checkpoint_model(path)
    from safetensors import SafetensorError
    try:
        config = ModelConfig(**weights_config(path))
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
