"""Mask math: morphology, thresholds, feathering, compositing and bounding boxes of MASK ``[B, H, W]``
tensors in 0..1. Pure functions; results stay on the input's device."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

MaskOperation = Literal["multiply", "add", "subtract", "and", "or", "xor"]
MASK_OPERATIONS: tuple[MaskOperation, ...] = ("multiply", "add", "subtract", "and", "or", "xor")

# footprints of one step of growing: 4-neighbourhood (tapered corners) or 8-neighbourhood (square)
_CROSS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))
_SQUARE = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def _step(mask: Tensor, footprint: tuple[tuple[int, int], ...], grow: bool) -> Tensor:
    """One dilation (``grow``) or erosion over ``footprint``; the border repeats the edge pixels."""
    _, h, w = mask.shape
    padded = F.pad(mask[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    shifted = torch.stack([padded[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in footprint])
    return shifted.amax(dim=0) if grow else shifted.amin(dim=0)


def grow(mask: Tensor, expand: int, tapered_corners: bool = True) -> Tensor:
    """Grow (``expand`` > 0) or shrink (< 0) a mask by ``|expand|`` pixels, one pixel per step: grey
    dilation/erosion over the 4-neighbourhood (``tapered_corners``: diagonal growth is slower, corners
    round off) or the 8-neighbourhood (square corners). ComfyUI's GrowMask."""
    out = mask.float()
    footprint = _CROSS if tapered_corners else _SQUARE
    for _ in range(abs(int(expand))):
        out = _step(out, footprint, grow=expand > 0)
    return out


def threshold(mask: Tensor, value: float) -> Tensor:
    """1 where the mask is above ``value``, else 0."""
    return (mask > value).float()


def invert(mask: Tensor) -> Tensor:
    return 1.0 - mask


def solid(value: float, height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
    """A mask of one value, batch of one."""
    return torch.full((1, height, width), float(value), dtype=torch.float32, device=device)


def edge_ramp(size: int, start: int, end: int, *, divide_by_width: bool = True) -> Tensor:
    """Per-position factors along one axis: ``(i + 1) / start`` over the first ``start`` positions and
    ``(j + 1) / end`` over the last ``end`` (``j`` counted from that edge), multiplied where they overlap.
    Widths beyond ``size`` are cut to it; ``divide_by_width=False`` keeps dividing by the width asked for
    (LatentComposite's feather), instead of the cut one (FeatherMask)."""
    ramp = torch.ones(size, dtype=torch.float32)
    for width, at_start in ((start, True), (end, False)):
        n = min(width, size)
        if n <= 0:
            continue
        steps = torch.arange(1, n + 1, dtype=torch.float32) / (n if divide_by_width else width)
        if at_start:
            ramp[:n] *= steps
        else:
            ramp[size - n :] *= steps.flip(0)
    return ramp


def feather_edges(mask: Tensor, left: int, top: int, right: int, bottom: int) -> Tensor:
    """Fade a mask linearly to its picture's edges over the given widths (ComfyUI's FeatherMask: the
    outermost row or column keeps 1/width of its value)."""
    _, h, w = mask.shape
    ry = edge_ramp(h, top, bottom).to(mask.device)
    rx = edge_ramp(w, left, right).to(mask.device)
    return mask.float() * ry[:, None] * rx[None, :]


def feather_outward(mask: Tensor, pixels: int) -> Tensor:
    """A soft edge outside the mask: at chessboard distance ``d`` from it (``d`` <= ``pixels``) the value
    falls linearly, ``1 - d / (pixels + 1)``; inside, the mask is kept. Soft masks fade the same way from
    each value. Used to paste an inpainted region back without a seam."""
    out = mask.float()
    if pixels <= 0:
        return out
    grown = out
    for d in range(1, pixels + 1):
        grown = _step(grown, _SQUARE, grow=True)
        out = torch.maximum(out, grown * (1.0 - d / (pixels + 1)))
    return out


def grow_for_inpaint_encode(mask: Tensor, grow_mask_by: int) -> Tensor:
    """VAEEncodeForInpaint's noise mask: the rounded mask [B, 1, H, W] spread by a ``grow_mask_by``-wide
    box, as ComfyUI does: ``g - 1`` pixels in all, ceil((g - 1) / 2) down and right, the rest up and left;
    0 or 1."""
    m = mask.float().round()
    if grow_mask_by <= 0:
        return m
    h, w = m.shape[-2:]
    kernel = torch.ones((1, 1, grow_mask_by, grow_mask_by), dtype=m.dtype, device=m.device)
    pad = math.ceil((grow_mask_by - 1) / 2)
    spread = F.conv2d(m, kernel, padding=pad).clamp(0, 1)
    return spread[..., :h, :w].round()


def _fit_pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Two mask batches broadcast to one size (one of them may be a single mask)."""
    if a.shape[0] == b.shape[0]:
        return a, b
    if a.shape[0] == 1:
        return a.expand(b.shape[0], -1, -1), b
    if b.shape[0] == 1:
        return a, b.expand(a.shape[0], -1, -1)
    raise ValueError(f"mask batches of {a.shape[0]} and {b.shape[0]} do not combine")


def composite(destination: Tensor, source: Tensor, x: int, y: int, operation: MaskOperation) -> Tensor:
    """``source`` combined into ``destination`` with its top-left corner at (``x``, ``y``); the part of the
    source outside the destination is dropped; the result is clamped to 0..1. ``and``/``or``/``xor`` work
    on the rounded masks. ComfyUI's MaskComposite."""
    dest, src = _fit_pair(destination.float(), source.float().to(destination.device))
    out = dest.clone()
    h, w = dest.shape[-2:]
    x1, y1 = min(x + src.shape[-1], w), min(y + src.shape[-2], h)
    if x >= w or y >= h or x1 <= x or y1 <= y:
        return out.clamp(0.0, 1.0)
    d = dest[:, y:y1, x:x1]
    s = src[:, : y1 - y, : x1 - x]
    if operation == "multiply":
        r = d * s
    elif operation == "add":
        r = d + s
    elif operation == "subtract":
        r = d - s
    elif operation in ("and", "or", "xor"):
        db, sb = d.round().bool(), s.round().bool()
        r = (db & sb if operation == "and" else db | sb if operation == "or" else db ^ sb).float()
    else:
        raise ValueError(
            f"unknown mask operation {operation!r}; expected one of {', '.join(MASK_OPERATIONS)}"
        )
    out[:, y:y1, x:x1] = r
    return out.clamp(0.0, 1.0)


def bounding_box(mask: Tensor, above: float = 0.0) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), end exclusive, of the pixels above ``above`` in any mask of the batch; None when
    there are none."""
    hit = (mask > above).any(dim=0)
    rows = torch.nonzero(hit.any(dim=1)).flatten()
    cols = torch.nonzero(hit.any(dim=0)).flatten()
    if rows.numel() == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
