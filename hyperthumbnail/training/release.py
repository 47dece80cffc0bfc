"""Ship trained weights as the package's own (a maintainer's step after `train` and `bench rd`).

    python -m hyperthumbnail.training.release export runs/RUN/best.pt build/c/c.safetensors --also-decode ID ...
    hyperthumbnail bench rd ... --weights build/c/c.safetensors --out build/c/rd
    hyperthumbnail bench rd ... --methods hyperthumbnail --weights build/c/c.safetensors \
        --thumbnails-by OLDER.safetensors --out build/c/stored_OLDER          # once per older generation
    python -m hyperthumbnail.training.release ship build/c/c.safetensors --rd build/c/rd/rd.json \
        --stored stored_thumbnails_OLDER=build/c/stored_OLDER/rd.json --card build/c/card.json

`ship` installs the candidate's very bytes (the sha256 `bench rd` recorded is the shipped file's),
moves the previous generation to `weights/older/` when the candidate does not decode its
thumbnails (users' stored files keep decoding, `Pipeline.for_thumbnail`), and writes the card: the
previous card's history, the fields of `--card` (its `runs` are appended) and a `measured` block
taken from the rd.json files. It checks everything before it touches the package.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import weights as shipped
from ..weights import card_path, file_sha256, load_checkpoint_model, model_id, save_weights, served_model_ids, weights_config

__all__ = ["export", "measured_block", "ship"]

# Card fields derived from the weights file itself: never carried over from the previous card.
DERIVED_FIELDS = ("config", "model_id", "served_model_ids", "sha256", "measured")
FIT_TOLERANCE_BPP = 2e-4  # fit_table_scale's and `export --fit-tolerance`'s default


def export(checkpoint: Path, out: Path, also_decodes: Sequence[str] = (), table_scale: float = 1.0) -> str:
    """The checkpoint's EMA weights as fp16 safetensors (a candidate to measure); its model id.
    `table_scale` != 1 is folded into the QPM (`QPM.fold_table_scale`) and recorded in the card."""
    model = load_checkpoint_model(checkpoint)
    card: dict[str, Any] = {"checkpoint": str(checkpoint)}
    if table_scale != 1.0:
        model.qpm.fold_table_scale(table_scale)
        card["qpm_table_scale"] = table_scale
    save_weights(model, out, card, tuple(also_decodes))
    return model_id(out)


def fit_table_scale(checkpoint: Path, out: Path, also_decodes: Sequence[str], data: Path, target_bpp: float,
                    tolerance: float = FIT_TOLERANCE_BPP, probes: int = 12, report: Callable[[str], None] = print) -> float:
    """Export the checkpoint with the table scale whose files average `target_bpp` on `data` (the
    validation set), within `tolerance`, else the closest one under it: training steers the rate
    towards a target, but a checkpoint lands a few thousandths off it. Each probe measures the
    exported fp16 file's own .jpg files (torch runtime); `out` holds the chosen scale's export."""
    from ..evaluation import folder_bpp
    from ..weights import load_model

    def probe(scale: float) -> float:
        export(checkpoint, out, also_decodes, scale)
        bpp = folder_bpp(load_model(out), data)
        report(f"table scale {scale:.4f}: {bpp:.4f} bpp")
        return bpp

    low, high = 0.0, float("inf")  # scales known to give files too large / small enough
    best = None
    scale = 1.0
    for _ in range(probes):
        bpp = probe(scale)
        if bpp <= target_bpp and (best is None or bpp > best[1]):
            best = (scale, bpp)
        if abs(bpp - target_bpp) <= tolerance:
            return scale
        if bpp > target_bpp:
            low = scale
        else:
            high = scale
        # bpp falls as the scale grows: step out by 5% until bracketed, then halve in log space
        scale = (low * high) ** 0.5 if low and high != float("inf") else scale * (1.05 if bpp > target_bpp else 1 / 1.05)
    if best is None:
        raise ValueError(f"no table scale within {probes} probes gave {target_bpp} bpp or less on {data}")
    probe(best[0])
    return best[0]


def _summary(results: dict, full: bool) -> dict[str, dict[str, Any]]:
    out = {}
    for name, methods in results.items():
        if name == "meta":
            continue
        h = methods["hyperthumbnail"]
        row = {"bpp": round(h["bpp"], 4), "psnr": round(h["psnr"], 3)}
        if full:
            row.update(psnr_border2=round(h["psnr_border2"], 3), psnr_y_basicsr=round(h["psnr_y_basicsr"], 3),
                       ssim=round(h["ssim"], 4), lr_psnr=round(h["lr_psnr"], 2),
                       lr_psnr_worst=round(h["lr_psnr_worst"], 2), lr_psnr_worst_image=h["lr_psnr_worst_image"],
                       lr_psnr_cbcr=round(h["lr_psnr_cbcr"], 2))
            if "bicubic_jpeg" in methods:  # the baseline at the same file size
                base = methods["bicubic_jpeg"]["psnr"]
                row.update(bicubic_jpeg_same_size_psnr=round(base, 3), gain_over_bicubic_jpeg_db=round(h["psnr"] - base, 2))
        out[name] = row
    return out


def _results_of(rd: Path, sha256: str) -> dict:
    results = json.loads(rd.read_text())
    measured = results.get("meta", {}).get("weights", {}).get("sha256")
    if measured != sha256:
        raise ValueError(f"{rd} measured weights with sha256 {measured}, not the candidate's {sha256}: "
                         "rerun bench rd with --weights CANDIDATE")
    return results


def measured_block(rd: Path, stored: dict[str, Path], candidate: Path) -> dict[str, Any]:
    """The card's `measured`: `rd` (our method and bicubic+JPEG per set) and, per key of `stored`,
    an older generation's thumbnails rebuilt by the candidate; all must have measured its bytes."""
    sha, served = file_sha256(candidate), served_model_ids(candidate)
    results = _results_of(rd, sha)
    block: dict[str, Any] = {"command": f"{results['meta']['command']} (real .jpg files, the path of "
                                        f"hyperthumbnail encode/decode; {rd})", **_summary(results, full=True)}
    for key, path in stored.items():
        older = _results_of(path, sha)
        by = older["meta"].get("thumbnail_weights")
        if not by or by["model_id"] not in served:
            raise ValueError(f"{path}: not a run of --thumbnails-by weights the candidate serves ({', '.join(served)})")
        block[key] = {"command": older["meta"]["command"], "thumbnails_by": by, **_summary(older, full=False)}
    return block


