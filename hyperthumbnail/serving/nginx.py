"""nginx in front of several tritonservers: per-request load balancing of HTTP/1.1 and gRPC.

Why nginx: one long-lived gRPC connection (HTTP/2) straight to one server pins every call to that
server; a proxy that balances per request (here: per HTTP/1.1 request and per HTTP/2 stream)
spreads them. Debian's `nginx-light` (1.22) has everything needed: `proxy_pass` with upstream
keep-alive for HTTP, `grpc_pass` for gRPC (`listen ... http2`), passive health checks
(`max_fails`/`fail_timeout`) and retries on another upstream (`proxy_next_upstream`,
`grpc_next_upstream`). Inference is idempotent, so a request whose replica died mid-flight is
resent to another one (`non_idempotent`: nginx does not resend a POST unless told).

nginx runs as our child (`daemon off`, `master_process on`) in a private prefix directory that
holds its config, pid file and temp dirs, so no root and nothing under /var is needed.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .server_flags import client_address, client_host

__all__ = ["NginxError", "Upstream", "NginxBalancer", "find_nginx", "render_config", "INSTALL_HINT"]

INSTALL_HINT = ("install nginx (Debian/Ubuntu: sudo apt-get install nginx-light; Fedora: sudo dnf install nginx; "
                "macOS: brew install nginx) or pass --nginx PATH")
# Debian installs nginx in /usr/sbin, which is not on an ordinary user's PATH.
_SEARCH_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin", "/opt/homebrew/bin", "/usr/local/bin")


class NginxError(RuntimeError):
    """nginx is missing, its configuration is refused, or it did not start."""


@dataclass(frozen=True)
class Upstream:
    """One replica's internal endpoints (host:port)."""

    http: str
    grpc: str


def find_nginx(explicit: str | None = None) -> Path:
    """The nginx binary: `explicit`, else on PATH, else in the usual sbin directories."""
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise NginxError(f"nginx binary {explicit} does not exist or is not executable")
        return path
    found = shutil.which("nginx") or shutil.which("nginx", path=":".join(_SEARCH_DIRS))
    if not found:
        raise NginxError(f"serving several replicas needs nginx as the load balancer, and none was found: {INSTALL_HINT}")
    return Path(found)


def _servers(addresses: Sequence[str], fail_timeout_s: float) -> str:
    # max_fails=1: one failed attempt (connection refused/reset) takes a replica out of rotation for
    # fail_timeout; then nginx tries it again, so a restarted replica comes back by itself.
    return "\n".join(f"        server {a} max_fails=1 fail_timeout={fail_timeout_s:g}s;" for a in addresses)


