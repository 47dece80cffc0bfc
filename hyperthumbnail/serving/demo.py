"""`make demo`: build the model repository, start the embedded CPU tritonserver, send sample photos
through both ensembles with the client SDK, print a table, stop the server.

Sample photos come from the evaluation sets beside the checkout (../shared/datasets, read in place,
never copied); without them the demo makes photo-like images and says so.
"""
from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from ..client import HyperThumbnailClient
from ..codec.images import bicubic_downscale, load_image
from ..codec.thumbnail import read_thumbnail
from ..metrics import bpp, psnr
from .repository import build_repository
from .server_process import TritonServer, free_port

DATA_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
SAMPLES = ["kodak/kodim05.png", "kodak/kodim23.png", "set14/comic.png", "urban100/img_001.png"]


def sample_images(root: Path) -> list[tuple[str, np.ndarray]]:
    found = [(p, root / p) for p in SAMPLES if (root / p).is_file()]
    if found:
        return [(Path(name).name, load_image(path)) for name, path in found]
    y, x = np.mgrid[0:512, 0:768].astype(np.float32)
    photo = np.stack([x / 768, y / 512, 0.5 + 0.4 * np.sin(x / 23) * np.cos(y / 17)], -1) * 230 + 10
    return [("generated 768x512 (no ../shared/datasets found)", photo.astype(np.uint8))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--repository", type=Path, default=Path("build/model_repository"))
    parser.add_argument("--protocol", choices=("http", "grpc"), default="http")
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 110))  # keep the table readable when piped

    with console.status("building the model repository (ONNX export, first run only)"):
        repo = build_repository(args.repository)
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    images = sample_images(args.data_root)
    table = Table(title=f"HyperThumbnail through Triton ({args.protocol}, CPU, shipped weights)")
    for col in ("image", "size", "thumbnail", "bpp", "HR PSNR", "thumb PSNR", "encode ms", "decode ms"):
        table.add_column(col, justify="right" if col != "image" else "left")

    server = TritonServer(repo, **ports)
    with console.status("starting tritonserver"):
        server.start()
    try:
        url = server.http_url if args.protocol == "http" else server.grpc_url
        console.print(f"tritonserver ready: {url} ({len(images)} sample images)")
        with HyperThumbnailClient(url, protocol=args.protocol) as client:
            for name, image in images:
                h, w = image.shape[:2]
                t0 = time.perf_counter()
                jpeg = client.encode(image)
                t1 = time.perf_counter()
                restored = client.decode(jpeg)
                t2 = time.perf_counter()
                thumb = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))  # as any viewer shows it
                ref = bicubic_downscale(image, read_thumbnail(jpeg).scale)  # the reference of `bench rd`
                table.add_row(name, f"{w}x{h}", f"{thumb.shape[1]}x{thumb.shape[0]}",
                              f"{bpp(len(jpeg), w, h):.3f}", f"{psnr(restored, image):.2f}",
                              f"{psnr(thumb, ref):.2f}", f"{(t1 - t0) * 1e3:.0f}", f"{(t2 - t1) * 1e3:.0f}")
    finally:
        server.stop()
    console.print(table)
    console.print("bpp = 8 * .jpg bytes / HR pixels; HR PSNR on RGB; thumbnail PSNR against Pillow's bicubic "
                  "downscale. Latency is one request at a time on this machine's CPU.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
