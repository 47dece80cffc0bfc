"""Scale-out with real processes: a model repository on a local S3 server (moto), two tritonserver
replicas behind nginx, a replica killed under load, and the admin APIs closed without the key.

One replica set (from s3://, with an admin key) serves the whole module: starting replicas is
the expensive part on 2 cores. The test that kills a replica runs last.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

tritonclient_http = pytest.importorskip("tritonclient.http")
tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
pytest.importorskip("boto3")
from conftest import photo_like, served_weights  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from hyperthumbnail.client import AccessDeniedError, AsyncHyperThumbnailClient, HyperThumbnailClient  # noqa: E402
from hyperthumbnail.interface import ADMIN_HEADER, GRPC_ADMIN_HEADER  # noqa: E402
from hyperthumbnail.serving import nginx as nginx_module  # noqa: E402
from hyperthumbnail.serving.access import generate_admin_key  # noqa: E402
from hyperthumbnail.serving.object_store import EMPTY_DIR_MARKER, ObjectStoreError, list_keys, parse_s3, publish  # noqa: E402
from hyperthumbnail.serving.replicas import ReplicaSet  # noqa: E402
from hyperthumbnail.serving.server_process import free_port  # noqa: E402

pytestmark = [pytest.mark.server, pytest.mark.timeout(600)]

AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def metrics_ports(count: int = 2) -> int:
    """A base port with `count` free ports from it: replica i serves metrics on base + i."""
    import socket

    def free(port: int) -> bool:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
                return True
            except OSError:
                return False

    while True:
        base = free_port()
        if all(free(base + offset) for offset in range(1, count)):
            return base


def _moto_server_binary() -> str:
    path = Path(sys.executable).parent / "moto_server"
    if not path.exists():
        pytest.skip("moto[server] is not installed (make setup installs it)")
    return str(path)


@pytest.fixture(scope="module")
def s3_endpoint():
    """A real local S3 endpoint (moto_server) and AWS credentials in the environment, as a user sets them."""
    port = free_port()
    saved = {key: os.environ.get(key) for key in AWS_ENV}
    os.environ.update(AWS_ENV)
    proc = subprocess.Popen([_moto_server_binary(), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except OSError as exc:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start") from exc
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def published(s3_endpoint, served_repository) -> str:
    return publish(served_repository, f"s3://{s3_endpoint}/models/hyperthumbnail/v1", create_bucket=True)


@pytest.fixture(scope="module")
def admin_key() -> str:
    return generate_admin_key()


@pytest.fixture(scope="module")
def replica_set(published, admin_key):
    log: list[str] = []
    replicas = ReplicaSet(published, 2, http_port=free_port(), grpc_port=free_port(), metrics_port=metrics_ports(),
                          admin_key=admin_key, log_callback=log.append, restart_backoff_s=(1,))
    replicas.log_lines = log
    started = time.monotonic()
    replicas.start()
    print(f"2 replicas from {published} ready in {time.monotonic() - started:.1f} s")
    yield replicas
    pids = [r.server._process.pid for r in replicas.replicas]
    prefixes = [r.server._shm_prefix for r in replicas.replicas]
    replicas.stop()
    for pid in pids:  # nothing left running: no server, no stub of its process group
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
    assert not [p for p in os.listdir("/dev/shm") if p.startswith(tuple(prefixes))]
    assert not any(r.localized and any(p.exists() for p in r.localized) for r in replicas.replicas)


def encode_successes(replica) -> int:
    text = urllib.request.urlopen(replica.server.metrics_url, timeout=5).read().decode()
    m = re.search(r'^nv_inference_request_success\{model="hyperthumbnail_encode",version="1"\} (\d+)', text, re.M)
    return int(m.group(1)) if m else 0


def settled_successes(replicas, quiet: float = 0.3, timeout: float = 10.0) -> list[int]:
    """Each replica's encode count once it has stopped changing for `quiet` seconds: the previous
    test's last request can still be counted after its reply arrived, and must not land in this one."""
    deadline = time.monotonic() + timeout
    counts = [encode_successes(r) for r in replicas]
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = [encode_successes(r) for r in replicas]
        if now == counts:
            break
        counts = now
    return counts


def served_since(replicas, before: list[int], total: int, timeout: float = 10.0) -> list[int]:
    """Encodes each replica served since `before`, once all `total` are counted: a replica counts a
    request just after its response leaves, so a read right after the last reply can miss it."""
    deadline = time.monotonic() + timeout
    while True:
        served = [encode_successes(r) - b for r, b in zip(replicas, before)]
        if sum(served) >= total or time.monotonic() > deadline:
            return served
        time.sleep(0.1)


# ----------------------------------------------------------------------------- object storage


