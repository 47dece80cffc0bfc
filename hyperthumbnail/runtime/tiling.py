"""Tiled encoder and decoder: memory bounded by the tile, output IDENTICAL to untiled.

Each tile is computed with a margin at least the receptive field of the graph on every side
that is not the image border, and only its core is kept: every kept value then sees exactly the
inputs it sees untiled. Tiles start on the 8x8 block grid (8 LR pixels), a multiple of the
encoder U-Net's /4 stride, so strided convolutions, pixel (un)shuffles and JPEG blocks line up.

Only the convolutional parts tile. The QPM averages its MLP over all blocks of the image (the
tables are image-wide), so it runs once on the whole coefficient array (small: 1/16 of the HR
pixels at scale 4). The decoder is two graphs: its coefficient branch and the body's head conv
(`decoder_features`, mostly at block resolution) have a receptive field of 36 blocks, so it runs whole up to
`DEFAULT_FEATURE_TILE_BLOCKS` blocks (6144x4096, 25.2 MP at scale 4) and in a few large tiles above
(a 48 MP photo: 4 tiles, 1.74x its compute, itself ~5% of the decoder's MACs); the decoder body
runs in tiles of `DEFAULT_TILE_PIXELS` with a 5-block margin, or whole up to
`DEFAULT_BODY_WHOLE_PIXELS` (6144x4096 too) where its runtime's memory allows
(`runtime.graphs.default_body_whole_pixels`).
"""
from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DECODER_BODY_MARGIN_BLOCKS",
    "DECODER_FEATURES_MARGIN_BLOCKS",
    "DEFAULT_BODY_WHOLE_PIXELS",
    "DEFAULT_FEATURE_TILE_BLOCKS",
    "DEFAULT_TILE_PIXELS",
    "ENCODER_MARGIN_BLOCKS",
    "Tile",
    "decode_body_tiled",
    "decode_features_tiled",
    "decode_tiled",
    "encode_tiled",
    "plan_tiles",
]

# Receptive-field radius, in 8x8 blocks at LR, rounded up with room to spare.
# Encoder (LR pixels): bicubic base 2; U-Net head 1 + RDB 5 + stride-2 conv 1 + RDB 5x2 + stride-2
# conv 1x2 + RDB 5x4 + conv 1x4 + shuffle 2 + RDB 5x2 + conv 1x2 + shuffle 1 + RDB 5 + tail 1 = 64.
ENCODER_MARGIN_BLOCKS = 9
# Decoder body (LR pixels): 16 blocks x 2 + conv 1 + tail 1 = 34, bicubic up 2 = 36 (its head conv
# runs in the features graph, `Decoder.head_features`).
DECODER_BODY_MARGIN_BLOCKS = 5
# Decoder features (blocks): the coefficient branch, exact: EDSR head 1 + 16 residual blocks x 2 +
# conv 1 + tail 1 = 35 (the IDCT and the x8 pixel shuffle stay inside a block), then the body's head
# conv at LR reaches one pixel into a 36th. tests/test_tiling.py perturbs one block and checks that
# the change reaches 36 blocks.
DECODER_FEATURES_MARGIN_BLOCKS = 36
# Largest tile, in HR pixels including margins: a tile of this size keeps a 20 MP encode under
# 3 GiB and a decode under 2 GiB peak RSS (docs/benchmarks.md).
DEFAULT_TILE_PIXELS = 8_000_000
# The decoder body runs whole on photos of up to this many (padded) HR pixels, 6144x4096, the paper's 6K.
# Its bicubic skip is folded into its LR tail, so every tensor inside it is at LR but its uint8
# output: on a 6028x3391 photo, whole vs 8 MP tiles peaks 0.28 GiB higher and takes 0.7x the time
# (11% fewer blocks, no tile copies). Above it the tiles keep a 48 MP decode under 2 GiB
# (docs/benchmarks.md, "Decoder body: whole up to 6K").
DEFAULT_BODY_WHOLE_PIXELS = 6144 * 4096
# Largest decoder_features tile, in blocks including margins. The graph peaks at ~35 KiB per
# block (its 1536-channel tail before the pixel shuffle; measured with OpenVINO f32), and the
# runtimes keep most of that allocated after the call (OpenVINO's buffers, ONNX Runtime's arena):
# at most ~0.85 GiB. Grids up to this size (6144x4096 at scale 4, the paper's 6K, and 20 MP photos)
# run whole, as before; a 48 MP photo (192x256 blocks) runs as 4 tiles of at most 131x163, which
# keeps the server's 48 MP decode near 2 GiB (docs/benchmarks.md).
DEFAULT_FEATURE_TILE_BLOCKS = 24_576


@dataclass(frozen=True)
class Tile:
    """Rows/cols in blocks: `core` is what this tile contributes, `extent` what it computes."""

    core: tuple[slice, slice]
    extent: tuple[slice, slice]

    @property
    def offset(self) -> tuple[slice, slice]:
        """The core's position inside the computed extent."""
        return tuple(slice(c.start - e.start, c.stop - e.start) for c, e in zip(self.core, self.extent))  # type: ignore[return-value]


