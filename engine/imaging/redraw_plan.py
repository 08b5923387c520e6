"""The jobs of a tiled diffusion upscale ("Ultimate SD Upscale"), as plain data.

A canvas (the already upscaled image) is cut into a grid of ``tile_width`` x ``tile_height`` tiles. Each
job names a window of the canvas to re-denoise (the region plus padding for context, a multiple of 8 so
it maps to whole latent cells) and the feathered mask through which the result is pasted back:

- redraw (``Linear``: row by row; ``Chess``: the "white" tiles of a checkerboard first, then the others):
  one job per tile, pasted through the tile's rectangle blurred by ``mask_blur``;
- seam fix ``Band Pass``: one job per inner grid line, a band ``seam_fix_width`` wide across the whole
  canvas, pasted through a gradient that is 1 on the line and 0 at the band's sides;
- ``Half Tile``: tile-sized jobs centred on each inner grid line between two tiles, pasted through a
  gradient peaking on the line (blurred by ``seam_fix_mask_blur``);
- ``Half Tile + Intersections``: those, then tile-sized jobs centred on each inner grid crossing, pasted
  through a radial gradient.

With ``uniform`` every tile-sized job uses the same window size (tile plus padding on each side, moved
inside the canvas at its edges), so the model always sees the size it was set up for; otherwise windows
are the region plus padding, cut at the canvas's edges and rounded up to the multiple.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

from .paste_masks import MaskShape
from .tiles import Rect

RedrawMode = Literal["Linear", "Chess", "None"]
SeamFixMode = Literal["None", "Band Pass", "Half Tile", "Half Tile + Intersections"]
REDRAW_MODES: Final[tuple[str, ...]] = ("Linear", "Chess", "None")
SEAM_FIX_MODES: Final[tuple[str, ...]] = ("None", "Band Pass", "Half Tile", "Half Tile + Intersections")

JobKind = Literal["tile", "band", "half tile", "intersection"]


@dataclass(frozen=True)
class RedrawSettings:
    tile_width: int = 512
    tile_height: int = 512
    padding: int = 32
    mask_blur: float = 8
    mode: RedrawMode = "Linear"
    denoise: float = 0.2
    seam_fix_mode: SeamFixMode = "None"
    seam_fix_denoise: float = 1.0
    seam_fix_width: int = 64
    seam_fix_padding: int = 16
    seam_fix_mask_blur: float = 8
    uniform: bool = True
    #: windows are multiples of this (the VAE's cell)
    multiple: int = 8


@dataclass(frozen=True)
class RedrawJob:
    kind: JobKind
    #: the canvas window that is encoded, denoised and decoded
    window: Rect
    #: where the result is pasted back (on the canvas; rendered on ``window``)
    mask: MaskShape
    denoise: float


def grid_size(width: int, height: int, tile_width: int, tile_height: int) -> tuple[int, int]:
    """(rows, cols) of the tile grid."""
    return math.ceil(height / tile_height), math.ceil(width / tile_width)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _span(lo: int, hi: int, size: int, limit: int) -> tuple[int, int]:
    """An interval of length ``size`` (at most ``limit``) containing ``lo..hi`` as centred as the canvas
    ``0..limit`` allows."""
    size = min(size, limit)
    start = (lo + hi) // 2 - size // 2
    start = max(0, min(start, limit - size))
    return start, start + size


def crop_window(
    region: Rect,
    padding: int,
    width: int,
    height: int,
    *,
    uniform_size: tuple[int, int] | None = None,
    multiple: int = 8,
) -> Rect:
    """The window sent through the model for ``region``: ``uniform_size`` (w, h) plus padding, or the
    region plus ``padding`` on each side cut at the canvas; either rounded up to ``multiple`` and kept
    inside the canvas (whose sides must be multiples of ``multiple``)."""
    r = Rect(max(0, region.x0), max(0, region.y0), min(width, region.x1), min(height, region.y1))
    if uniform_size is not None:
        w = _round_up(max(uniform_size[0], r.width) + 2 * padding, multiple)
        h = _round_up(max(uniform_size[1], r.height) + 2 * padding, multiple)
    else:
        x0, x1 = max(0, r.x0 - padding), min(width, r.x1 + padding)
        y0, y1 = max(0, r.y0 - padding), min(height, r.y1 + padding)
        w, h = _round_up(x1 - x0, multiple), _round_up(y1 - y0, multiple)
        r = Rect(x0, y0, x1, y1)
    x0, x1 = _span(r.x0, r.x1, w, width)
    y0, y1 = _span(r.y0, r.y1, h, height)
    return Rect(x0, y0, x1, y1)


def plan_jobs(width: int, height: int, s: RedrawSettings) -> list[RedrawJob]:
    """Every job of a tiled redraw and its seam fix, in the order they run."""
    if width % s.multiple or height % s.multiple:
        raise ValueError(f"canvas {width}x{height} is not a multiple of {s.multiple} pixels")
    if s.tile_width < s.multiple or s.tile_height < s.multiple:
        raise ValueError(f"tiles {s.tile_width}x{s.tile_height} are smaller than {s.multiple} pixels")
    if s.mode not in REDRAW_MODES:
        raise ValueError(f"unknown mode_type {s.mode!r}; one of {', '.join(REDRAW_MODES)}")
    if s.seam_fix_mode not in SEAM_FIX_MODES:
        raise ValueError(f"unknown seam_fix_mode {s.seam_fix_mode!r}; one of {', '.join(SEAM_FIX_MODES)}")
    return _redraw_jobs(width, height, s) + _seam_jobs(width, height, s)


def _redraw_jobs(width: int, height: int, s: RedrawSettings) -> list[RedrawJob]:
    if s.mode == "None":
        return []
    rows, cols = grid_size(width, height, s.tile_width, s.tile_height)
    cells = [(yi, xi) for yi in range(rows) for xi in range(cols)]
    if s.mode == "Chess":
        cells = [c for c in cells if sum(c) % 2 == 0] + [c for c in cells if sum(c) % 2 == 1]
    uniform = (s.tile_width, s.tile_height) if s.uniform else None
    jobs = []
    for yi, xi in cells:
        tw, th = s.tile_width, s.tile_height
        rect = Rect(xi * tw, yi * th, min(width, (xi + 1) * tw), min(height, (yi + 1) * th))
        window = crop_window(rect, s.padding, width, height, uniform_size=uniform, multiple=s.multiple)
        mask = MaskShape(width, height, rect, blur=s.mask_blur)
        jobs.append(RedrawJob("tile", window, mask, s.denoise))
    return jobs


def _seam_jobs(width: int, height: int, s: RedrawSettings) -> list[RedrawJob]:
    if s.seam_fix_mode == "None":
        return []
    rows, cols = grid_size(width, height, s.tile_width, s.tile_height)
    tw, th, pad = s.tile_width, s.tile_height, s.seam_fix_padding
    jobs: list[RedrawJob] = []

    def add(kind: JobKind, mask: MaskShape, uniform: bool) -> None:
        size = (tw, th) if uniform and s.uniform else None
        window = crop_window(mask.rect, pad, width, height, uniform_size=size, multiple=s.multiple)
        jobs.append(RedrawJob(kind, window, mask, s.seam_fix_denoise))

    if s.seam_fix_mode == "Band Pass":
        if s.seam_fix_width <= 0:
            return []
        half = s.seam_fix_width // 2
        for xi in range(1, cols):
            band = Rect(xi * tw - half, 0, xi * tw - half + s.seam_fix_width, height)
            add("band", MaskShape(width, height, band, profile_x="tent"), uniform=False)
        for yi in range(1, rows):
            band = Rect(0, yi * th - half, width, yi * th - half + s.seam_fix_width)
            add("band", MaskShape(width, height, band, profile_y="tent"), uniform=False)
        return jobs

    blur = s.seam_fix_mask_blur
    for yi in range(rows - 1):  # across the horizontal grid lines
        for xi in range(cols):
            rect = Rect(xi * tw, yi * th + th // 2, xi * tw + tw, yi * th + th // 2 + th)
            add("half tile", MaskShape(width, height, rect, profile_y="tent", blur=blur), uniform=True)
    for yi in range(rows):  # across the vertical grid lines
        for xi in range(cols - 1):
            rect = Rect(xi * tw + tw // 2, yi * th, xi * tw + tw // 2 + tw, yi * th + th)
            add("half tile", MaskShape(width, height, rect, profile_x="tent", blur=blur), uniform=True)
    if s.seam_fix_mode == "Half Tile + Intersections":
        for yi in range(rows - 1):
            for xi in range(cols - 1):
                cx, cy = (xi + 1) * tw, (yi + 1) * th
                rect = Rect(cx - tw // 2, cy - th // 2, cx - tw // 2 + tw, cy - th // 2 + th)
                add("intersection", MaskShape(width, height, rect, radial=True, blur=blur), uniform=True)
    return jobs
