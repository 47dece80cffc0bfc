"""The soak's faults, each run at a stated time while the stream goes on:

* `kill_replica`: SIGKILL one tritonserver of the serve tree (the supervisor restarts it, nginx
  resends what it can, the SDK retries what nginx cannot);
* `disconnects`: clients that give up mid-request (an HTTP and a gRPC request with a deadline far
  shorter than the work, and a raw HTTP request whose body stops halfway and whose socket closes);
* `malformed_burst`: requests a server must refuse with a client error (wrong dtype, rank, byte
  count, not a thumbnail, a truncated one, bad JSON, an unknown model), each sent `repeat` times.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable

import numpy as np
from tritonclient.utils import InferenceServerException

from ..client import HyperThumbnailClient
from ..client.errors import TRANSLATED, InvalidInputError, ServerUnavailableError, translate
from ..interface import DECODE_MODEL, ENCODE_MODEL
from .soak_probe import find_replicas

__all__ = ["kill_replica", "disconnects", "malformed_burst"]

RESTART_WAIT_S = 300.0
GIVE_UP_AFTER_S = 0.5  # the impatient clients' deadline: far below any request of the mix


def kill_replica(serve_pid: int, index: int) -> dict:
    """SIGKILL replica `index`'s tritonserver; wait until a new one is running on its metrics port."""
    replicas = find_replicas(serve_pid)
    if index >= len(replicas):
        return {"fault": "kill_replica", "skipped": f"only {len(replicas)} replica(s) running"}
    victim = replicas[index]
    os.kill(victim.pid, signal.SIGKILL)
    killed = time.monotonic()
    while time.monotonic() - killed < RESTART_WAIT_S:
        back = [r for r in find_replicas(serve_pid) if r.metrics_port == victim.metrics_port and r.pid != victim.pid]
        if back and _ready(back[0].metrics_port):
            return {"fault": "kill_replica", "replica": index, "pid": victim.pid, "new_pid": back[0].pid,
                    "back_after_s": round(time.monotonic() - killed, 1)}
        time.sleep(0.5)
    return {"fault": "kill_replica", "replica": index, "pid": victim.pid, "back_after_s": None}


def _ready(metrics_port: int) -> bool:
    """The restarted replica exports metrics (the server's ports open after every model loaded)."""
    import urllib.request

    try:
        urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).read(1)
        return True
    except OSError:
        return False


def disconnects(http_url: str, grpc_url: str, image: np.ndarray) -> dict:
    """Three clients that give up on an encode of `image`: each must end on the client's side only."""
    outcomes = {}
    for protocol, url in (("http", http_url), ("grpc", grpc_url)):
        started = time.monotonic()
        try:
            with HyperThumbnailClient(url, protocol=protocol, timeout_s=GIVE_UP_AFTER_S, retries=0) as client:
                client.encode(image)
            outcomes[f"{protocol}_deadline"] = "answered before the deadline"
        except ServerUnavailableError as exc:
            outcomes[f"{protocol}_deadline"] = f"gave up after {time.monotonic() - started:.1f} s: {str(exc)[:120]}"
    outcomes["http_half_body"] = _half_body(http_url, image)
    return {"fault": "disconnects", "requests": 3, "outcomes": outcomes}