def _axis_plan(length: int, margin: int, parts: int) -> tuple[int, list[tuple[int, int]], list[tuple[int, int]]] | None:
    """One axis cut into `parts` tiles whose extents all have the same size (the edge tiles reach
    further inward instead of being shorter): (extent size, cores, extents), or None if no such
    cut leaves every core a `margin` on its inner sides. One size for every tile means one input
    shape per graph: OpenVINO prepares each new shape on its first call (~0.1 s of a body tile)."""
    if parts == 1:
        return length, [(0, length)], [(0, length)]
    smallest = math.ceil((length + 2 * margin * (parts - 1)) / parts)
    for size in range(smallest, min(length, smallest + 3)):  # rounding the starts costs at most 2
        starts = [round(i * (length - size) / (parts - 1)) for i in range(parts)]
        overlaps = [starts[i] + size - starts[i + 1] for i in range(parts - 1)]
        if min(overlaps) >= 2 * margin:
            # each core ends in the middle of its overlap with the next tile: >= margin on both sides
            bounds = [0, *(starts[i + 1] + overlaps[i] // 2 for i in range(parts - 1)), length]
            cores = list(zip(bounds[:-1], bounds[1:]))
            if any(stop <= start for start, stop in cores):
                return None
            return size, cores, [(start, start + size) for start in starts]
    return None


@functools.lru_cache(maxsize=64)
def _axis_plans(length: int, margin: int) -> dict[int, tuple[int, int, list[tuple[int, int]], list[tuple[int, int]]]]:
    """Per workable number of parts of one axis: (extent size, sum of extents, cores, extents)."""
    plans = {}
    for parts in range(1, length + 1):
        if parts > 1 and (length + 2 * margin * (parts - 1)) / parts <= 2 * margin + 1:
            break  # the extents are down to the two margins: no room for a core any more
        plan = _axis_plan(length, margin, parts)
        if plan is not None:
            size, cores, extents = plan
            plans[parts] = (size, size * parts, cores, extents)
    return plans


def plan_tiles(rows: int, cols: int, margin: int, max_area: int | None) -> list[Tile]:
    """Cover a rows x cols block grid with the fewest computed blocks, all tiles' extents of one
    size (core + at least `margin` on every side that is not the grid's border) of at most
    `max_area` blocks (None: one tile, no margin)."""
    if rows < 1 or cols < 1:
        raise ValueError(f"empty block grid {rows}x{cols}")
    if max_area is None or rows * cols <= max_area:
        whole = (slice(0, rows), slice(0, cols))
        return [Tile(whole, whole)]
    # The computed area of a grid of tiles is (sum of row extents) x (sum of column extents).
    best = None
    row_plans, col_plans = _axis_plans(rows, margin), _axis_plans(cols, margin)
    for row_size, row_sum, row_cores, row_extents in row_plans.values():
        for col_size, col_sum, col_cores, col_extents in col_plans.values():
            if row_size * col_size <= max_area and (best is None or row_sum * col_sum < best[0]):
                best = (row_sum * col_sum, list(zip(row_cores, row_extents)), list(zip(col_cores, col_extents)))
    if best is None:
        raise ValueError(f"a tile of {max_area} blocks cannot hold a core and a {margin}-block margin "
                         f"on a {rows}x{cols}-block image")
    return [Tile((slice(*row_core), slice(*col_core)), (slice(*row_extent), slice(*col_extent)))
            for (row_core, row_extent), (col_core, col_extent) in itertools.product(best[1], best[2])]


def encode_tiled(run_encoder: Callable[[np.ndarray], np.ndarray], padded: np.ndarray, scale: int,
                 max_tile_pixels: int | None = DEFAULT_TILE_PIXELS,
                 release: Callable[[], None] | None = None) -> np.ndarray:
    """Padded HR uint8 HxWx3 (multiples of 8*scale) -> the encoder's coefficients (3, 64, h, w).

    `run_encoder`: (1, 3, h', w') float32 in [0, 1] -> (1, 3, 64, h'/(8s), w'/(8s)). Each tile is
    converted to float on its own (the whole image in float32 would be 12 bytes per pixel).
    `release`: called after a run in tiles (a large photo), so a long-lived process does not keep
    the encoder runtime's buffers for the largest photo it saw (see `decode_tiled`).
    """
    unit = 8 * scale
    height, width = padded.shape[:2]
    rows, cols = height // unit, width // unit
    max_area = None if max_tile_pixels is None else max(1, max_tile_pixels // (unit * unit))
    out: np.ndarray | None = None
    tiles = plan_tiles(rows, cols, ENCODER_MARGIN_BLOCKS, max_area)
    for tile in tiles:
        ey, ex = tile.extent
        rows_px, cols_px = slice(ey.start * unit, ey.stop * unit), slice(ex.start * unit, ex.stop * unit)
        chw = np.ascontiguousarray(padded[rows_px, cols_px].transpose(2, 0, 1), dtype=np.float32)
        chw /= np.float32(255.0)  # the same float32 arithmetic as steps.preprocess
        coefficients = run_encoder(chw[None])[0]
        if out is None:
            out = np.empty((3, 64, rows, cols), dtype=coefficients.dtype)
        oy, ox = tile.offset
        out[:, :, tile.core[0], tile.core[1]] = coefficients[:, :, oy, ox]
    assert out is not None
    if release is not None and len(tiles) > 1:
        release()
    return out


def decode_body_tiled(run_body: Callable[[np.ndarray], np.ndarray], features: np.ndarray, scale: int,
                      max_tile_pixels: int | None = DEFAULT_TILE_PIXELS, whole_pixels: int = 0) -> np.ndarray:
    """Decoder features (C, 8h, 8w) float32 -> HR uint8 (8hs, 8ws, 3): whole when the HR image has
    at most `whole_pixels` pixels or `max_tile_pixels` is None, otherwise in tiles of at most that.

    `run_body`: (1, C, h', w') -> (1, h'*s, w'*s, 3) uint8.
    """
    rows, cols = features.shape[1] // 8, features.shape[2] // 8
    unit = 8 * scale  # HR pixels per block
    if max_tile_pixels is None or rows * cols * unit * unit <= whole_pixels:
        return run_body(features[None])[0]  # the graph's own output, not a copy of it (61 MB at 6K)
    out = np.empty((rows * unit, cols * unit, 3), dtype=np.uint8)
    for tile in plan_tiles(rows, cols, DECODER_BODY_MARGIN_BLOCKS, max(1, max_tile_pixels // (unit * unit))):
        ey, ex = tile.extent
        crop = np.ascontiguousarray(features[None, :, ey.start * 8:ey.stop * 8, ex.start * 8:ex.stop * 8])
        image = run_body(crop)[0]
        oy, ox = tile.offset
        out[tile.core[0].start * unit:tile.core[0].stop * unit, tile.core[1].start * unit:tile.core[1].stop * unit] = \
            image[oy.start * unit:oy.stop * unit, ox.start * unit:ox.stop * unit]
    return out


def decode_features_tiled(run_features: Callable[[np.ndarray, np.ndarray], np.ndarray], quantized: np.ndarray,
                          tables: np.ndarray,
                          max_tile_blocks: int | None = DEFAULT_FEATURE_TILE_BLOCKS) -> np.ndarray:
    """Quantized coefficients (3, 64, h, w) + tables (2, 64) -> decoder features (C, 8h, 8w) float32.

    `run_features`: (1, 3, 64, h', w') int32, (1, 2, 64) int32 -> (1, C, 8h', 8w'). A grid of at
    most `max_tile_blocks` blocks (None: any) is one call on the whole array, as untiled.
    """
    rows, cols = quantized.shape[2:]
    tiles = plan_tiles(rows, cols, DECODER_FEATURES_MARGIN_BLOCKS, max_tile_blocks)
    if len(tiles) == 1:
        return run_features(quantized[None], tables[None])[0]
    out: np.ndarray | None = None
    for tile in tiles:
        ey, ex = tile.extent
        features = run_features(np.ascontiguousarray(quantized[None, :, :, ey, ex]), tables[None])[0]
        if out is None:
            out = np.empty((features.shape[0], rows * 8, cols * 8), dtype=features.dtype)
        (cy, cx), (oy, ox) = tile.core, tile.offset
        out[:, cy.start * 8:cy.stop * 8, cx.start * 8:cx.stop * 8] = \
            features[:, oy.start * 8:oy.stop * 8, ox.start * 8:ox.stop * 8]
        del features  # the next tile's call allocates its own
    assert out is not None
    return out


def decode_tiled(run_features: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 run_body: Callable[[np.ndarray], np.ndarray], quantized: np.ndarray, tables: np.ndarray,
                 scale: int, max_tile_pixels: int | None = DEFAULT_TILE_PIXELS,
                 max_feature_tile_blocks: int | None = DEFAULT_FEATURE_TILE_BLOCKS,
                 release_features: Callable[[], None] | None = None,
                 release_body: Callable[[], None] | None = None,
                 body_whole_pixels: int = 0) -> np.ndarray:
    """Quantized coefficients (3, 64, h, w) + tables (2, 64) -> padded HR uint8 (8hs, 8ws, 3): the
    decoder's two graphs, each tiled as its own receptive field allows (the in-process pipeline
    and the served decoder both decode through here).

    `release_features`: called between the two graphs when the features ran in tiles (a large
    photo), so the features runtime's retained buffers do not stay allocated under the body's;
    `release_body` after the body then, so a long-lived process (the server) does not keep them
    for the largest photo it saw. `body_whole_pixels`: see `decode_body_tiled`'s `whole_pixels`.
    """
    features = decode_features_tiled(run_features, quantized, tables, max_feature_tile_blocks)
    large = len(plan_tiles(*quantized.shape[2:], DECODER_FEATURES_MARGIN_BLOCKS, max_feature_tile_blocks)) > 1
    if large and release_features is not None:
        release_features()
    image = decode_body_tiled(run_body, features, scale, max_tile_pixels, body_whole_pixels)
    if large and release_body is not None:
        release_body()
    return image
