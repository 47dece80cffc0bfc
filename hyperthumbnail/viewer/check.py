"""Restore a thumbnail in a real headless Chromium through the built viewer page, as a visitor would:
serve the folder, open the .jpg with the page's file picker (viewer/check.mjs, puppeteer-core with
the system's Chromium), download the restored PNG through the page's own link, and record what the
page reported (time, backend, size) with the browser's version and the tab's peak memory."""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .build import DEFAULT_BUILD_DIR, VIEWER_SOURCE, ViewerError
from .server import serve_folder

__all__ = ["DEFAULT_CHROMIUM", "CheckResult", "check_thumbnail", "run_page"]

DEFAULT_CHROMIUM = "/usr/bin/chromium"
CHECK_SCRIPT = VIEWER_SOURCE / "check.mjs"


@dataclass
class CheckResult:
    """What the page reported (`page`: its window.hyperthumbnail state plus the shown message) and
    the restored PNG's path when it restored."""

    page: dict
    png: Path | None = None
    memory: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.page.get("state") == "done" and self.png is not None


class _MemoryWatch:
    """Peak memory of the browser's processes, sampled while the page works: the renderer (the
    tab, where the WASM heap lives) alone and all Chromium processes together (PSS, so shared
    pages count once)."""

    def __init__(self, root_pid: int, interval: float = 0.25):
        self.root = psutil.Process(root_pid)
        self.interval = interval
        self.tab_rss = 0
        self.browser_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                children = self.root.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            total = 0
            for proc in children:
                try:
                    if "chrom" not in proc.name():
                        continue
                    info = proc.memory_full_info()
                    total += info.pss
                    if any(arg == "--type=renderer" for arg in proc.cmdline()):
                        self.tab_rss = max(self.tab_rss, info.rss)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            self.browser_pss = max(self.browser_pss, total)
            self._stop.wait(self.interval)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(timeout=5)
        return {"tab_peak_rss_mib": round(self.tab_rss / 2**20), "browser_peak_pss_mib": round(self.browser_pss / 2**20)}


def run_page(url: str, downloads: Path, chromium: str = DEFAULT_CHROMIUM, file: Path | None = None,
             timeout_s: float = 300, webgpu: bool = False, drop: bool = False) -> tuple[dict, dict]:
    """Run check.mjs on `url` (opening `file` through the file picker, or dropping it on the page
    with `drop`, if given) -> (its report, peak memory). The report always comes back: a page that
    never settles is a timeout error."""
    node = shutil.which("node")
    if node is None:
        raise ViewerError("node is not installed (Debian: apt-get install nodejs); the browser check needs it")
    if not Path(chromium).is_file():
        raise ViewerError(f"Chromium not found at {chromium}: install Debian's chromium (make system-deps) or pass "
                          "--chromium PATH")
    if not (VIEWER_SOURCE / "node_modules" / "puppeteer-core").is_dir():
        raise ViewerError("puppeteer-core is missing: run `make viewer` (npm ci in viewer/)")
    command = [node, str(CHECK_SCRIPT), "--url", url, "--chromium", chromium, "--downloads", str(downloads),
               "--timeout", str(int(timeout_s))]
    if file is not None:
        command += ["--file", str(Path(file).resolve())]
    if webgpu:
        command.append("--webgpu")
    if drop:
        command.append("--drop")
    process = subprocess.Popen(command, cwd=VIEWER_SOURCE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watch = _MemoryWatch(process.pid)
    try:
        stdout, stderr = process.communicate(timeout=timeout_s + 90)  # check.mjs has its own watchdog
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise ViewerError(f"the browser check did not finish within {timeout_s + 90:.0f} s") from None
    finally:
        memory = watch.stop()
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise ViewerError(f"the browser check failed: {(stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(lines[-1]), memory


def check_thumbnail(thumbnail: str | Path, out_dir: str | Path, chromium: str = DEFAULT_CHROMIUM,
                    viewer_dir: str | Path = DEFAULT_BUILD_DIR, timeout_s: float = 600, backend: str = "auto",
                    threads: int | None = None, isolate: bool = True) -> CheckResult:
    """Restore `thumbnail` in headless Chromium; writes out_dir/restored.png (when it restores) and
    out_dir/result.json. `isolate=False` serves the page without COOP/COEP (single-threaded)."""
    thumbnail, out_dir, viewer_dir = Path(thumbnail), Path(out_dir), Path(viewer_dir)
    if not thumbnail.is_file():
        raise ViewerError(f"no such file: {thumbnail}")
    if not (viewer_dir / "manifest.json").is_file():
        raise ViewerError(f"no built viewer in {viewer_dir}: run `hyperthumbnail viewer build` (or make viewer)")
    out_dir.mkdir(parents=True, exist_ok=True)
    query = f"?backend={backend}" + (f"&threads={threads}" if threads else "")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="viewer-check-") as downloads, \
            serve_folder(viewer_dir, isolate=isolate) as url:
        # WebGPU's flags only when asked for it; auto sees the browser as a visitor has it
        page, memory = run_page(url + query, Path(downloads), chromium, thumbnail, timeout_s, webgpu=backend == "webgpu")
        png = None
        if page.get("download_path") and Path(page["download_path"]).is_file():
            png = out_dir / "restored.png"
            shutil.move(page.pop("download_path"), png)
    reported = ("state", "ms", "read_ms", "backend", "threads", "width", "height", "scale", "bpp", "adapter", "bytes",
                "model_id", "format_version", "load_ms", "png_ms", "progress_steps", "note", "cross_origin_isolated",
                "browser_version", "user_agent")
    result = {key: page.get(key) for key in reported}
    result.update(thumbnail=str(thumbnail), message=page.get("shown_message") or page.get("message") or "",
                  error=page.get("error"), page_errors=page.get("page_errors", []), **memory,
                  onnxruntime_web=page.get("ort_version"), wall_s=round(time.perf_counter() - started, 2))
    (out_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return CheckResult(page=page, png=png, memory=memory)