def ship(candidate: Path, rd: Path, stored: dict[str, Path] | None = None, card: dict[str, Any] | None = None) -> Path:
    """Install `candidate` as the shipped weights of its scale (see the module doc); the installed path."""
    config = weights_config(candidate)
    scale = int(config["scale"])
    measured = measured_block(rd, stored or {}, candidate)
    target = shipped.default_weights_path(scale)
    fields = {k: v for k, v in (card or {}).items() if k not in DERIVED_FIELDS}
    history: dict[str, Any] = {}
    retired: Path | None = None
    if target.exists():
        history = {k: v for k, v in json.loads(card_path(target).read_text()).items() if k not in DERIVED_FIELDS}
        previous = model_id(target)
        if previous not in served_model_ids(candidate):  # its thumbnails need its own decoder from now on
            retired = shipped.OLDER_WEIGHTS_DIR / f"hyperthumbnail_x{scale}_{previous}.safetensors"
            if retired.exists():
                raise FileExistsError(f"{retired} already exists; not overwriting a shipped generation")
    runs = history.get("runs", []) + fields.pop("runs", [])
    carried = {**history, **fields, **({"runs": runs} if runs else {})}  # the card's fields beside the derived ones
    if retired is not None:
        retired.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(target, retired)
        shutil.copy2(card_path(target), card_path(retired))
    staged = target.with_name(target.name + ".new")  # same folder: the swap below is atomic
    shutil.copyfile(candidate, staged)
    os.replace(staged, target)
    shipped_card = {"config": config, "model_id": model_id(target), "served_model_ids": list(served_model_ids(target)),
                    **carried, "sha256": file_sha256(target), "measured": measured}
    card_path(target).write_text(json.dumps(shipped_card, indent=2) + "\n")
    return target


def _key_path(spec: str) -> tuple[str, Path]:
    key, sep, path = spec.partition("=")
    if not sep or not key or not path:
        raise argparse.ArgumentTypeError(f"expected KEY=PATH, got {spec!r}")
    return key, Path(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hyperthumbnail.training.release", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    ex = sub.add_parser("export", help="a checkpoint's EMA weights as a candidate file to measure")
    ex.add_argument("checkpoint", type=Path)
    ex.add_argument("out", type=Path)
    ex.add_argument("--also-decode", action="append", default=[], metavar="MODEL_ID",
                    help="an older encoder's model id whose thumbnails the candidate's decoder serves (repeatable)")
    ex.add_argument("--fit-bpp", type=float, metavar="BPP",
                    help="fold into the QPM the table scale whose files average BPP on --fit-data (the validation set)")
    ex.add_argument("--fit-data", type=Path, help="photos for --fit-bpp (e.g. ../shared/datasets/kodak)")
    ex.add_argument("--fit-tolerance", type=float, default=FIT_TOLERANCE_BPP, metavar="BPP",
                    help="how close to --fit-bpp is close enough (a target near a bar wants it small)")
    sh = sub.add_parser("ship", help="install a measured candidate as the shipped weights of its scale")
    sh.add_argument("candidate", type=Path)
    sh.add_argument("--rd", type=Path, required=True, help="rd.json of `bench rd --weights CANDIDATE`")
    sh.add_argument("--stored", type=_key_path, action="append", default=[], metavar="KEY=RD_JSON",
                    help="rd.json of `bench rd --weights CANDIDATE --thumbnails-by OLDER` (repeatable)")
    sh.add_argument("--card", type=Path, help="JSON of card fields (version, checkpoint, date, runs to append, ...)")
    args = parser.parse_args(argv)
    try:
        if args.step == "export":
            folded = ""
            if args.fit_bpp is not None:
                if args.fit_data is None:
                    raise ValueError("--fit-bpp needs --fit-data (the validation photos)")
                scale = fit_table_scale(args.checkpoint, args.out, args.also_decode, args.fit_data, args.fit_bpp,
                                        args.fit_tolerance)
                folded = f"table scale {scale:.4f} folded; "
            else:
                export(args.checkpoint, args.out, args.also_decode)
            print(f"wrote {args.out} ({folded}model id {model_id(args.out)}, serves {', '.join(served_model_ids(args.out))})")
        else:
            card = json.loads(args.card.read_text()) if args.card else {}
            target = ship(args.candidate, args.rd, dict(args.stored), card)
            print(f"shipped {target} (model id {model_id(target)}, sha256 {file_sha256(target)})")
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
