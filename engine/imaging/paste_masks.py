"""Masks for pasting tiles back: rectangles, seam gradients and radial blobs, feathered by a Gaussian blur.

A mask is described by a :class:`MaskShape` over a canvas and rendered on any window of it
(:func:`render`), blurred as if the whole canvas mask had been blurred (edges of the canvas repeat their
values, as PIL's ``GaussianBlur`` does) without ever building the canvas-sized mask: a 4096 px canvas with
dozens of tiles costs one window per tile. ``blur`` is the standard deviation in pixels (PIL's "radius").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .tiles import Rect


def gaussian_kernel(sigma: float, *, device: torch.device | str | None = None) -> Tensor:
    """A normalised 1-D Gaussian of standard deviation ``sigma``, ``2 * ceil(3 sigma) + 1`` taps."""
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(mask: Tensor, sigma: float) -> Tensor:
    """Blur a ``[H, W]`` mask (edges repeat their values). ``sigma <= 0`` returns it unchanged."""
    if sigma <= 0:
        return mask
    k = gaussian_kernel(sigma, device=mask.device)
    r = (k.numel() - 1) // 2
    x = mask[None, None].float()
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return x[0, 0]


Profile = Literal["box", "tent"]


@dataclass(frozen=True)
class MaskShape:
    """A mask on a ``width`` x ``height`` canvas, 0 outside ``rect``. Inside: ``box`` is 1, ``tent`` rises
    linearly to 1 at the middle and falls back (per axis: ``profile_x`` across the columns, ``profile_y``
    across the rows), ``radial`` is 1 at the centre and 0 on the ellipse inscribed in ``rect``."""

    width: int
    height: int
    rect: Rect
    profile_x: Profile = "box"
    profile_y: Profile = "box"
    radial: bool = False
    blur: float = 0.0


def _axis(
    start: int, stop: int, lo: int, hi: int, profile: Profile, device: torch.device | str | None
) -> Tensor:
    """Values of one axis's profile at the pixels ``lo..hi`` (pixel centres at ``i + 0.5``)."""
    pos = torch.arange(lo, hi, dtype=torch.float32, device=device) + 0.5
    inside = (pos > start) & (pos < stop)
    if profile == "box":
        return inside.float()
    half = (stop - start) / 2.0
    tent = 1.0 - (pos - (start + stop) / 2.0).abs() / half
    return torch.where(inside, tent.clamp(0, 1), torch.zeros_like(pos))


def _sharp(shape: MaskShape, window: Rect, device: torch.device | str | None) -> Tensor:
    r = shape.rect
    if shape.radial:
        ys = torch.arange(window.y0, window.y1, dtype=torch.float32, device=device) + 0.5
        xs = torch.arange(window.x0, window.x1, dtype=torch.float32, device=device) + 0.5
        dy = (ys - (r.y0 + r.y1) / 2.0) / (r.height / 2.0)
        dx = (xs - (r.x0 + r.x1) / 2.0) / (r.width / 2.0)
        return (1.0 - torch.sqrt(dy[:, None] ** 2 + dx[None, :] ** 2)).clamp(0, 1)
    my = _axis(r.y0, r.y1, window.y0, window.y1, shape.profile_y, device)
    mx = _axis(r.x0, r.x1, window.x0, window.x1, shape.profile_x, device)
    return my[:, None] * mx[None, :]


def render(shape: MaskShape, window: Rect, *, device: torch.device | str | None = None) -> Tensor:
    """The ``[window.height, window.width]`` part of the blurred canvas mask."""
    if shape.blur <= 0:
        return _sharp(shape, window, device)
    k = gaussian_kernel(shape.blur, device=device)
    radius = (k.numel() - 1) // 2
    # render with a margin of the blur's radius (as far as the canvas goes), then repeat the canvas's edge
    grown = Rect(
        max(0, window.x0 - radius),
        max(0, window.y0 - radius),
        min(shape.width, window.x1 + radius),
        min(shape.height, window.y1 + radius),
    )
    m = _sharp(shape, grown, device)[None, None]
    pad = (
        radius - (window.x0 - grown.x0),
        radius - (grown.x1 - window.x1),
        radius - (window.y0 - grown.y0),
        radius - (grown.y1 - window.y1),
    )
    m = F.pad(m, pad, mode="replicate") if any(pad) else m
    m = F.conv2d(m, k.view(1, 1, -1, 1))
    m = F.conv2d(m, k.view(1, 1, 1, -1))
    return m[0, 0]


def render_canvas(shape: MaskShape, *, device: torch.device | str | None = None) -> Tensor:
    """The whole canvas mask, blurred (for tests and small canvases)."""
    return gaussian_blur(_sharp(shape, Rect(0, 0, shape.width, shape.height), device), shape.blur)
