"""Box math for detections: non-maximum suppression, growing a box, the crop region around a face.

Boxes are ``(x0, y0, x1, y1)`` in pixels; tensors of boxes are ``[N, 4]``. Pure functions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .detections import Box, Region


def iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of every box of ``a`` [N,4] with every box of ``b`` [M,4]: [N, M]."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp_min(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp_min(0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / union.clamp_min(1e-12)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression: indices of the boxes kept, best score first. A box is dropped
    when it overlaps a better kept one by more than ``iou_threshold``."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    overlaps = iou(boxes[order], boxes[order])
    keep: list[int] = []
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    over = (overlaps > iou_threshold).cpu()  # a few boxes: the greedy loop reads it on the host
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= over[i]
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


def grow_box(box: Box, pixels: float) -> Box:
    """``box`` grown by ``pixels`` on every side (negative shrinks it, never past its centre)."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hw = max(0.0, (x1 - x0) / 2 + pixels)
    hh = max(0.0, (y1 - y0) / 2 + pixels)
    return (cx - hw, cy - hh, cx + hw, cy + hh)


def _span(center: float, size: float, limit: int) -> tuple[int, int]:
    """A whole-pixel span of ``size`` around ``center``, shifted (not shrunk) to fit in 0..limit."""
    size_px = max(1, min(limit, math.ceil(size - 1e-6)))
    start = math.floor(center - size_px / 2 + 0.5)
    start = min(max(start, 0), limit - size_px)
    return start, start + size_px


def crop_region(box: Box, crop_factor: float, width: int, height: int) -> Region:
    """The region a detail pass works on: ``box`` scaled by ``crop_factor`` about its centre, in whole
    pixels, shifted to stay inside the ``width`` x ``height`` image (and cut only where it is larger)."""
    if crop_factor < 1.0:
        raise ValueError(f"crop factor {crop_factor} is below 1 (the region must hold the face)")
    x0, y0, x1, y1 = box
    sx, ex = _span((x0 + x1) / 2, (x1 - x0) * crop_factor, width)
    sy, ey = _span((y0 + y1) / 2, (y1 - y0) * crop_factor, height)
    return (sx, sy, ex, ey)


def region_to_aspect(region: Region, aspect: float, width: int, height: int) -> Region:
    """``region`` grown along one side to the aspect ratio ``aspect`` (width / height), kept inside the
    image; where the image is too small for that, as close as it allows."""
    x0, y0, x1, y1 = region
    w, h = x1 - x0, y1 - y0
    if w / h < aspect:
        sx, ex = _span((x0 + x1) / 2, h * aspect, width)
        return (sx, y0, ex, y1)
    sy, ey = _span((y0 + y1) / 2, w / aspect, height)
    return (x0, sy, x1, ey)
