"""The static browser viewer (issue #27): the page in the top-level `viewer/` folder, built into a
folder any web server or CDN hosts (`build`), served locally with the headers WASM threads need
(`server`), and driven through a real headless Chromium (`check`).

Application layer: it uses the exporter and the tiling constants, and nothing imports it but the CLI
and the benchmarks."""
from .build import DEFAULT_BUILD_DIR, VIEWER_SOURCE, ViewerError, build_viewer
from .check import CheckResult, check_thumbnail
from .server import serve_folder

__all__ = ["DEFAULT_BUILD_DIR", "VIEWER_SOURCE", "CheckResult", "ViewerError", "build_viewer", "check_thumbnail",
           "serve_folder"]
