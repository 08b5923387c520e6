"""Face masks: the shape of a face inside its crop region, feathering, and a batch's combined mask.

Pure functions of tensors; masks are float ``[h, w]`` in 0..1 on the device they are asked for.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .detections import Box, Faces, Region

MaskShape = Literal["box", "ellipse"]
MASK_SHAPES: tuple[MaskShape, ...] = ("box", "ellipse")


def _pixel_centres(start: int, stop: int, device: torch.device | str) -> Tensor:
    return torch.arange(start, stop, device=device, dtype=torch.float32) + 0.5


def shape_mask(region: Region, box: Box, shape: MaskShape, device: torch.device | str = "cpu") -> Tensor:
    """``[h, w]`` of ``region``: how much of each pixel lies inside ``box`` (``"box"``: exact area
    coverage, so edges on fractional coordinates are partial) or inside the ellipse inscribed in ``box``
    (``"ellipse"``: one pixel of anti-aliasing at its edge)."""
    rx0, ry0, rx1, ry1 = region
    bx0, by0, bx1, by1 = box
    xs = _pixel_centres(rx0, rx1, device)
    ys = _pixel_centres(ry0, ry1, device)
    if shape == "box":
        cover_x = ((xs + 0.5).clamp(max=bx1) - (xs - 0.5).clamp(min=bx0)).clamp(0, 1)
        cover_y = ((ys + 0.5).clamp(max=by1) - (ys - 0.5).clamp(min=by0)).clamp(0, 1)
        return cover_y[:, None] * cover_x[None, :]
    if shape == "ellipse":
        cx, cy = (bx0 + bx1) / 2, (by0 + by1) / 2
        ax, ay = max((bx1 - bx0) / 2, 1e-6), max((by1 - by0) / 2, 1e-6)
        r = torch.sqrt(((xs[None, :] - cx) / ax) ** 2 + ((ys[:, None] - cy) / ay) ** 2)
        # (1 - r) scaled by the smaller semi-axis approximates the distance to the edge in pixels
        return ((1.0 - r) * min(ax, ay) + 0.5).clamp(0, 1)
    raise ValueError(f"unknown mask shape {shape!r}; use one of {', '.join(MASK_SHAPES)}")


def gaussian_kernel(radius: int, device: torch.device | str = "cpu") -> Tensor:
    """A normalised 1-D Gaussian of ``2 * radius + 1`` taps, sigma ``radius / 2``."""
    sigma = max(radius / 2.0, 1e-6)
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def feather(
    mask: Tensor, radius: int, *, replicate: tuple[bool, bool, bool, bool] = (False, False, False, False)
) -> Tensor:
    """``mask`` [h, w] blurred by a Gaussian of ``radius`` pixels. Outside the mask counts as 0, except
    across the sides flagged in ``replicate`` (top, bottom, left, right: where the crop region meets the
    image border, so a face at the border is not faded out there)."""
    if radius <= 0:
        return mask
    h, w = mask.shape
    top, bottom, left, right = (radius if r else 0 for r in replicate)
    m = mask[None, None].float()
    if top or bottom or left or right:
        m = F.pad(m, (left, right, top, bottom), mode="replicate")
    m = F.pad(m, (radius - left, radius - right, radius - top, radius - bottom))
    k = gaussian_kernel(radius, mask.device)
    m = F.conv2d(m, k.reshape(1, 1, 1, -1))
    m = F.conv2d(m, k.reshape(1, 1, -1, 1))
    return m[0, 0, :h, :w].clamp(0, 1)


def border_sides(region: Region, width: int, height: int) -> tuple[bool, bool, bool, bool]:
    """Which sides of ``region`` (top, bottom, left, right) lie on the image border."""
    x0, y0, x1, y1 = region
    return (y0 == 0, y1 == height, x0 == 0, x1 == width)


def combined_mask(faces: Faces, device: torch.device | str = "cpu", *, feather_radius: int = 0) -> Tensor:
    """MASK ``[B, H, W]``: per image, the maximum of its faces' masks placed at their crop regions."""
    out = torch.zeros(faces.batch_size, faces.height, faces.width, device=device)
    for d in faces:
        x0, y0, x1, y1 = d.crop
        m = d.mask.to(device)
        if feather_radius > 0:
            m = feather(m, feather_radius, replicate=border_sides(d.crop, faces.width, faces.height))
        view = out[d.image_index, y0:y1, x0:x1]
        torch.maximum(view, m, out=view)
    return out


def resize_mask(mask: Tensor, width: int, height: int) -> Tensor:
    """``mask`` [..., h, w] resized bilinearly to ``height`` x ``width``."""
    lead = mask.shape[:-2]
    m = mask.reshape(-1, 1, *mask.shape[-2:]).float()
    m = F.interpolate(m, size=(height, width), mode="bilinear", align_corners=False)
    return m.reshape(*lead, height, width).clamp(0, 1)


def radius_for(size: tuple[int, int], feather_px: int) -> int:
    """A feather radius that fits in a crop of ``size`` (at most a quarter of its shorter side)."""
    return max(0, min(feather_px, math.floor(min(size) / 4)))


def move_mask(mask: Tensor, old: Region, new: Region) -> Tensor:
    """``mask`` of region ``old`` expressed in region ``new`` (zero where ``old`` does not cover it)."""
    ox0, oy0, ox1, oy1 = old
    nx0, ny0, nx1, ny1 = new
    out = torch.zeros(ny1 - ny0, nx1 - nx0, dtype=mask.dtype, device=mask.device)
    ix0, iy0, ix1, iy1 = max(ox0, nx0), max(oy0, ny0), min(ox1, nx1), min(oy1, ny1)
    if ix1 > ix0 and iy1 > iy0:
        out[iy0 - ny0 : iy1 - ny0, ix0 - nx0 : ix1 - nx0] = mask[iy0 - oy0 : iy1 - oy0, ix0 - ox0 : ix1 - ox0]
    return out