def _worker_user() -> tuple[str, str, int, int] | None:
    """Started as root, nginx's workers drop to an unprivileged user: (user, group, uid, gid)."""
    if os.geteuid() != 0:
        return None
    import grp
    import pwd

    for name in ("nobody", "www-data", "nginx"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return name, grp.getgrgid(entry.pw_gid).gr_name, entry.pw_uid, entry.pw_gid
    raise NginxError("running as root, nginx needs an unprivileged user for its workers (none of nobody, www-data, nginx exists)")


def render_config(prefix: Path, upstreams: Sequence[Upstream], *, host: str, http_port: int, grpc_port: int,
                  timeout_s: float = 300.0, fail_timeout_s: float = 2.0, keepalive: int = 32,
                  worker_user: tuple[str, str] | None = None) -> str:
    """nginx.conf for the front ports (see docs/scaleout.md for a walk-through)."""
    if not upstreams:
        raise NginxError("no upstream replicas to balance")
    tries = len(upstreams) + 1  # every replica once, plus one more after a fail_timeout expired
    tmp = prefix / "tmp"
    user = f"user {worker_user[0]} {worker_user[1]};  # started as root: workers run unprivileged\n" if worker_user else ""
    return f"""# Written by hyperthumbnail (serving/nginx.py); regenerated on every start.
{user}daemon off;
master_process on;
worker_processes 1;
pid {prefix / 'nginx.pid'};
error_log stderr warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    # Private temp dirs: nginx's compiled-in defaults live under /var/lib/nginx (root only).
    client_body_temp_path {tmp / 'body'};
    proxy_temp_path {tmp / 'proxy'};
    fastcgi_temp_path {tmp / 'fastcgi'};
    uwsgi_temp_path {tmp / 'uwsgi'};
    scgi_temp_path {tmp / 'scgi'};

    client_max_body_size 0;        # images are large; Triton and the models enforce the limits
    client_body_buffer_size 16m;   # the body is buffered (memory up to 16 MB, then a temp file) so a retry can resend it
    underscores_in_headers on;     # pass every header through, the restricted-API key included
    large_client_header_buffers 4 16k;

    upstream triton_http {{
{_servers([u.http for u in upstreams], fail_timeout_s)}
        keepalive {keepalive};     # reuse connections to the replicas instead of one per request
    }}

    upstream triton_grpc {{
{_servers([u.grpc for u in upstreams], fail_timeout_s)}
        keepalive {keepalive};
    }}

    server {{
        listen {host}:{http_port} reuseport;
        location / {{
            proxy_pass http://triton_http;
            proxy_http_version 1.1;          # needed for upstream keep-alive
            proxy_set_header Connection "";  # ... and do not forward the client's "close"
            proxy_set_header Host $host;
            proxy_buffering off;             # stream responses (decoded images) straight to the client
            proxy_read_timeout {timeout_s:g}s;
            proxy_send_timeout {timeout_s:g}s;
            # A replica that refuses, resets or dies mid-request, or answers 502/503 (shutting
            # down), gets the request resent to the next one. non_idempotent: inference is
            # idempotent, and without it nginx never resends a POST.
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_next_upstream_tries {tries};
        }}
    }}

    server {{
        listen {host}:{grpc_port} http2 reuseport;   # nginx 1.22: "http2" on listen (1.25+: "http2 on;")
        location / {{
            grpc_pass grpc://triton_grpc;  # one upstream pick per call (HTTP/2 stream), not per connection
            grpc_read_timeout {timeout_s:g}s;
            grpc_send_timeout {timeout_s:g}s;
            # gRPC statuses travel in trailers, after nginx committed to an upstream: it can retry
            # failed connections/streams and HTTP-level 502/503, not a gRPC UNAVAILABLE status.
            grpc_next_upstream error timeout http_502 http_503 non_idempotent;
            grpc_next_upstream_tries {tries};
        }}
    }}
}}
"""


class NginxBalancer:
    """nginx as a child process balancing the front ports over `upstreams`; a context manager."""

    def __init__(self, upstreams: Sequence[Upstream], *, host: str = "127.0.0.1", http_port: int = 8000,
                 grpc_port: int = 8001, nginx: str | None = None, timeout_s: float = 300.0,
                 fail_timeout_s: float = 2.0, log_callback: Callable[[str], None] | None = None):
        self.binary = find_nginx(nginx)
        self.upstreams = list(upstreams)
        self.host, self.http_port, self.grpc_port = host, http_port, grpc_port
        self.timeout_s, self.fail_timeout_s = timeout_s, fail_timeout_s
        self.log_callback = log_callback
        self._log: deque[str] = deque(maxlen=2000)
        self._prefix: Path | None = None
        self._process: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    @property
    def http_url(self) -> str:
        return client_address(self.host, self.http_port)

    @property
    def grpc_url(self) -> str:
        return client_address(self.host, self.grpc_port)

    @property
    def log(self) -> str:
        return "".join(self._log)

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> NginxBalancer:
        if self.is_running():
            raise NginxError("nginx already running")
        self._prefix = Path(tempfile.mkdtemp(prefix="hyperthumbnail-nginx-"))
        worker = _worker_user()
        for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self._prefix / "tmp" / name).mkdir(parents=True)
            if worker:  # the workers write large request bodies here
                os.chown(self._prefix / "tmp" / name, worker[2], worker[3])
        if worker:
            for path in (self._prefix, self._prefix / "tmp"):
                path.chmod(0o711)  # traversable, not listable
        conf = self._prefix / "nginx.conf"
        conf.write_text(render_config(self._prefix, self.upstreams, host=self.host, http_port=self.http_port,
                                      grpc_port=self.grpc_port, timeout_s=self.timeout_s,
                                      fail_timeout_s=self.fail_timeout_s,
                                      worker_user=worker[:2] if worker else None))
        cmd = [str(self.binary), "-p", str(self._prefix), "-c", str(conf), "-e", "stderr"]
        check = subprocess.run(cmd + ["-t", "-q"], capture_output=True, text=True)
        if check.returncode != 0:
            self._cleanup()
            raise NginxError(f"nginx refused the generated configuration: {check.stderr.strip()}")
        self._process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        try:
            self._wait_listening(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _read_log(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for raw in iter(self._process.stdout.readline, b""):
            line = raw.decode("utf-8", errors="replace")
            self._log.append(line)
            if self.log_callback:
                try:
                    self.log_callback(line)
                except Exception:  # a broken sink must not stop log draining
                    pass

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = {self.http_port, self.grpc_port}
        while pending:
            if not self.is_running():
                if self._reader:
                    self._reader.join(2)
                raise NginxError(f"nginx exited with code {self._process.returncode if self._process else None}: "
                                 f"{self.log.strip() or 'no output'}")
            for port in list(pending):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.settimeout(0.5)
                    if s.connect_ex((client_host(self.host), port)) == 0:
                        pending.discard(port)
            if pending and time.monotonic() > deadline:
                raise NginxError(f"nginx not listening on port(s) {sorted(pending)} after {timeout:g}s: {self.log.strip()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGQUIT (graceful: finish in-flight requests), then SIGTERM, then SIGKILL of the group."""
        proc = self._process
        if proc is not None:
            for sig, wait in ((signal.SIGQUIT, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                if proc.poll() is not None:
                    break
                try:
                    if sig == signal.SIGKILL:
                        os.killpg(proc.pid, sig)  # the worker too
                    else:
                        proc.send_signal(sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(wait)
                except subprocess.TimeoutExpired:
                    continue
            if self._reader:
                self._reader.join(2)
        self._cleanup()
        return None if proc is None else proc.returncode

    def _cleanup(self) -> None:
        if self._prefix is not None:
            shutil.rmtree(self._prefix, ignore_errors=True)
            self._prefix = None

    def __enter__(self) -> NginxBalancer:
        if not self.is_running():
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