def test_parse_s3_uris():
    assert parse_s3("s3://bucket/a/b/").uri == "s3://bucket/a/b"
    loc = parse_s3("s3://http://127.0.0.1:9000/bucket/models")
    assert (loc.endpoint, loc.bucket, loc.prefix) == ("http://127.0.0.1:9000", "bucket", "models")
    for bad, reason in [("bucket/x", "expected s3://"), ("s3://http://host:9000", "needs a bucket"),
                        ("s3://B_ad/x", "not a valid S3 bucket"), ("gs://bucket/x", "tritonserver reads gs://")]:
        with pytest.raises(ObjectStoreError, match=reason):
            parse_s3(bad)


def test_publish_gives_every_version_folder_a_file(published, served_repository):
    keys = set(list_keys(published))
    for ensemble in ("hyperthumbnail_encode", "hyperthumbnail_decode"):
        assert not any((served_repository / ensemble / "1").iterdir())  # empty locally ...
        assert f"{ensemble}/1/{EMPTY_DIR_MARKER}" in keys               # ... but present in the bucket
    assert "encoder/1/model.onnx" in keys and not any("__pycache__" in k for k in keys)


def test_publish_to_missing_bucket_is_a_clear_error(s3_endpoint, served_repository):
    with pytest.raises(ObjectStoreError, match="bucket 'no-such-bucket' does not exist"):
        publish(served_repository, f"s3://{s3_endpoint}/no-such-bucket/x")


# ----------------------------------------------------------------------------- replicas behind nginx


def test_served_from_s3_bytes_equal_in_process_cli(replica_set, tmp_path):
    from PIL import Image

    from hyperthumbnail.cli import main

    assert served_weights() is None, "the served repository must use the shipped weights, like the CLI"
    image = photo_like(96, 64, seed=5)
    Image.fromarray(image).save(tmp_path / "photo.png")
    assert main(["encode", str(tmp_path / "photo.png"), "-o", str(tmp_path / "in_process.jpg")]) == 0
    expected = (tmp_path / "in_process.jpg").read_bytes()
    for protocol, url in (("http", replica_set.http_url), ("grpc", replica_set.grpc_url)):
        with HyperThumbnailClient(url, protocol=protocol) as client:
            assert client.encode(image) == expected


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_both_replicas_receive_requests_from_one_connection(replica_set, protocol):
    """One client (one keep-alive HTTP connection, one gRPC channel) is still spread per request."""
    before = settled_successes(replica_set.replicas)
    image = photo_like(64, 48, seed=1)
    url = replica_set.http_url if protocol == "http" else replica_set.grpc_url
    with HyperThumbnailClient(url, protocol=protocol) as client:
        outputs = {client.encode(image) for _ in range(8)}
    assert len(outputs) == 1  # identical bytes from either replica
    served = served_since(replica_set.replicas, before, 8)
    assert sum(served) == 8 and min(served) >= 2, served


# ----------------------------------------------------------------------------- restricted admin APIs


