"""`make demo`: build the model repository, start the embedded CPU tritonserver, send the shipped
sample photos (samples/photos, or --photos DIR) through both ensembles with the client SDK, write
each thumbnail (.jpg), restored photo (.png) and a side-by-side comparison picture under
build/demo/, print a table and where the files are, stop the server.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..benchmarks.comparison import compare
from ..client import HyperThumbnailClient
from ..codec.images import list_images, load_image, save_image
from ..codec.thumbnail import read_thumbnail
from .repository import build_repository
from .server_process import TritonServer, free_port

SAMPLE_PHOTOS = Path(__file__).resolve().parents[2] / "samples" / "photos"  # see samples/ATTRIBUTION.md


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=Path, default=SAMPLE_PHOTOS, help="folder of photos (default: the shipped samples)")
    parser.add_argument("--out", type=Path, default=Path("build/demo"), help="where the files go")
    parser.add_argument("--repository", type=Path, default=Path("build/model_repository"))
    parser.add_argument("--protocol", choices=("http", "grpc"), default="http")
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 110))  # keep the table readable when piped
    try:
        photos = list_images(args.photos)
    except (FileNotFoundError, NotADirectoryError) as exc:
        parser.error(str(exc))
    args.out.mkdir(parents=True, exist_ok=True)

    with console.status("building the model repository (ONNX export, first run only)"):
        repo = build_repository(args.repository)
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    table = Table(title=f"HyperThumbnail through Triton ({args.protocol}, CPU, shipped weights)")
    for col in ("photo", "size", "thumbnail", "bpp", "HR PSNR", "bicubic+JPEG", "thumb PSNR", "encode ms", "decode ms"):
        table.add_column(col, justify="right" if col != "photo" else "left")

    server = TritonServer(repo, **ports)
    with console.status("starting tritonserver"):
        server.start()
    written = []
    try:
        url = server.http_url if args.protocol == "http" else server.grpc_url
        console.print(f"tritonserver ready: {url} ({len(photos)} photos from {args.photos})")
        with HyperThumbnailClient(url, protocol=args.protocol) as client:
            for path in photos:
                image = load_image(path)
                h, w = image.shape[:2]
                with console.status(f"{path.name}: encode and decode through the server"):
                    t0 = time.perf_counter()
                    jpeg = client.encode(image)
                    t1 = time.perf_counter()
                    restored = client.decode(jpeg)
                    t2 = time.perf_counter()
                with console.status(f"{path.name}: writing the files and the comparison"):
                    thumb_path, restored_path = args.out / f"{path.stem}.jpg", args.out / f"{path.stem}_restored.png"
                    picture_path = args.out / f"{path.stem}_comparison.png"
                    thumb_path.write_bytes(jpeg)
                    save_image(restored, restored_path)
                    comparison = compare(path.name, image, jpeg, restored, read_thumbnail(jpeg).scale)
                    comparison.picture.save(picture_path)
                written += [thumb_path, restored_path, picture_path]
                n = comparison.numbers
                table.add_row(path.name, f"{w}x{h}", n["thumbnail_size"], f"{n['bpp']:.3f}", f"{n['hr_psnr']:.2f}",
                              f"{n['bicubic_jpeg_hr_psnr']:.2f}", f"{n['thumbnail_psnr']:.2f}",
                              f"{(t1 - t0) * 1e3:.0f}", f"{(t2 - t1) * 1e3:.0f}")
    finally:
        server.stop()
    console.print(table)
    console.print("bpp = 8 * .jpg bytes / HR pixels; HR PSNR on RGB; bicubic+JPEG: a plain JPEG of the bicubic "
                  "thumbnail at the same file size, bicubic up; thumbnail PSNR against Pillow's bicubic downscale. "
                  "Latency is one request at a time on this machine's CPU.")
    console.print(f"wrote {len(written)} files to {args.out}/ (thumbnail .jpg, restored .png, comparison .png per photo):")
    for path in written[2::3]:
        console.print(f"  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
