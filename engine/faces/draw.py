"""Drawing detections onto an IMAGE batch for preview: box outlines, crop regions, landmarks.

Pure tensor functions (the drawing stays on the image's device).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .detections import Faces

BOX_COLOR = (1.0, 0.2, 0.2)
CROP_COLOR = (0.25, 0.6, 1.0)
LANDMARK_COLOR = (0.2, 1.0, 0.3)


def draw_rect(
    image: Tensor,
    index: int,
    rect: tuple[float, float, float, float],
    color: tuple[float, ...],
    thickness: int,
) -> None:
    """Outline ``rect`` (x0, y0, x1, y1) on image ``index`` of ``image`` [B,H,W,C], in place; lines are
    drawn inside the rectangle and clipped to the image."""
    _, h, w, c = image.shape
    x0 = max(0, min(w, math.floor(rect[0])))
    y0 = max(0, min(h, math.floor(rect[1])))
    x1 = max(0, min(w, math.ceil(rect[2])))
    y1 = max(0, min(h, math.ceil(rect[3])))
    if x1 <= x0 or y1 <= y0:
        return
    t = max(1, thickness)
    col = torch.tensor(color[:c], dtype=image.dtype, device=image.device)
    img = image[index]
    img[y0 : min(y1, y0 + t), x0:x1] = col
    img[max(y0, y1 - t) : y1, x0:x1] = col
    img[y0:y1, x0 : min(x1, x0 + t)] = col
    img[y0:y1, max(x0, x1 - t) : x1] = col


def draw_point(image: Tensor, index: int, x: float, y: float, color: tuple[float, ...], radius: int) -> None:
    """A filled square of ``2 * radius + 1`` pixels centred on (x, y), in place, clipped to the image."""
    _, h, w, c = image.shape
    cx, cy = math.floor(x), math.floor(y)
    x0, x1 = max(0, cx - radius), min(w, cx + radius + 1)
    y0, y1 = max(0, cy - radius), min(h, cy + radius + 1)
    if x1 > x0 and y1 > y0:
        image[index, y0:y1, x0:x1] = torch.tensor(color[:c], dtype=image.dtype, device=image.device)


def draw_faces(image: Tensor, faces: Faces, *, thickness: int = 0, show_crop: bool = True) -> Tensor:
    """A copy of ``image`` with each face's box (red), crop region (blue) and landmarks (green) drawn;
    ``thickness`` 0 picks one from the image size."""
    faces.check_image(image)
    out = image.clone()
    t = thickness or max(1, round(min(faces.width, faces.height) / 256))
    for d in faces:
        if show_crop:
            draw_rect(out, d.image_index, tuple(float(v) for v in d.crop), CROP_COLOR, t)  # type: ignore[arg-type]
        draw_rect(out, d.image_index, d.box, BOX_COLOR, t)
        for px, py in d.landmarks:
            draw_point(out, d.image_index, px, py, LANDMARK_COLOR, t)
    return out
