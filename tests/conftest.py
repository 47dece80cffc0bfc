"""Shared fixtures: ONE real tritonserver per pytest session for every server test module.

Building the repository exports three ONNX graphs (~15 s on 2 cores) and starting the server
takes a few more seconds, so `test_server.py`, `test_client.py`, `test_robustness.py`, ... all use
`triton_server` (session scope) instead of starting their own. Tests that need a *broken*
repository copy parts of `served_repository` into their own tmp dir and start their own server.

The served repository uses the shipped weights when they exist, else a randomly initialised
model (these tests check plumbing, not image quality), and its `encoder` refuses images above
`MAX_PIXELS` (lowered so the limit can be hit with a small image).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

SCALE = 4
MAX_PIXELS = 400_000  # the served repository's pixel limit (the shipped default is 8192x6144, 50.3 MP)


def photo_like(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients + texture + mild noise: closer to a photo than uniform noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width, y / height, 0.5 + 0.3 * np.sin(x / 7.0) * np.cos(y / 5.0)], axis=-1)
    noisy = base * 200 + 25 + rng.normal(0, 6, base.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


SMALL = dict(encoder_feats=8, decoder_feats=8, decoder_blocks=1, coef_feats=8, coef_blocks=1)  # a tiny model: tests only


def small_weights(path: Path, seed: int, also_decodes: tuple[str, ...] = ()) -> Path:
    """A tiny random model saved as weights, its encoder moved off bicubic (a fresh one is bicubic
    whatever the seed), so that two seeds make two different encoders, thumbnails and model ids."""
    import torch

    from hyperthumbnail.model import HyperThumbnail, ModelConfig
    from hyperthumbnail.weights import save_weights

    torch.manual_seed(seed)
    model = HyperThumbnail(ModelConfig(**SMALL))
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_weights(model, path, {}, also_decodes=also_decodes)
    return path


def served_runner(repository: Path, model: str, graph: str | None = None):
    """A runner for one of the served repository's graphs, at the runtime and precision its config
    names (as the Python-backend model makes it): the in-process twin of that model."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from hyperthumbnail.runtime.select import graph_precisions, graph_runtime, make_runner

    graph = graph or model
    config = text_format.Parse((repository / model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    runtime, precision = (config.parameters[k].string_value for k in ("runtime", "precision"))
    file = "model.onnx" if graph == model else f"{graph}.onnx"
    return make_runner(repository / model / "1" / file, graph_runtime(runtime, graph),
                       graph_precisions(runtime, precision, (graph,))[graph], graph=graph)


def served_weights():
    """What the served repository is built from: None (the shipped weights) or a seeded random model."""
    from hyperthumbnail.weights import default_weights_path

    if default_weights_path(SCALE).is_file():
        return None
    import torch

    from hyperthumbnail.model import HyperThumbnail

    torch.manual_seed(0)
    return HyperThumbnail().eval()


def served_model_id() -> str:
    """The model id the served repository writes into thumbnail markers."""
    from hyperthumbnail.weights import default_weights_path, model_id

    weights = served_weights()
    return model_id(default_weights_path(SCALE) if weights is None else weights)


@pytest.fixture(scope="session")
def served_repository(tmp_path_factory) -> Path:
    """The model repository the session's server serves (treat it as read-only)."""
    from hyperthumbnail.serving.repository import build_repository, set_parameter

    repo = build_repository(tmp_path_factory.mktemp("serving") / "model_repository", weights=served_weights(), scale=SCALE)
    for name in ("encoder", "hyperthumbnail_encode_at_bpp"):
        config = repo / name / "config.pbtxt"
        config.write_text(set_parameter(config.read_text(), "max_pixels", str(MAX_PIXELS)))
    return repo


@pytest.fixture(scope="session")
def triton_server(served_repository):
    """The running TritonServer (`.http_url`, `.grpc_url`, `.metrics_url`, `.model_repository`)."""
    pytest.importorskip("tritonclient.http")
    from hyperthumbnail.serving.server_process import TritonServer, free_port

    started = time.monotonic()
    server = TritonServer(served_repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())
    server.start(timeout=240)
    print(f"tritonserver ready in {time.monotonic() - started:.1f} s")
    yield server
    server.stop()
