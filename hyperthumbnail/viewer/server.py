"""A local static server for the built viewer folder. It adds what a production host should add too
(docs/viewer.md): the cross-origin isolation headers that let ONNX Runtime Web use WASM threads
(SharedArrayBuffer), and the MIME types of .mjs and .wasm. Without the headers the page still works,
single-threaded (`isolate=False` serves it that way, as a plain static server would)."""
from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["ISOLATION_HEADERS", "serve_folder"]

ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}
MIME_TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
              ".onnx": "application/octet-stream", ".json": "application/json"}


class _Handler(SimpleHTTPRequestHandler):
    isolate = True
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **MIME_TYPES}

    def end_headers(self) -> None:
        if self.isolate:
            for name, value in ISOLATION_HEADERS.items():
                self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass  # a page load is ~10 requests; the CLI prints the URL once instead


@contextmanager
def serve_folder(folder: str | Path, host: str = "127.0.0.1", port: int = 0, isolate: bool = True) -> Iterator[str]:
    """Serve `folder` in a background thread; yields its base URL (port 0: a free port)."""
    handler = type("ViewerHandler", (_Handler,), {"isolate": isolate})
    server = ThreadingHTTPServer((host, port), functools.partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, name="viewer-server", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