def _half_body(http_url: str, image: np.ndarray) -> str:
    """A raw HTTP inference request whose body stops halfway; then the socket closes."""
    host, port = http_url.rsplit(":", 1)
    header = json.dumps({"inputs": [{"name": "IMAGE", "shape": [1, *image.shape], "datatype": "UINT8",
                                     "parameters": {"binary_data_size": image.nbytes}}]}).encode()
    body_length = len(header) + image.nbytes
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST /v2/models/{ENCODE_MODEL}/infer HTTP/1.1\r\nHost: {host}\r\n"
                     f"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: {len(header)}\r\n"
                     f"Content-Length: {body_length}\r\n\r\n".encode() + header)
        sock.sendall(memoryview(image.reshape(-1))[: image.nbytes // 2])
    return f"closed after {len(header) + image.nbytes // 2} of {body_length} bytes"


def _bad_requests(http_url: str, grpc_url: str, thumbnail: bytes) -> list[tuple[str, Callable[[], object]]]:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    def infer(protocol: str, model: str, name: str, array: np.ndarray, dtype: str):
        module, url = (httpclient, http_url) if protocol == "http" else (grpcclient, grpc_url)
        tensor = module.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        client = module.InferenceServerClient(url)
        try:
            return client.infer(model, [tensor])
        finally:
            client.close()

    def thumbnails(data: bytes) -> np.ndarray:
        return np.array([[data]], dtype=np.object_)

    def raw_json(body: bytes):
        import urllib.request

        request = urllib.request.Request(f"http://{http_url}/v2/models/{ENCODE_MODEL}/infer", data=body,
                                         headers={"Content-Type": "application/json"})
        return urllib.request.urlopen(request, timeout=30).read()

    small = np.zeros((1, 16, 16, 3), np.uint8)
    return [
        ("float32 image (http)", lambda: infer("http", ENCODE_MODEL, "IMAGE", small.astype(np.float32), "FP32")),
        ("rank-2 image (grpc)", lambda: infer("grpc", ENCODE_MODEL, "IMAGE", small.reshape(1, -1), "UINT8")),
        ("data != shape (http JSON)", lambda: raw_json(json.dumps({"inputs": [{
            "name": "IMAGE", "shape": [1, 4096, 4096, 3], "datatype": "UINT8", "data": [1, 2, 3]}]}).encode())),
        ("not a thumbnail (grpc)", lambda: infer("grpc", DECODE_MODEL, "THUMBNAIL", thumbnails(b"not a jpeg"), "BYTES")),
        ("truncated thumbnail (http)", lambda: infer("http", DECODE_MODEL, "THUMBNAIL",
                                                     thumbnails(thumbnail[: len(thumbnail) // 2]), "BYTES")),
        ("not JSON (http)", lambda: raw_json(b"{not json")),
        ("unknown model (grpc)", lambda: infer("grpc", "no_such_model", "IMAGE", small, "UINT8")),
    ]


def _answer(call: Callable[[], object]) -> str:
    """'refused' (a client error: HTTP 4xx, gRPC INVALID_ARGUMENT, ...), 'error NNN ...' for another
    error answer, 'answered' if it was served, or what else happened (a dropped connection)."""
    import urllib.error

    try:
        call()
        return "answered"
    except urllib.error.HTTPError as exc:
        return "refused" if 400 <= exc.code < 500 else f"error HTTP {exc.code}: {exc.read()[:160].decode(errors='replace')}"
    except TRANSLATED as exc:
        error = translate(exc)
        if isinstance(error, InvalidInputError):
            return "refused"
        kind = "error" if isinstance(exc, InferenceServerException) and exc.status() else "no answer"
        return f"{kind} {type(error).__name__}: {str(error)[:160]}"


def malformed_burst(http_url: str, grpc_url: str, thumbnail: bytes, repeat: int = 3) -> dict:
    """Each bad request `repeat` times: every one must get an error answer (none served, no dropped
    connection); how many are refused as the client's fault is counted apart (Triton 2.51's HTTP
    front end answers a request it cannot parse with 500, see docs/benchmarks.md)."""
    outcomes: dict[str, list[str]] = {}
    for _ in range(repeat):
        for name, call in _bad_requests(http_url, grpc_url, thumbnail):
            outcomes.setdefault(name, []).append(_answer(call))
    flat = [o for v in outcomes.values() for o in v]
    return {"fault": "malformed_burst", "requests": len(flat), "refused_as_client_errors": flat.count("refused"),
            "other_error_answers": {k: sorted(set(o for o in v if o.startswith("error"))) for k, v in outcomes.items()
                                    if any(o.startswith("error") for o in v)},
            "not_answered_with_an_error": {k: [o for o in v if o == "answered" or o.startswith("no answer")]
                                           for k, v in outcomes.items()
                                           if any(o == "answered" or o.startswith("no answer") for o in v)}}
