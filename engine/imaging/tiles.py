"""Overlapping tiles: grids over an image, blend weights, and running a function tile by tile.

:func:`tiled_apply` runs an image-to-image function (an upscaler, say) on overlapping tiles and blends the
results. Where two tiles overlap, each tile's weight is 0 over the outer quarter of the overlap (pixels
whose neighbourhood the tile cut off), ramps up linearly over the middle half and is 1 beyond, so a
network whose receptive field fits in that quarter gives the whole-image result exactly, and any other
one (window attention, a wide receptive field) is cross-faded without a visible seam.
:func:`shrinking_tiles` retries a tiled run with halved tiles when the device runs out of memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor

T = TypeVar("T")

#: called after each tile with (tiles done, tiles in all); may raise to stop (an interrupt)
TileCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class Rect:
    """A pixel rectangle ``[x0, x1) x [y0, y1)``."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def scaled(self, factor: int) -> Rect:
        return Rect(self.x0 * factor, self.y0 * factor, self.x1 * factor, self.y1 * factor)


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of length ``tile`` covering ``0..size``, ``overlap`` apart at least; the last one
    ends at ``size`` (so it may overlap its neighbour more)."""
    if size <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] + tile < size:
        starts.append(size - tile)
    return starts


def overlapping_tiles(height: int, width: int, tile: int, overlap: int) -> list[Rect]:
    """Row-major tiles of at most ``tile`` x ``tile`` pixels covering the image, overlapping by ``overlap``."""
    if tile < 1:
        raise ValueError(f"tile size must be positive, got {tile}")
    overlap = max(0, min(overlap, tile // 2))
    return [
        Rect(x, y, min(x + tile, width), min(y + tile, height))
        for y in tile_starts(height, tile, overlap)
        for x in tile_starts(width, tile, overlap)
    ]


def edge_profile(length: int, overlap: int, *, falloff_start: bool, falloff_end: bool) -> Tensor:
    """Blend weights along one side of a tile: 1, except at ends that border another tile (not the
    image's edge), where the outer quarter of ``overlap`` is 0 and the middle half ramps linearly."""
    w = torch.ones(length)
    if overlap <= 0:
        return w
    zero = overlap // 4
    ramp = max(1, overlap - 2 * zero)
    profile = torch.cat([torch.zeros(zero), torch.arange(1, ramp + 1, dtype=torch.float32) / (ramp + 1)])
    n = min(profile.numel(), length)
    if falloff_start:
        w[:n] = torch.minimum(w[:n], profile[:n])
    if falloff_end:
        w[length - n :] = torch.minimum(w[length - n :], profile[:n].flip(0))
    return w


def tile_weights(rect: Rect, height: int, width: int, overlap: int, scale: int = 1) -> Tensor:
    """``[rect.height * scale, rect.width * scale]`` blend weights of a tile of an image ``height`` x
    ``width``, for outputs ``scale`` times the size of the tile (the overlap scales with them)."""
    wy = edge_profile(
        rect.height * scale, overlap * scale, falloff_start=rect.y0 > 0, falloff_end=rect.y1 < height
    )
    wx = edge_profile(
        rect.width * scale, overlap * scale, falloff_start=rect.x0 > 0, falloff_end=rect.x1 < width
    )
    return wy[:, None] * wx[None, :]


def tiled_apply(
    x: Tensor,
    fn: Callable[[Tensor], Tensor],
    *,
    scale: int,
    tile: int,
    overlap: int,
    on_tile: TileCallback | None = None,
) -> Tensor:
    """``fn`` over overlapping tiles of ``x`` ``[B, C, H, W]``, blended into ``[B, C', H*scale, W*scale]``.

    ``fn`` maps a ``[B, C, h, w]`` tile to ``[B, C', h*scale, w*scale]``; its results are accumulated on
    the device they come from, in float32."""
    _, _, h, w = x.shape
    overlap = max(0, min(overlap, tile // 2))
    rects = overlapping_tiles(h, w, tile, overlap)
    out: Tensor | None = None
    weight: Tensor | None = None
    for n, r in enumerate(rects):
        piece = fn(x[:, :, r.y0 : r.y1, r.x0 : r.x1]).float()
        expected = (r.height * scale, r.width * scale)
        if tuple(piece.shape[-2:]) != expected:
            raise ValueError(
                f"a {r.width}x{r.height} tile came back {piece.shape[-1]}x{piece.shape[-2]}, "
                f"expected {expected[1]}x{expected[0]} (scale {scale})"
            )
        if out is None:
            out = torch.zeros(x.shape[0], piece.shape[1], h * scale, w * scale, device=piece.device)
            weight = torch.zeros(h * scale, w * scale, device=piece.device)
        assert weight is not None
        wt = tile_weights(r, h, w, overlap, scale).to(piece.device)
        s = r.scaled(scale)
        out[:, :, s.y0 : s.y1, s.x0 : s.x1] += piece * wt
        weight[s.y0 : s.y1, s.x0 : s.x1] += wt
        if on_tile is not None:
            on_tile(n + 1, len(rects))
    assert out is not None and weight is not None
    return out / weight.clamp_min(1e-12)


def count_tiles(height: int, width: int, tile: int, overlap: int) -> int:
    return len(overlapping_tiles(height, width, tile, max(0, min(overlap, tile // 2))))


def shrinking_tiles(run: Callable[[int], T], tile: int, *, min_tile: int = 128) -> T:
    """``run(tile)``; on out-of-memory, again with the tile halved, down to ``min_tile`` (then it raises)."""
    while True:
        try:
            return run(tile)
        except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
            if not is_out_of_memory(exc) or tile // 2 < min_tile:
                raise
            tile //= 2
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a device running out of memory (CUDA's error type, MPS's and CPU's messages)."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()
