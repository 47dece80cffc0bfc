"""`bench crops`: side-by-side crops of the thumbnails and rebuilt photos, old weights vs new.

For each image (default: Kodak kodim05 and kodim08, Set14 comic) it stores real files and puts
crops of what they show next to each other, labelled with whole-image numbers:

* `<image>_thumbnail.png`: where the crops are (the whole bicubic thumbnail, 1x), then one
  region of the thumbnail at `--thumb-zoom` (4x) nearest-neighbour zoom as (a) Pillow's bicubic
  downscale (the reference every thumbnail PSNR is measured against), (b) that bicubic image as
  a Pillow JPEG 4:4:4 at the quality whose file is closest in size to the new weights' file,
  (c) the old weights' .jpg, (d) the new weights' .jpg, each decoded by Pillow (what a viewer shows).
* `<image>_photo.png`: one detail region of the HR photo at `--photo-zoom` (2x) as (a) that
  bicubic JPEG upscaled by Pillow bicubic (`bench rd`'s `bicubic_jpeg`), (b) rebuilt from the old
  weights' file, (c) from the new weights' file, (d) the original.
* `<image>_old.jpg`, `<image>_new.jpg`, `<image>_bicubic_jpeg.jpg`: the files themselves
  (`Pipeline.encode`, the same calls as `hyperthumbnail encode`).
* `crops.json`: meta (command, machine, both weights' SHA-256) and, per image, the boxes and
  `bench rd`'s metrics of the three files.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..codec.images import bicubic_downscale, load_image
from ..pipeline import Pipeline
from ..weights import default_weights_path, file_sha256
from .jpeg import decode_jpeg
from .machine import machine_info, utc_now
from .methods import Coded, bicubic_jpeg_codec
from .rd import image_metrics

Box = tuple[int, int, int, int]  # x, y, width, height in HR pixels

# (image under --data-root, thumbnail region, photo detail region): colour edges and texture.
DEFAULT_IMAGES: tuple[tuple[str, Box, Box], ...] = (
    ("kodak/kodim05.png", (96, 128, 384, 256), (160, 200, 192, 128)),   # fenders, SUZUKI / CR 250 lettering
    ("kodak/kodim08.png", (448, 160, 320, 256), (552, 296, 192, 128)),  # windows, shutters, painted lettering
    ("set14/comic.png", (0, 0, 248, 360), (56, 56, 144, 112)),          # face, headdress, red/white ornaments
)

BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
GAP = 8  # pixels between panels


@dataclass(frozen=True)
class CropSpec:
    path: Path
    box: Box     # thumbnail region, in HR pixels (shown as the thumbnail pixels that cover it)
    detail: Box  # photo region, in HR pixels


def parse_box(text: str) -> Box:
    parts = text.split(",")
    if len(parts) != 4:
        raise ValueError(f"a box is X,Y,WIDTH,HEIGHT in HR pixels, got {text!r}")
    try:
        x, y, w, h = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"a box is four integers X,Y,WIDTH,HEIGHT, got {text!r}") from None
    if x < 0 or y < 0 or w < 1 or h < 1:
        raise ValueError(f"box {text!r}: X, Y must be >= 0 and WIDTH, HEIGHT >= 1")
    return x, y, w, h


def parse_spec(text: str) -> CropSpec:
    """PATH:X,Y,W,H:X,Y,W,H (thumbnail region, then photo detail region, both in HR pixels)."""
    parts = text.rsplit(":", 2)
    if len(parts) != 3 or not parts[0]:
        raise ValueError(f"--image is PATH:X,Y,W,H:X,Y,W,H (thumbnail region, photo region), got {text!r}")
    return CropSpec(Path(parts[0]), parse_box(parts[1]), parse_box(parts[2]))


def default_specs(data_root: Path) -> list[CropSpec]:
    return [CropSpec(Path(data_root) / name, box, detail) for name, box, detail in DEFAULT_IMAGES]


def check_box(box: Box, width: int, height: int, what: str) -> None:
    x, y, w, h = box
    if x + w > width or y + h > height:
        raise ValueError(f"{what} {','.join(map(str, box))} does not fit the {width}x{height} image")


def thumbnail_box(box: Box, scale: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the thumbnail pixels that cover the HR box (pixel i covers HR scale*i..)."""
    x, y, w, h = box
    return x // scale, y // scale, math.ceil((x + w) / scale), math.ceil((y + h) / scale)


