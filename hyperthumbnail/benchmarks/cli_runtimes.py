"""The CLI end to end with each runtime, side by side: `hyperthumbnail encode` / `decode` of one
photo with `--runtime openvino` (default) and `--runtime onnx`, alternating command by command,
each in a fresh process, timed as a user sees it, with the command's peak RSS.

    python -m hyperthumbnail.benchmarks.cli_runtimes PHOTO --work DIR --out cli_runtimes.json

Peak RSS: each command runs under a small Python parent whose `RUSAGE_CHILDREN` high-water mark
is that one command's (the CLI starts no processes of its own). `call_ms`: the encode/decode call
as the CLI reports it (the work, without loading the graphs, reading the input or writing the
output); `load_ms`: loading (compiling) the graphs before it.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

from ..codec.images import load_image
from ..metrics import psnr
from .machine import machine_info, utc_now

RUNTIMES = ("openvino", "onnx")
_PROBE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"wall_s": time.perf_counter() - start, "rc": done.returncode, "stdout": done.stdout[-400:],
                  "stderr": done.stderr[-400:], "peak_rss_gib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20}))
"""


def run_cli(args: list[str], env: dict[str, str] | None = None) -> dict:
    """`hyperthumbnail ARGS` in a fresh process (`env`: its environment, default this one's): wall
    time, peak RSS and the last line it printed."""
    cli = Path(sys.executable).with_name("hyperthumbnail")
    done = subprocess.run([sys.executable, "-c", _PROBE, str(cli), *args], capture_output=True, text=True, check=True,
                          env=env)
    result = json.loads(done.stdout)
    if result["rc"]:
        raise SystemExit(f"hyperthumbnail {' '.join(args)} failed: {result['stderr']}")
    return {"wall_s": round(result["wall_s"], 2), "peak_rss_gib": round(result["peak_rss_gib"], 3),
            "report": result["stdout"].strip().splitlines()[-1]}


def _report_times(report: str) -> dict:
    """The CLI's report line -> the encode/decode call and the graph loading before it, in ms."""
    found = re.search(r"(?:en|de)coded in (\d+) ms, graphs loaded in (\d+) ms", report)
    return {"call_ms": int(found.group(1)), "load_ms": int(found.group(2))} if found else {}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photo", type=Path)
    parser.add_argument("--work", type=Path, required=True, help="folder for the thumbnails and decoded images")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--ops", default="encode,decode")
    parser.add_argument("--max-pixels", type=int, default=None)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    limit = [] if args.max_pixels is None else ["--max-pixels", str(args.max_pixels)]
    record: dict = {"created": utc_now(), "machine": machine_info(), "photo": args.photo.name, "runs": []}
    thumbnail = args.work / "thumbnail.jpg"  # decode input: the default runtime's thumbnail
    for repeat in range(args.repeats):
        for op in args.ops.split(","):
            for runtime in RUNTIMES:
                if op == "encode":
                    target = args.work / f"{runtime}.jpg"
                    cmd = ["encode", str(args.photo), "-o", str(target), "--runtime", runtime, *limit]
                else:
                    if not thumbnail.is_file():
                        run_cli(["encode", str(args.photo), "-o", str(thumbnail), *limit])
                    target = args.work / f"{runtime}.png"
                    cmd = ["decode", str(thumbnail), "-o", str(target), "--runtime", runtime, *limit]
                result = {"op": op, "runtime": runtime, "repeat": repeat, **run_cli(cmd)}
                result.update(_report_times(result["report"]))
                if op == "encode":
                    result["bytes"] = target.stat().st_size
                    if runtime == RUNTIMES[0]:
                        thumbnail.write_bytes(target.read_bytes())
                print(json.dumps(result), flush=True)
                record["runs"].append(result)
    if "decode" in args.ops:
        images = [load_image(args.work / f"{runtime}.png", max_pixels=None) for runtime in RUNTIMES]
        record["decode_psnr_between_runtimes_db"] = round(psnr(*images), 2)
    for key, field in (("onnx_over_openvino_wall", "wall_s"), ("onnx_over_openvino_call", "call_ms")):
        record[key] = {}
        for op in args.ops.split(","):
            times = {rt: [r[field] for r in record["runs"] if r["op"] == op and r["runtime"] == rt] for rt in RUNTIMES}
            record[key][op] = [round(o / v, 2) for v, o in zip(times["openvino"], times["onnx"])]
    print(json.dumps({k: v for k, v in record.items() if k not in ("runs", "machine")}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
