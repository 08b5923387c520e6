"""Cropping face regions out of an IMAGE batch and pasting them back through a mask.

Pure functions of tensors. Pasting changes only the pixels of the crop region whose mask is above 0:
``out = image * (1 - m) + crop * m``, which leaves a pixel with ``m == 0`` bit for bit as it was.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .detections import Region


def crop(image: Tensor, index: int, region: Region) -> Tensor:
    """``[1, h, w, C]``: ``region`` of image ``index`` of the batch ``[B, H, W, C]``."""
    x0, y0, x1, y1 = region
    return image[index : index + 1, y0:y1, x0:x1]


def resize_image(image: Tensor, width: int, height: int) -> Tensor:
    """IMAGE ``[B, h, w, C]`` resized to ``height`` x ``width`` (bicubic with antialiasing, clamped)."""
    if image.shape[1] == height and image.shape[2] == width:
        return image
    x = image.movedim(-1, 1).float()
    x = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    return x.clamp(0, 1).movedim(1, -1).to(image.dtype)


def paste(image: Tensor, index: int, region: Region, patch: Tensor, mask: Tensor) -> Tensor:
    """A copy of ``image`` [B,H,W,C] with ``patch`` [1 or none, h, w, C] blended into ``region`` of image
    ``index`` through ``mask`` [h, w] (1: the patch, 0: the image unchanged)."""
    out = image.clone()
    paste_(out, index, region, patch, mask)
    return out


def paste_(image: Tensor, index: int, region: Region, patch: Tensor, mask: Tensor) -> None:
    """In-place :func:`paste` (for a batch of pastes onto one fresh copy)."""
    x0, y0, x1, y1 = region
    p = patch.reshape(y1 - y0, x1 - x0, -1).to(image.device, image.dtype)
    m = mask.to(image.device, image.dtype)[..., None]
    if p.shape[:2] != m.shape[:2]:
        raise ValueError(f"patch {tuple(p.shape[:2])} and mask {tuple(m.shape[:2])} differ in size")
    view = image[index, y0:y1, x0:x1]
    blended = torch.where(m > 0, view * (1 - m) + p[..., : view.shape[-1]] * m, view)
    view.copy_(blended)