def _http_status(url: str, path: str, method: str = "GET", headers: dict | None = None) -> int:
    request = urllib.request.Request(f"http://{url}{path}", method=method, headers=headers or {},
                                     data=b"{}" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_admin_apis_refused_without_key_over_http(replica_set, admin_key):
    url = replica_set.http_url
    client = tritonclient_http.InferenceServerClient(url)
    with pytest.raises(InferenceServerException, match="restricted"):
        client.register_system_shared_memory("probe", "/probe", 64)
    with pytest.raises(InferenceServerException, match="restricted"):
        client.load_model("qpm")
    assert _http_status(url, "/v2/logging") == 403 and _http_status(url, "/v2/trace/setting") == 403
    # open: health, metadata, statistics, inference
    assert client.is_server_ready() and client.get_model_metadata("hyperthumbnail_encode")
    assert client.get_inference_statistics("hyperthumbnail_encode")
    # with the key (nginx passes the header through)
    assert client.get_system_shared_memory_status(headers={ADMIN_HEADER: admin_key}) == []
    assert _http_status(url, "/v2/logging", headers={ADMIN_HEADER: admin_key}) == 200
    assert _http_status(url, "/v2/logging", headers={ADMIN_HEADER: "wrong" + admin_key}) == 403
    client.close()


def test_admin_apis_refused_without_key_over_grpc(replica_set, admin_key):
    client = tritonclient_grpc.InferenceServerClient(replica_set.grpc_url)
    with pytest.raises(InferenceServerException, match="restricted"):
        client.register_system_shared_memory("probe", "/probe", 64)
    with pytest.raises(InferenceServerException, match="restricted"):
        client.load_model("qpm")
    with pytest.raises(InferenceServerException, match="restricted"):
        client.get_model_repository_index(headers={ADMIN_HEADER: admin_key})  # gRPC needs Triton's prefixed key
    assert client.is_server_ready() and client.get_model_metadata("hyperthumbnail_encode")
    index = client.get_model_repository_index(headers={GRPC_ADMIN_HEADER: admin_key})
    assert "hyperthumbnail_encode" in {m.name for m in index.models}
    client.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_sdk_shared_memory_needs_the_admin_key(replica_set, admin_key, protocol, monkeypatch):
    """Shared memory is registered per server, so a shm client talks to the replicas' own ports
    (several urls: register, infer and unregister of one request stay on one server)."""
    monkeypatch.delenv("HYPERTHUMBNAIL_ADMIN_KEY", raising=False)
    image = photo_like(64, 48, seed=4)
    urls = [r.server.http_url if protocol == "http" else r.server.grpc_url for r in replica_set.replicas]
    with HyperThumbnailClient(urls, protocol=protocol) as client:
        expected = client.encode(image)
    with HyperThumbnailClient(urls, protocol=protocol, use_shm=True) as client:
        with pytest.raises(AccessDeniedError, match="admin key"):
            client.encode(image)
    with HyperThumbnailClient(urls, protocol=protocol, use_shm=True, admin_key=admin_key) as client:
        assert {client.encode(image) for _ in range(2)} == {expected}  # both replicas
        assert client.decode(expected).shape == (48, 64, 3)
    monkeypatch.setenv("HYPERTHUMBNAIL_ADMIN_KEY", admin_key)  # what `perf --shm` and scripts use
    with HyperThumbnailClient(urls, protocol=protocol, use_shm=True) as client:
        assert client.encode(image) == expected


# ----------------------------------------------------------------------------- client-side round robin


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_client_round_robin_over_replicas_skips_a_dead_server(replica_set, protocol):
    """Several urls: requests alternate over the servers; a server that is down is skipped (retry
    on the next one) and costs no failed request."""
    urls = [r.server.http_url if protocol == "http" else r.server.grpc_url for r in replica_set.replicas]
    image = photo_like(64, 48, seed=6)
    before = settled_successes(replica_set.replicas)
    with HyperThumbnailClient(urls, protocol=protocol) as client:
        outputs = {client.encode(image) for _ in range(6)}
    assert len(outputs) == 1
    assert served_since(replica_set.replicas, before, 6) == [3, 3]
    dead = f"127.0.0.1:{free_port()}"  # nobody listens there
    with HyperThumbnailClient([dead, urls[0]], protocol=protocol) as client:
        assert {client.encode(image) for _ in range(4)} == outputs


def test_async_client_round_robin(replica_set):
    import asyncio

    urls = [r.server.http_url for r in replica_set.replicas]
    image = photo_like(64, 48, seed=7)
    before = settled_successes(replica_set.replicas)

    async def main():
        async with AsyncHyperThumbnailClient([f"127.0.0.1:{free_port()}"] + urls, retries=2) as client:
            return await asyncio.gather(*(client.encode(image) for _ in range(6)))

    assert len(set(asyncio.run(main()))) == 1
    assert all(encode_successes(r) > b for r, b in zip(replica_set.replicas, before))


# ----------------------------------------------------------------------------- nginx


def test_rendered_nginx_config_is_accepted_by_nginx(tmp_path):
    from hyperthumbnail.serving.nginx import Upstream, find_nginx, render_config

    upstreams = [Upstream("127.0.0.1:1001", "127.0.0.1:1002"), Upstream("127.0.0.1:1003", "127.0.0.1:1004")]
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / "tmp" / name).mkdir(parents=True)
    text = render_config(tmp_path, upstreams, host="127.0.0.1", http_port=free_port(), grpc_port=free_port())
    assert text.count("server 127.0.0.1:100") == 4 and "non_idempotent" in text and "grpc_pass" in text
    (tmp_path / "nginx.conf").write_text(text)
    check = subprocess.run([str(find_nginx()), "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
                            "-e", "stderr"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr



def test_missing_nginx_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(nginx_module, "_SEARCH_DIRS", (str(tmp_path),))
    with pytest.raises(nginx_module.NginxError, match="apt-get install nginx-light"):
        ReplicaSet("unused", 2).start()


# ----------------------------------------------------------------------------- a replica dies under load (last)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_killing_a_replica_under_load_loses_no_request(replica_set, protocol):
    """HTTP: nginx resends the requests in flight on the dead replica. gRPC: nginx cannot (it never
    buffers a gRPC request body), the calls in flight end UNAVAILABLE and the SDK resends them."""
    image = photo_like(64, 48, seed=2)
    url = replica_set.http_url if protocol == "http" else replica_set.grpc_url
    with HyperThumbnailClient(url, protocol=protocol) as client:
        expected = client.encode(image)
    victim = replica_set.replicas[0]
    restarts = victim.restarts
    copies = list(victim.localized)  # its copy of the s3:// repository in /tmp/folderXXXXXX
    assert copies and all(path.is_dir() for path in copies)
    local = threading.local()
    done, failures, mismatches = [0], [], [0]
    killed = threading.Event()

    def one(_):
        # HTTP without SDK retries: nginx alone must resend the requests of the dead replica.
        client = getattr(local, "client", None) or HyperThumbnailClient(
            url, protocol=protocol, timeout_s=60, retries=0 if protocol == "http" else None)
        local.client = client
        try:
            if client.encode(image) != expected:
                mismatches[0] += 1
        except Exception as exc:  # noqa: BLE001 - every failure counts
            failures.append(f"{type(exc).__name__}: {exc}")
        done[0] += 1
        if done[0] == 40 and not killed.is_set():
            killed.set()
            os.kill(victim.server._process.pid, signal.SIGKILL)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(160)))
    assert killed.is_set()
    assert failures == [] and mismatches == [0]
    deadline = time.monotonic() + 120
    while victim.restarts == restarts:
        assert time.monotonic() < deadline, f"replica not restarted within 2 minutes: {replica_set.events}"
        time.sleep(0.5)
    assert not any(path.exists() for path in copies)  # a killed server cannot remove them; the supervisor did
    # back in rotation: nginx retries it after fail_timeout; it serves requests again
    deadline = time.monotonic() + 30
    with HyperThumbnailClient(url, protocol=protocol) as client:
        while encode_successes(victim) == 0:
            assert time.monotonic() < deadline, "the restarted replica gets no requests"
            assert client.encode(image) == expected
            time.sleep(0.2)
    assert sum("exited with code -9" in e for e in replica_set.events) == victim.restarts, replica_set.events


