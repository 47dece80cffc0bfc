"""Peak memory at today's phone-photo size (8192x6144, 50.3 MP), against issue #19's bounds
(encode <= 3 GiB, decode <= 2 GiB, whole process tree): `hyperthumbnail encode` / `decode` in
process (default runtime), then the same through the embedded Triton server (CPU repository,
default configs), whose thumbnail and pixels must equal the CLI's.

    python -m hyperthumbnail.benchmarks.bigphoto PHOTO --work build/bigphoto \
        --out benchmarks/results/bigphoto.json

PHOTO is Lanczos-resized to cover 8192x6144 and centre-cropped (`--size WxH` for another size).
CLI peak RSS: the command's `RUSAGE_CHILDREN` high-water mark (`cli_runtimes.run_cli`; the CLI
starts no processes). Server peak RSS: the summed RSS of tritonserver and its Python-backend stubs
sampled every 50 ms (`memory.TreeRSS`; pages shared between them count once per process, so it
overestimates), while one request runs, and their summed PSS (shared pages split between the
processes that map them: what the tree holds); the client (`hyperthumbnail ... --url`) is not counted.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from ..codec.images import load_image
from .cli_runtimes import run_cli
from .machine import machine_info, utc_now
from .memory import TreeRSS

BOUNDS_GIB = {"encode": 3.0, "decode": 2.0}  # issue #19, whole process tree


def make_photo(source: Path, size: tuple[int, int], out: Path) -> Path:
    """`source` Lanczos-resized to cover `size`, centre-cropped, saved as JPEG q95 (fast to read)."""
    from PIL import Image

    width, height = size
    photo = Image.open(source).convert("RGB")
    k = max(width / photo.width, height / photo.height)
    photo = photo.resize((max(width, round(photo.width * k)), max(height, round(photo.height * k))), Image.LANCZOS)
    left, top = (photo.width - width) // 2, (photo.height - height) // 2
    out.parent.mkdir(parents=True, exist_ok=True)
    photo.crop((left, top, left + width, top + height)).save(out, quality=95)
    return out


def _cli(op: str, args: list[str]) -> dict:
    result = {"op": op, "command": "hyperthumbnail " + shlex.join(args), **run_cli(args)}
    print(json.dumps(result), flush=True)
    return result


def _server(repo: Path, photo: Path, thumbnail: Path, work: Path) -> dict:
    from ..serving.repository import build_repository
    from ..serving.server_process import TritonServer, free_port

    built = build_repository(repo)
    out: dict = {"repository": str(built), "runs": []}
    with TritonServer(built, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()) as server:
        with TreeRSS(pss=True) as idle:
            time.sleep(1.0)
        out["idle_rss_gib"], out["idle_pss_gib"] = round(idle.peak / 2**30, 3), round(idle.peak_pss / 2**30, 3)
        url = ["--url", server.http_url, "--protocol", "http", "--timeout", "1800"]
        for op, args in (("encode", ["encode", str(photo), "-o", str(work / "server.jpg"), *url]),
                         ("decode", ["decode", str(thumbnail), "-o", str(work / "server.png"), *url])):
            with TreeRSS(pss=True) as rss:
                result = _cli(op, args)
            result = {**result, "server_peak_rss_gib": round(rss.peak / 2**30, 3),
                      "server_peak_pss_gib": round(rss.peak_pss / 2**30, 3),
                      "client_peak_rss_gib": result.pop("peak_rss_gib")}
            out["runs"].append(result)
    out["thumbnail_equals_cli"] = (work / "server.jpg").read_bytes() == thumbnail.read_bytes()
    out["pixels_equal_cli"] = bool(np.array_equal(load_image(work / "server.png", max_pixels=None),
                                                  load_image(work / "cli.png", max_pixels=None)))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photo", type=Path)
    parser.add_argument("--work", type=Path, required=True, help="folder for the photo, thumbnails and images")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", default="8192x6144", help="WxH of the photo")
    parser.add_argument("--no-server", action="store_true", help="the CLI only")
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    work = args.work
    photo = make_photo(args.photo, size, work / f"photo_{size[0]}x{size[1]}.jpg")  # type: ignore[arg-type]
    record: dict = {"created": utc_now(), "command": shlex.join([Path(sys.executable).name, "-m", __spec__.name,
                                                                *(argv if argv is not None else sys.argv[1:])]),
                    "machine": machine_info(), "photo": f"{args.photo.name} Lanczos-resized to cover "
                    f"{size[0]}x{size[1]}, centre-cropped", "bounds_gib": BOUNDS_GIB}
    thumbnail, decoded = work / "cli.jpg", work / "cli.png"
    record["cli"] = [_cli("encode", ["encode", str(photo), "-o", str(thumbnail)]),
                     _cli("decode", ["decode", str(thumbnail), "-o", str(decoded)])]
    if not args.no_server:
        record["server"] = _server(work / "model_repository", photo, thumbnail, work)
    within = {f"cli_{r['op']}": r["peak_rss_gib"] <= BOUNDS_GIB[r["op"]] for r in record["cli"]}
    for r in record.get("server", {}).get("runs", []):
        within[f"server_{r['op']}_rss"] = r["server_peak_rss_gib"] <= BOUNDS_GIB[r["op"]]
        within[f"server_{r['op']}_pss"] = r["server_peak_pss_gib"] <= BOUNDS_GIB[r["op"]]
    record["within_bounds"] = within
    record["machine_after"] = {"load_average_1_5_15": machine_info()["load_average_1_5_15"]}
    print(json.dumps({k: record[k] for k in ("within_bounds",)}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
