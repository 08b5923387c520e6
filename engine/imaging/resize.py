"""Resizing channels-first tensors (latents, masks as [B, 1, H, W]) the way ComfyUI's ``common_upscale``
does: optionally cropped around the centre to the target's aspect ratio first."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

Crop = Literal["disabled", "center"]


def center_crop_to_aspect(t: Tensor, height: int, width: int) -> Tensor:
    """The centre of ``t`` [..., H, W] with the aspect ratio width:height (rounded like ComfyUI)."""
    old_h, old_w = t.shape[-2:]
    old_aspect, new_aspect = old_w / old_h, width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
    return t[..., y : old_h - y, x : old_w - x]


def resize(t: Tensor, height: int, width: int, mode: str = "bilinear", crop: Crop = "disabled") -> Tensor:
    """``t`` [B, C, H, W] resized to ``height`` x ``width`` (plain interpolation, no antialiasing; float)."""
    if crop == "center":
        t = center_crop_to_aspect(t, height, width)
    if tuple(t.shape[-2:]) == (height, width):
        return t.float()
    return F.interpolate(t.float(), size=(height, width), mode=mode)


def resize_mask(mask: Tensor, height: int, width: int, mode: str = "bilinear") -> Tensor:
    """A MASK [B, H, W] resized to ``height`` x ``width`` (bilinear, as ComfyUI resizes masks)."""
    if tuple(mask.shape[-2:]) == (height, width):
        return mask.float()
    return F.interpolate(mask.float()[:, None], size=(height, width), mode=mode)[:, 0]


def resize_image(image: Tensor, height: int, width: int, mode: str = "bicubic") -> Tensor:
    """An IMAGE [B, H, W, C] resized to ``height`` x ``width`` (antialiased when shrinking), clamped to
    0..1."""
    if tuple(image.shape[1:3]) == (height, width):
        return image.float()
    x = image.float().movedim(-1, 1)
    kwargs = {"align_corners": False, "antialias": True} if mode in ("bilinear", "bicubic") else {}
    x = F.interpolate(x, size=(height, width), mode=mode, **kwargs)
    return x.clamp(0.0, 1.0).movedim(1, -1)
