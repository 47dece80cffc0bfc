"""Build a servable Triton model repository from the `model_repository/` templates.

The templates (committed) hold every config and the thin Python-backend `model.py` files; the
neural graphs are not committed. `build_repository` copies the templates, writes the scale into
the configs, puts the ONNX graphs into `encoder/1`, `qpm/1`, `decoder/1` (copied from the weights'
export cache, the files the in-process pipeline runs; exported there first if missing) and leaves a stamp
(weights hash, scale, target, hash of templates and graph code) so a second call with the same
inputs does nothing.

Targets:
* `cpu` (default): the embedded tritonserver from the nvidia-pytriton wheel, which has only the
  Python backend; the neural models are Python-backend wrappers running OpenVINO or onnxruntime.
  The encoder pads the uint8 photo itself and the decoder crops: no `preprocess`/`postprocess`
  steps, so the photo is the only HR tensor that travels between steps.
* `gpu`: for the NGC Triton container: the neural models become `platform: "onnxruntime_onnx"`
  (or `"tensorrt_plan"` where a plan is given) with KIND_GPU instances, the encoder and decoder
  the uint8-in / uint8-out graphs; `preprocess` (padding) and `postprocess` (cropping) around them
  and the JPEG steps are Python-backend models (they need `hyperthumbnail` in the container); the
  ensembles come from `configs/gpu.pbtxt`.
* `openvino`: for CPU deployments in the NGC Triton container: the neural models run the same
  ONNX graphs on Triton's own `openvino` backend (KIND_CPU); the other steps as for `gpu`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from ..interface import ENCODE_AT_BPP_MODEL, ENCODE_MODEL, ENSEMBLES, MAX_BATCH, NATIVE_ONLY_MODELS, NEURAL_MODELS, SERVED_GRAPHS

__all__ = ["DEFAULT_REPOSITORY", "NEURAL_MODELS", "build_repository", "template_dir", "RepositoryError"]

# These configs carry a `scale` parameter.
SCALED_MODELS = ("preprocess", "encoder", "jpeg_encode", "jpeg_decode", "decoder", ENCODE_AT_BPP_MODEL)
# These write thumbnails (`model_id`: the marker's model id) or read them (`served_models`).
THUMBNAIL_WRITERS = ("jpeg_encode", ENCODE_AT_BPP_MODEL)
THUMBNAIL_READERS = ("jpeg_decode",)
STAMP_NAME = ".hyperthumbnail-build.json"
DEFAULT_REPOSITORY = Path("build") / "model_repository"
_PACKAGE = Path(__file__).resolve().parents[1]
_IGNORED = shutil.ignore_patterns("*.onnx", "*.plan", "__pycache__", "*.pyc", ".gitkeep")

Target = Literal["cpu", "gpu", "openvino"]
TARGETS = ("cpu", "gpu", "openvino")


class RepositoryError(RuntimeError):
    """The repository cannot be built (templates or weights missing, export failed)."""


def template_dir() -> Path:
    """The committed `model_repository/` next to the package (a source checkout or editable install)."""
    path = _PACKAGE.parent / "model_repository"
    if not (path / ENCODE_MODEL / "config.pbtxt").is_file():
        raise RepositoryError(f"model repository templates not found at {path}; "
                              "run from a source checkout of the project")
    return path


def _hash_files(paths: list[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _templates_hash(templates: Path) -> str:
    files = [p for p in templates.rglob("*") if p.is_file() and p.suffix not in (".onnx", ".plan", ".pyc")
             and "__pycache__" not in p.parts and p.name != ".gitkeep"]
    return _hash_files(files, templates)


def _model_hash(model) -> str:
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode() + b"\0" + tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _weights_identity(weights, scale: int) -> tuple[str, object]:
    """(hash, what to export): a model instance is hashed by its tensors, a file by its bytes."""
    from ..model import HyperThumbnail

    if isinstance(weights, HyperThumbnail):
        return "model:" + _model_hash(weights), weights
    from ..weights import default_weights_path, file_sha256

    path = Path(weights) if weights is not None else default_weights_path(scale)
    if not path.is_file():
        hint = "" if weights is not None else " (no shipped weights for this scale: pass --weights PATH)"
        raise RepositoryError(f"weights not found: {path}{hint}")
    return "file:" + file_sha256(path), path


def set_parameter(config: str, key: str, value: str) -> str:
    """Replace the string value of `parameters { key: "<key>" ... }` in a config.pbtxt text."""
    pattern = re.compile(r'(parameters\s*\{\s*key:\s*"' + re.escape(key) + r'"\s*,?\s*value:\s*\{\s*string_value:\s*")[^"]*(")')
    new, count = pattern.subn(lambda m: m.group(1) + value + m.group(2), config)
    if count != 1:
        raise RepositoryError(f"config has {count} '{key}' parameters, expected 1")
    return new


def _plan_paths(plans) -> dict[str, Path]:
    if plans is None:
        return {}
    if isinstance(plans, Mapping):
        found = {name: Path(path) for name, path in plans.items()}
    else:
        found = {name: Path(plans) / f"{name}.plan" for name in NEURAL_MODELS}
        found = {name: path for name, path in found.items() if path.is_file()}
    unknown = set(found) - set(NEURAL_MODELS)
    missing = [str(p) for p in found.values() if not p.is_file()]
    if unknown or missing:
        raise RepositoryError(f"bad TensorRT plans: unknown models {sorted(unknown)}, missing files {missing}")
    return found


def read_stamp(repository: str | Path) -> dict | None:
    try:
        return json.loads((Path(repository) / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return None


def _graph_files(name: str, target: str, plans: Mapping[str, Path]) -> dict[str, str]:
    """File in `<name>/1/` -> exported graph. The CPU decoder is split for tiling; the native
    backends (gpu, openvino) take the encoder that starts and the decoder that ends in uint8."""
    if name in plans:
        return {"model.plan": name}
    if target == "cpu":
        if name == "decoder":
            return {f"{graph}.onnx": graph for graph in ("decoder_features", "decoder_body")}
        return {"model.onnx": name}
    return {"model.onnx": SERVED_GRAPHS.get(name, name)}


def _complete(repository: Path, plans: dict[str, Path], target: str = "cpu") -> bool:
    for name in NEURAL_MODELS:
        if not all((repository / name / "1" / f).is_file() for f in _graph_files(name, target, plans)):
            return False
    return all((repository / name / "config.pbtxt").is_file()
               for name in ENSEMBLES)


def build_repository(
    out_dir: str | Path = DEFAULT_REPOSITORY,
    weights=None,
    scale: int = 4,
    target: Target = "cpu",
    *,
    plans: str | Path | Mapping[str, str | Path] | None = None,
    plan_max_batch: int | None = None,
    rebuild: bool = False,
    log=None,
    runtime: str = "openvino",
    precision: str = "auto",
) -> Path:
    """Build (or reuse) a model repository in `out_dir`; return its path.

    weights: a `HyperThumbnail` instance, a weights/checkpoint path, or None for the shipped
        weights of `scale` (`hyperthumbnail.weights.default_weights_path`).
    plans (gpu only): a directory holding `<model>.plan` files, or {model: path}; those models
        are served as `tensorrt_plan`, the others as `onnxruntime_onnx`.
    plan_max_batch: the largest batch of the plans' optimization profile (default: the export
        default, `hyperthumbnail.export.trt_build.DEFAULT_MAX_BATCH`); it caps max_batch_size.
    rebuild: build even if the stamp says the repository is current.
    log: optional callable receiving one-line progress messages.
    runtime, precision (cpu target): what the Python-backend models run the graphs with
        (openvino/onnx, auto/f32/bf16); the in-process CLI with the same two gives the same bytes.
    """
    from ..runtime.select import graph_precisions

    try:
        graph_precisions(runtime, precision)
    except ValueError as exc:
        raise RepositoryError(str(exc)) from exc
    if target not in TARGETS:
        raise RepositoryError(f"target must be one of {', '.join(TARGETS)}; got {target!r}")
    if target != "gpu" and plans:
        raise RepositoryError("TensorRT plans need the GPU target (--target gpu)")
    say = log or (lambda message: None)
    out_dir = Path(out_dir)
    templates = template_dir()
    plan_paths = _plan_paths(plans)
    if plan_max_batch is None:
        from ..export.trt_build import DEFAULT_MAX_BATCH

        plan_max_batch = DEFAULT_MAX_BATCH
    if plan_max_batch < 1:
        raise RepositoryError(f"plan_max_batch must be >= 1, got {plan_max_batch}")
    from ..runtime.graphs import export_code_hash

    weights_hash, source = _weights_identity(weights, scale)
    stamp = {
        "format": 1,
        "weights": weights_hash,
        "scale": int(scale),
        "target": target,
        "templates": _templates_hash(templates),
        "code": export_code_hash(),
        "plans": {name: hashlib.sha256(p.read_bytes()).hexdigest() for name, p in sorted(plan_paths.items())},
        "plan_max_batch": plan_max_batch if plan_paths else None,
        "runtime": [runtime, precision] if target == "cpu" else None,
    }
    if not rebuild and read_stamp(out_dir) == stamp and _complete(out_dir, plan_paths, target):
        say(f"model repository {out_dir} is up to date")
        return out_dir

    from ..export.onnx_export import load_export_model, write_manifest
    from ..weights import served_model_ids

    model, _ = load_export_model(source, scale)
    if model.scale != scale:
        raise RepositoryError(f"the weights are for scale {model.scale}, not {scale}")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    staging.chmod(0o755)
    try:
        shutil.copytree(templates, staging, ignore=_IGNORED, dirs_exist_ok=True)
        for name in ENSEMBLES:
            (staging / name / "1").mkdir(exist_ok=True)  # ensembles need an (empty) version dir
        for name in SCALED_MODELS:
            config = staging / name / "config.pbtxt"
            config.write_text(set_parameter(config.read_text(), "scale", str(scale)))
        served = served_model_ids(source)
        for names, key, value in ((THUMBNAIL_WRITERS, "model_id", served[0]),
                                  (THUMBNAIL_READERS, "served_models", ",".join(served))):
            for name in names:
                config = staging / name / "config.pbtxt"
                config.write_text(set_parameter(config.read_text(), key, value))
        _select_ensembles(staging, target)
        cache = _graph_cache(source)
        for name in NEURAL_MODELS:
            for file, graph in _graph_files(name, target, {}).items():
                _place_graph(model, graph, staging / name / "1" / file, cache, say)
            if target == "cpu":
                config = staging / name / "config.pbtxt"
                text = set_parameter(config.read_text(), "runtime", runtime)
                config.write_text(set_parameter(text, "precision", precision))
            if target == "gpu":
                _make_gpu_model(staging / name, plan_paths.get(name), plan_max_batch)
            elif target == "openvino":
                _make_openvino_model(staging / name)
        if plan_paths and plan_max_batch < MAX_BATCH:
            # An ensemble may not take larger batches than any of its steps.
            for name in ENSEMBLES:
                config = staging / name / "config.pbtxt"
                config.write_text(set_max_batch_size(config.read_text(), plan_max_batch))
        write_manifest(model, staging, weights_sha256=weights_hash.split(":", 1)[1])
        (staging / STAMP_NAME).write_text(json.dumps(stamp, indent=2) + "\n")
        _replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    say(f"model repository ready in {out_dir} ({target}, scale {scale})")
    return out_dir


def _select_ensembles(repository: Path, target: str) -> None:
    """The CPU target's ensembles are the templates' config.pbtxt and it has no pixel steps; the
    NGC targets' ensembles (with `preprocess` / `postprocess` around native graphs) are
    `configs/<target>.pbtxt`."""
    for name in ENSEMBLES:
        configs = repository / name / "configs"
        if target != "cpu":
            (repository / name / "config.pbtxt").write_text((configs / f"{target}.pbtxt").read_text())
        shutil.rmtree(configs)
    if target == "cpu":
        for name in NATIVE_ONLY_MODELS:
            shutil.rmtree(repository / name)


def _graph_cache(source) -> Path | None:
    """The export cache of a weights file (`runtime.graphs.graph_cache_dir`: the graphs the
    in-process pipeline runs); None for a model instance, which has no file to key it by."""
    if not isinstance(source, Path):
        return None
    from ..runtime.graphs import graph_cache_dir

    return graph_cache_dir(source)


def _place_graph(model, graph: str, dest: Path, cache: Path | None, say) -> None:
    """Copy `graph` from the weights' export cache, exporting it into the cache first if missing:
    the repositories of several runtimes (and the CLI) share one export, and the same files."""
    from ..export.onnx_export import export_graph

    cached = cache / f"{graph}.onnx" if cache is not None else None
    if cached is not None and not cached.is_file():
        partial = cached.with_name(f".{graph}.{os.getpid()}.onnx")
        try:
            cache.mkdir(parents=True, exist_ok=True)
            say(f"exporting {graph}.onnx")
            export_graph(model, graph, partial)
            os.replace(partial, cached)  # atomic: a concurrent reader sees no half-written graph
        except OSError:  # a read-only cache: export straight into the repository
            cached = None
        finally:
            partial.unlink(missing_ok=True)
    if cached is None:
        say(f"exporting {graph}.onnx")
        export_graph(model, graph, dest)
    else:
        shutil.copyfile(cached, dest)


def set_max_batch_size(config: str, max_batch: int) -> str:
    """Lower `max_batch_size` (and drop preferred batch sizes above it) in a config.pbtxt text."""
    config, count = re.subn(r"max_batch_size:\s*\d+", f"max_batch_size: {max_batch}", config)
    if count != 1:
        raise RepositoryError(f"config has {count} max_batch_size fields, expected 1")

    def preferred(match: re.Match) -> str:
        sizes = [int(v) for v in re.findall(r"\d+", match.group(1)) if int(v) <= max_batch] or [max_batch]
        return "preferred_batch_size: [ " + ", ".join(map(str, sizes)) + " ]"

    return re.sub(r"preferred_batch_size:\s*\[([^\]]*)\]", preferred, config)


def _make_gpu_model(model_dir: Path, plan: Path | None, plan_max_batch: int = 2) -> None:
    """Python-onnxruntime wrapper -> native onnxruntime_onnx (or tensorrt_plan) model on KIND_GPU.

    A plan only accepts the batch sizes of its optimization profile, so a tensorrt_plan model's
    max_batch_size is the profile's largest batch (`hyperthumbnail export --max-batch`)."""
    config = (model_dir / "configs" / "gpu.pbtxt").read_text()
    if plan is not None:
        config = config.replace('platform: "onnxruntime_onnx"', 'platform: "tensorrt_plan"')
        config = set_max_batch_size(config, plan_max_batch)
        shutil.copyfile(plan, model_dir / "1" / "model.plan")
        (model_dir / "1" / "model.onnx").unlink()
    (model_dir / "config.pbtxt").write_text(config)
    (model_dir / "1" / "model.py").unlink()
    shutil.rmtree(model_dir / "configs")


def _make_openvino_model(model_dir: Path) -> None:
    """Python-onnxruntime wrapper -> the same ONNX graph on Triton's `openvino` backend (CPU)."""
    (model_dir / "config.pbtxt").write_text((model_dir / "configs" / "openvino.pbtxt").read_text())
    (model_dir / "1" / "model.py").unlink()
    shutil.rmtree(model_dir / "configs")


def _replace_dir(new: Path, target: Path) -> None:
    """Swap `new` into place at `target` (the old tree, if any, is removed afterwards)."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
