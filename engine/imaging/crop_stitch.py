"""Crop and stitch: inpaint only around the mask, at a working resolution, and paste the result back.

The mask's bounding box, grown by the paste-back feather and a context margin, is cut out of the picture
and resized so that its longer side is the working size (sides multiples of the VAE's cell); after
sampling, the result is resized back and pasted through the feathered mask. Pixels outside the box are
never touched, nor are those inside it where the feathered mask is 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .masks import bounding_box, feather_outward
from .resize import resize_image, resize_mask


@dataclass(frozen=True)
class CropPlan:
    """Where to cut (``x0, y0, x1, y1`` in the picture, end exclusive), the working size the cut is
    sampled at, and the paste-back weights over the cut ([B, h, w], 0..1)."""

    x0: int
    y0: int
    x1: int
    y1: int
    work_width: int
    work_height: int
    blend: Tensor

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


def _snap(side: float, multiple: int) -> int:
    return max(multiple, int(round(side / multiple)) * multiple)


def plan_crop(
    mask: Tensor, context: int, feather: int, working_size: int, multiple: int = 8
) -> CropPlan | None:
    """The crop for inpainting ``mask`` [B, H, W]: the box around the mask feathered by ``feather``
    pixels, grown by ``context`` pixels on each side within the picture; the working size scales its
    longer side to ``working_size`` (0: the box's own size), each side rounded to ``multiple``. None when
    the mask is empty."""
    blend = feather_outward(mask, feather)
    box = bounding_box(blend)
    if box is None:
        return None
    h, w = mask.shape[-2:]
    x0, y0 = max(0, box[0] - context), max(0, box[1] - context)
    x1, y1 = min(w, box[2] + context), min(h, box[3] + context)
    bw, bh = x1 - x0, y1 - y0
    scale = working_size / max(bw, bh) if working_size > 0 else 1.0
    return CropPlan(
        x0, y0, x1, y1, _snap(bw * scale, multiple), _snap(bh * scale, multiple), blend[:, y0:y1, x0:x1]
    )


def crop_for_inpaint(image: Tensor, mask: Tensor, plan: CropPlan) -> tuple[Tensor, Tensor]:
    """The cut of ``image`` [B, H, W, C] and ``mask`` [B, H, W] at the working size."""
    region = image[:, plan.y0 : plan.y1, plan.x0 : plan.x1]
    m = mask[:, plan.y0 : plan.y1, plan.x0 : plan.x1]
    return (
        resize_image(region, plan.work_height, plan.work_width),
        resize_mask(m, plan.work_height, plan.work_width).clamp(0.0, 1.0),
    )


def stitch(image: Tensor, inpainted: Tensor, plan: CropPlan) -> Tensor:
    """``inpainted`` (the cut after sampling, any size) resized back and pasted into ``image`` through the
    plan's feathered mask. A new tensor; outside the box, ``image``'s values exactly."""
    out = image.float().clone()
    back = resize_image(inpainted.to(out.device), plan.height, plan.width)
    c = out.shape[-1]
    if back.shape[-1] < c:  # an RGB result into an RGBA picture keeps the picture's alpha
        back = torch.cat([back, out[:, plan.y0 : plan.y1, plan.x0 : plan.x1, back.shape[-1] :]], dim=-1)
    back = back[..., :c]
    region = out[:, plan.y0 : plan.y1, plan.x0 : plan.x1]
    weight = plan.blend.to(out.device)[..., None]
    out[:, plan.y0 : plan.y1, plan.x0 : plan.x1] = back * weight + region * (1.0 - weight)
    return out