# ----------------------------------------------------------------------------- the CLI as a user types it


def test_publish_and_serve_replicas_cli(s3_endpoint, served_repository, tmp_path, admin_key):
    """`repository publish URI` then `serve --model-repository URI --replicas 2`: serves through the
    front port, SIGINT stops everything (no process of it left, front ports closed)."""
    import shutil

    repo = tmp_path / "repo"  # without the build stamp: uploaded as is (no export)
    shutil.copytree(served_repository, repo, ignore=shutil.ignore_patterns(".hyperthumbnail-build.json"))
    uri = f"s3://{s3_endpoint}/cli-bucket/ht"
    done = subprocess.run([sys.executable, "-m", "hyperthumbnail", "repository", "publish", uri,
                           "--model-repository", str(repo), "--create-bucket"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == uri and "uploading it as is" in done.stderr
    http, grpc = free_port(), free_port()
    env = dict(os.environ, HYPERTHUMBNAIL_ADMIN_KEY=admin_key)
    proc = subprocess.Popen([sys.executable, "-m", "hyperthumbnail", "serve", "--model-repository", uri,
                             "--replicas", "2", "--quiet", "--http-port", str(http), "--grpc-port", str(grpc),
                             "--metrics-port", str(metrics_ports())],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl+C to stop" in line:
                break
        text = "".join(lines)
        if "2 Triton replicas are ready behind nginx" not in text:
            proc.kill()
            pytest.fail(f"serve --replicas 2 did not start: {text}{proc.communicate(timeout=30)[1][-3000:]}")
        assert "admin key: as given" in text and admin_key not in text
        with HyperThumbnailClient(f"127.0.0.1:{http}") as client:
            assert len(client.encode(photo_like(64, 48))) > 0
        with HyperThumbnailClient(f"127.0.0.1:{grpc}", protocol="grpc") as client:
            assert len(client.encode(photo_like(64, 48))) > 0
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    leftovers = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert uri not in leftovers
    import socket

    for port in (http, grpc):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0


def test_serve_restricts_admin_apis_beyond_loopback_by_default():
    """The key decision without binding a public address (tests bind loopback only)."""
    from hyperthumbnail.cli import build_parser
    from hyperthumbnail.cli.serve import _admin_key

    def key(*argv):
        return _admin_key(build_parser().parse_args(["serve", *argv]))

    env = os.environ.pop("HYPERTHUMBNAIL_ADMIN_KEY", None)
    try:
        assert key() == (None, False)                                   # loopback, one server: as before
        generated, was_generated = key("--host", "0.0.0.0")
        assert was_generated and len(generated) >= 16
        assert key("--replicas", "2")[1] is True                         # always in front of replicas
        assert key("--host", "0.0.0.0", "--admin-key", "k" * 20) == ("k" * 20, False)
        assert key("--host", "0.0.0.0", "--unrestricted") == (None, False)
        from hyperthumbnail.cli import CLIError

        with pytest.raises(CLIError, match="16-256 characters"):
            key("--admin-key", "short")
    finally:
        if env is not None:
            os.environ["HYPERTHUMBNAIL_ADMIN_KEY"] = env
