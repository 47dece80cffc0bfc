"""`hyperthumbnail viewer build|serve|check`: the static browser viewer (docs/viewer.md): build the
folder a web server or CDN hosts, serve it locally, or restore a thumbnail in a real headless
Chromium through it."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .errors import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("viewer", help="the static browser viewer: build, serve, check in headless Chromium",
                       description="A static page that rebuilds the full photo from a HyperThumbnail .jpg on the "
                       "visitor's device (ONNX Runtime Web: WASM, WebGPU where the browser has it).")
    viewer = p.add_subparsers(dest="viewer_command", metavar="ACTION", required=True)

    build = viewer.add_parser("build", help="build the viewer folder (page, ONNX Runtime Web, decoder graphs)",
                              description="Build the folder any web server or CDN hosts: the page, ONNX Runtime Web "
                              "from viewer/package-lock.json (npm ci), the decoder graphs of --weights and "
                              "manifest.json. Skipped when nothing changed.",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_folder(build)
    build.add_argument("--weights", default=None, help="decoder weights (.safetensors); default: the shipped 4x ones")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    build.set_defaults(func=run_build)

    serve = viewer.add_parser("serve", help="serve the built viewer locally (with the headers WASM threads need)",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_folder(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--no-isolation", action="store_true",
                       help="leave out the COOP/COEP headers, as a plain static host would (single-threaded WASM)")
    serve.set_defaults(func=run_serve)

    check = viewer.add_parser("check", help="restore a thumbnail in headless Chromium through the page",
                              description="Serve the built viewer, open THUMB.jpg in a real headless Chromium through "
                              "the page's file picker, and write DIR/restored.png (the page's own PNG download) "
                              "and DIR/result.json (time, backend, size, browser version, the tab's peak memory, "
                              "or the message the page showed).",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    check.add_argument("thumbnail", help="a HyperThumbnail .jpg (or any JPEG, to see the page's message)")
    check.add_argument("--out", required=True, help="folder for restored.png and result.json")
    check.add_argument("--chromium", default="/usr/bin/chromium", help="the Chromium executable (never downloaded)")
    check.add_argument("--backend", choices=("auto", "wasm", "webgpu"), default="auto")
    check.add_argument("--threads", type=int, default=None, help="WASM threads (default: all cores)")
    check.add_argument("--no-isolation", action="store_true", help="serve without COOP/COEP (single-threaded)")
    check.add_argument("--timeout", type=float, default=600, help="seconds before the check gives up")
    _add_folder(check)
    check.set_defaults(func=run_check)

    bench = viewer.add_parser("bench", help="restore times in headless Chromium per photo size and backend",
                              description="Restore a Kodak photo (768x512), a 1920x1080 crop and a 12 MP photo "
                              "(samples/photos/lake.jpg) in headless Chromium with WASM threads, one WASM thread and "
                              "WebGPU where an adapter exists; writes viewer.json and viewer.png.",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    bench.add_argument("--out", default="benchmarks/results")
    bench.add_argument("--photos", default="768x512,1920x1080,12mp", help="comma-separated subset")
    bench.add_argument("--repeat", type=int, default=1, help="restores per photo and backend (fresh browser each)")
    bench.add_argument("--chromium", default="/usr/bin/chromium")
    _add_folder(bench)
    bench.set_defaults(func=run_bench)


def _add_folder(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default=None, help="the built viewer folder (default: build/viewer in the checkout)")


def _folder(args: argparse.Namespace) -> Path:
    from ..viewer import DEFAULT_BUILD_DIR

    return Path(args.dir) if args.dir else DEFAULT_BUILD_DIR


def run_build(args: argparse.Namespace) -> int:
    from ..viewer import ViewerError, build_viewer

    started = time.perf_counter()
    try:
        manifest = build_viewer(_folder(args), args.weights, force=args.force)
    except ViewerError as exc:
        raise CLIError(str(exc)) from exc
    ids = ", ".join(json.loads(manifest.read_text())["model_ids"])
    print(f"{manifest.parent}: viewer built in {time.perf_counter() - started:.1f} s (serves model ids {ids})")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from ..viewer import serve_folder

    folder = _folder(args)
    if not (folder / "manifest.json").is_file():
        raise CLIError(f"no built viewer in {folder}: run `hyperthumbnail viewer build` first")
    with serve_folder(folder, args.host, args.port, isolate=not args.no_isolation) as url:
        threads = "single-threaded (no COOP/COEP)" if args.no_isolation else "WASM threads on (COOP/COEP sent)"
        print(f"serving {folder} at {url} ({threads}); open {url}?src=URL-of-a-thumbnail.jpg or pick a file. "
              "Ctrl-C stops.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


def run_check(args: argparse.Namespace) -> int:
    from ..viewer import ViewerError, check_thumbnail

    try:
        result = check_thumbnail(args.thumbnail, args.out, args.chromium, _folder(args), args.timeout, args.backend,
                                 args.threads, isolate=not args.no_isolation)
    except ViewerError as exc:
        raise CLIError(str(exc)) from exc
    page = result.page
    if result.ok:
        threads = f", {page['threads']} thread(s)" if page.get("threads") else ""
        print(f"{Path(args.out) / 'restored.png'}: {page['width']}x{page['height']} restored in {page['ms']:.0f} ms "
              f"on {page['backend']}{threads} in {page.get('browser_version')} (tab peak "
              f"{result.memory.get('tab_peak_rss_mib')} MiB)")
        return 0
    message = page.get("shown_message") or page.get("message") or page.get("error") or "no result"
    raise CLIError(f"the page did not restore {args.thumbnail}: {message} (details: {Path(args.out) / 'result.json'})")


def run_bench(args: argparse.Namespace) -> int:
    import shlex
    import sys

    from ..benchmarks.viewer import run_viewer_bench

    path = run_viewer_bench(Path(args.out), _folder(args), args.chromium,
                            [p.strip() for p in args.photos.split(",") if p.strip()], args.repeat,
                            command=shlex.join(["hyperthumbnail", *sys.argv[1:]]))
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0
