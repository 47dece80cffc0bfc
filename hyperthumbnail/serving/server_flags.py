"""The tritonserver flags of a HyperThumbnail deployment: one source for `hyperthumbnail serve`,
the replicas behind nginx and the Helm chart, so they cannot drift apart.

Only the portable flags are here (what to serve, where to listen, how to fail and stop); where
the binary, its backends and caches live is the local runtime's business (`server_runtime`).
"""
from __future__ import annotations

from pathlib import Path

from ..interface import ADMIN_HEADER

__all__ = ["DEFAULT_EXIT_TIMEOUT_S", "DEFAULT_PORTS", "HEALTH_LIVE", "HEALTH_READY", "METRICS_PATH", "RESTRICTED_APIS",
           "SERVER_ENV",
           "client_address", "client_host", "restricted_api_flags", "tritonserver_flags"]

DEFAULT_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}  # Triton's own defaults
DEFAULT_EXIT_TIMEOUT_S = 10  # drain time for in-flight requests on SIGINT/SIGTERM
HEALTH_LIVE = "/v2/health/live"
HEALTH_READY = "/v2/health/ready"
METRICS_PATH = "/metrics"

# glibc's malloc in tritonserver itself: after a large buffer is freed it raises its mmap threshold
# (up to 32 MiB), so later request buffers of up to 32 MiB come from its per-thread arenas, where
# freed memory stays. A fixed 1 MiB threshold gives every larger buffer back when it is freed (the
# stubs set the same with mallopt, serving/backends.py). Set for every server: `serve`, the replicas,
# the chart (files/server.yaml) and KServe. Measured in a mixed stream: docs/benchmarks.md, "Soak".
SERVER_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}


def client_host(host: str) -> str:
    """The address a client on this machine uses for a server bound to `host` (a wildcard -> loopback)."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def client_address(host: str, port: int) -> str:
    """host:port as tritonclient expects it, for a server bound to `host`."""
    return f"{client_host(host)}:{port}"


def tritonserver_flags(model_repository: str | Path, *, host: str = "127.0.0.1",
                       http_port: int = DEFAULT_PORTS["http"], grpc_port: int = DEFAULT_PORTS["grpc"],
                       metrics_port: int = DEFAULT_PORTS["metrics"], exit_timeout: int = DEFAULT_EXIT_TIMEOUT_S,
                       log_verbose: int = 0, gpu: bool = False, shm_prefix: str | None = None) -> list[str]:
    """Flags for `tritonserver` (without the binary). `model_repository`: a local path or an
    object-storage URI (`s3://...`), passed through as is."""
    flags = [
        f"--model-repository={model_repository}",
        f"--http-address={host}", f"--http-port={http_port}",
        f"--grpc-address={host}", f"--grpc-port={grpc_port}",
        f"--metrics-address={host}", f"--metrics-port={metrics_port}",
        "--allow-metrics=true",
        "--disable-auto-complete-config",   # configs are complete; surprises should be errors
        "--strict-readiness=true",
        "--exit-on-error=true",             # a model that fails to load stops the server
        f"--exit-timeout-secs={exit_timeout}",  # drain time for in-flight requests on stop
        # gRPC keeps up to 8 request/response messages for reuse, each with the capacity of the largest
        # tensor it carried: the server grew by hundreds of MiB in a mixed soak (#26); 0 frees them.
        "--grpc-infer-allocation-pool-size=0",
        f"--log-verbose={log_verbose}",
    ]
    if shm_prefix:  # several servers on one machine must not clobber each other's /dev/shm regions
        flags.append(f"--backend-config=python,shm-region-prefix-name={shm_prefix}")
    if not gpu:  # the wheel's server probes CUDA/DCGM; on a CPU machine that is just noise
        flags += ["--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0", "--cuda-memory-pool-byte-size=0:0"]
    return flags


# Behind the admin key: shared memory (any client could otherwise map an existing /dev/shm region by
# name, the Python backend's own included), the model repository (load/unload is code execution),
# logging and trace settings. Open: inference, health, metadata, model config, statistics, metrics.
RESTRICTED_APIS = ("shared-memory", "model-repository", "logging", "trace")


def restricted_api_flags(key: str) -> list[str]:
    """Triton 2.51's `GROUPS:HEADER=VALUE` flags putting RESTRICTED_APIS behind `key` on HTTP and gRPC
    (over gRPC the client sends the header with Triton's prefix: interface.GRPC_ADMIN_HEADER)."""
    spec = f"{','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={key}"
    return [f"--http-restricted-api={spec}", f"--grpc-restricted-protocol={spec}"]