def zoom(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour zoom: every pixel becomes a factor x factor square."""
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def caption_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled FreeType font
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def labelled(image: np.ndarray, lines: list[str], font) -> Image.Image:
    """The image under a white strip holding `lines` of text."""
    line_h = font.getbbox("Ag")[3] + 4
    strip = line_h * len(lines) + 6
    width = max(image.shape[1], *(int(font.getlength(t)) + 8 for t in lines))
    panel = Image.new("RGB", (width, strip + image.shape[0]), BACKGROUND)
    draw = ImageDraw.Draw(panel)
    for i, text in enumerate(lines):
        draw.text((4, 3 + i * line_h), text, fill=TEXT, font=font)
    panel.paste(Image.fromarray(image), (0, strip))
    return panel


def sheet(title: str, panels: list[Image.Image], font) -> Image.Image:
    """A title line over the panels in one row, top-aligned, GAP pixels apart."""
    title_h = font.getbbox("Ag")[3] + 10
    width = max(sum(p.width for p in panels) + GAP * (len(panels) + 1), int(font.getlength(title)) + 2 * GAP)
    out = Image.new("RGB", (width, title_h + max(p.height for p in panels) + GAP), BACKGROUND)
    ImageDraw.Draw(out).text((GAP, 4), title, fill=TEXT, font=font)
    x = GAP
    for p in panels:
        out.paste(p, (x, title_h))
        x += p.width + GAP
    return out


def outline(image: np.ndarray, boxes: list[tuple[tuple[int, int, int, int], tuple[int, int, int]]]) -> np.ndarray:
    """A copy of the image with 1-pixel rectangles (x0, y0, x1, y1 exclusive) in the given colours."""
    im = Image.fromarray(image)
    draw = ImageDraw.Draw(im)
    for (x0, y0, x1, y1), colour in boxes:
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour)
    return np.asarray(im)


def _crop(image: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    return image[y0:y1, x0:x1]


@dataclass
class Files:
    """The three stored files of one image and what a viewer / our decoder makes of them."""
    old: Coded
    new: Coded
    bicubic_jpeg: Coded

    def items(self) -> list[tuple[str, Coded]]:
        return [("bicubic_jpeg", self.bicubic_jpeg), ("old", self.old), ("new", self.new)]


def encode_all(image: np.ndarray, old: Pipeline, new: Pipeline) -> Files:
    new_jpeg, old_jpeg = new.encode(image), old.encode(image)
    baseline = bicubic_jpeg_codec(new.scale, "444")(image, new_jpeg)  # the size of the new file
    return Files(Coded(old_jpeg, old.decode(old_jpeg)), Coded(new_jpeg, new.decode(new_jpeg)), baseline)


def panels(image: np.ndarray, files: Files, spec: CropSpec, scale: int, thumb_zoom: int,
           photo_zoom: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The unlabelled crops: ({reference, bicubic_jpeg, old, new}, {bicubic_jpeg, old, new, original})."""
    reference = bicubic_downscale(image, scale)
    lh, lw = reference.shape[:2]
    tbox = thumbnail_box(spec.box, scale)
    thumbs = {"reference": reference}
    for name, coded in files.items():
        thumbs[name] = decode_jpeg(coded.jpeg)[:lh, :lw]
    x, y, w, h = spec.detail
    hr = {name: coded.recon for name, coded in files.items()}
    hr["original"] = image
    return ({k: zoom(_crop(v, *tbox), thumb_zoom) for k, v in thumbs.items()},
            {k: zoom(v[y:y + h, x:x + w], photo_zoom) for k, v in hr.items()})


def run_image(spec: CropSpec, old: Pipeline, new: Pipeline, out: Path, thumb_zoom: int, photo_zoom: int,
              names: tuple[str, str]) -> dict:
    image = load_image(spec.path)
    height, width = image.shape[:2]
    check_box(spec.box, width, height, f"{spec.path.name}: thumbnail region")
    check_box(spec.detail, width, height, f"{spec.path.name}: photo region")
    scale = new.scale
    files = encode_all(image, old, new)
    metrics = {name: {"bytes": len(coded.jpeg), **image_metrics(image, coded, scale), "quality": coded.quality}
               for name, coded in files.items()}
    stem = spec.path.stem
    for name, coded in files.items():
        (out / f"{stem}_{name}.jpg").write_bytes(coded.jpeg)
    thumbs, photos = panels(image, files, spec, scale, thumb_zoom, photo_zoom)
    font = caption_font(14)
    q = files.bicubic_jpeg.quality
    label = {"bicubic_jpeg": f"(b) bicubic -> JPEG q{q}", "old": f"(c) old: {names[0]}", "new": f"(d) new: {names[1]}"}

    def numbers(name: str, hr: bool) -> str:
        m = metrics[name]
        if hr:
            return f"{m['bpp']:.3f} bpp, {m['psnr']:.2f} dB"
        return f"{m['bpp']:.3f} bpp, {m['lr_psnr']:.2f} dB, CbCr {m['lr_psnr_cbcr']:.2f}"

    # Where the crops are: the whole bicubic thumbnail, thumbnail region red, photo region blue.
    reference = bicubic_downscale(image, scale)
    overview = outline(reference, [(thumbnail_box(spec.box, scale), (255, 0, 0)),
                                   (thumbnail_box(spec.detail, scale), (0, 90, 255))])
    thumb_panels = [labelled(overview, ["where (1x)", "red: these crops", "blue: photo crops"], font),
                    labelled(thumbs["reference"], ["(a) bicubic (Pillow),", "the reference"], font)]
    thumb_panels += [labelled(thumbs[n], [label[n], numbers(n, False)], font) for n in ("bicubic_jpeg", "old", "new")]
    sheet(f"{spec.path.name}: thumbnail ({reference.shape[1]}x{reference.shape[0]}) at {thumb_zoom}x nearest zoom; "
          f"dB = whole thumbnail vs (a), RGB and Cb+Cr", thumb_panels, font).save(out / f"{stem}_thumbnail.png",
                                                                            optimize=True)
    photo_label = {"bicubic_jpeg": f"(a) bicubic JPEG q{q} + bicubic up", "old": f"(b) old: {names[0]}",
                   "new": f"(c) new: {names[1]}"}
    photo_panels = [labelled(photos[n], [photo_label[n], numbers(n, True)], font) for n in ("bicubic_jpeg", "old", "new")]
    photo_panels.append(labelled(photos["original"], ["(d) original", f"{width}x{height}"], font))
    sheet(f"{spec.path.name}: HR photo region {','.join(map(str, spec.detail))} at {photo_zoom}x nearest zoom; "
          f"dB = whole photo, RGB", photo_panels, font).save(out / f"{stem}_photo.png", optimize=True)
    return {"image": str(spec.path), "size": [width, height], "box": list(spec.box), "detail": list(spec.detail),
            "thumbnail_box": list(thumbnail_box(spec.box, scale)), "metrics": metrics,
            "files": sorted(p.name for p in out.glob(f"{stem}_*"))}


def _command(args: argparse.Namespace) -> str:
    words = ["hyperthumbnail", "bench", "crops", "--new-weights", str(args.new_weights)]
    if args.old_weights:
        words += ["--old-weights", str(args.old_weights)]
    for spec in args.image or []:
        words += ["--image", spec]
    if not args.image:
        words += ["--data-root", str(args.data_root)]
    words += ["--thumb-zoom", str(args.thumb_zoom), "--photo-zoom", str(args.photo_zoom), "--runtime", args.runtime,
              "--out", str(args.out)]
    return shlex.join(words + (["--threads", str(args.threads)] if args.threads else []))


def run(args: argparse.Namespace) -> int:
    if args.thumb_zoom < 1 or args.photo_zoom < 1:
        raise ValueError("--thumb-zoom and --photo-zoom must be at least 1")
    specs = [parse_spec(s) for s in args.image] if args.image else default_specs(Path(args.data_root))
    missing = [str(s.path) for s in specs if not s.path.is_file()]
    if missing:
        raise FileNotFoundError(f"images not found: {', '.join(missing)}")
    stems = [s.path.stem for s in specs]
    if len(set(stems)) != len(stems):
        raise ValueError(f"two images share a file name stem ({', '.join(stems)}): their outputs would collide")
    started = time.monotonic()
    new = Pipeline(args.new_weights, runtime=args.runtime, threads=args.threads)
    old_weights = Path(args.old_weights) if args.old_weights else default_weights_path(new.scale)
    old = Pipeline(old_weights, scale=new.scale, runtime=args.runtime, threads=args.threads)
    if old.scale != new.scale:
        raise ValueError(f"the old weights are {old.scale}x, the new ones {new.scale}x")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = (old.weights.name, new.weights.name)
    images = [run_image(s, old, new, out, args.thumb_zoom, args.photo_zoom, names) for s in specs]
    result = {
        "meta": {"date": utc_now(), "command": _command(args), "machine": machine_info(), "scale": new.scale,
                 "runtime": args.runtime, "thumb_zoom": args.thumb_zoom, "photo_zoom": args.photo_zoom,
                 "old_weights": {"path": str(old.weights), "sha256": file_sha256(old.weights)},
                 "new_weights": {"path": str(new.weights), "sha256": file_sha256(new.weights)},
                 "elapsed_s": round(time.monotonic() - started, 1)},
        "images": images,
    }
    (out / "crops.json").write_text(json.dumps(result, indent=2) + "\n")
    for entry in images:
        m = entry["metrics"]
        print(f"{Path(entry['image']).name}: thumbnail dB (RGB / CbCr) bicubic JPEG {m['bicubic_jpeg']['lr_psnr']:.2f}/"
              f"{m['bicubic_jpeg']['lr_psnr_cbcr']:.2f}, old {m['old']['lr_psnr']:.2f}/{m['old']['lr_psnr_cbcr']:.2f}, "
              f"new {m['new']['lr_psnr']:.2f}/{m['new']['lr_psnr_cbcr']:.2f}; photo dB bicubic JPEG "
              f"{m['bicubic_jpeg']['psnr']:.2f}, old {m['old']['psnr']:.2f}, new {m['new']['psnr']:.2f}")
    print(f"wrote {out}/ (<image>_thumbnail.png, <image>_photo.png, the .jpg files, crops.json)")
    return 0
