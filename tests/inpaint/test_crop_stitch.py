"""Crop and stitch: the crop geometry by hand, exact paste-back, and the one-node inpaint on a live tiny
inpainting model leaving every pixel outside the mask's padded box identical."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atelier.engine.imaging.crop_stitch import CropPlan, crop_for_inpaint, plan_crop, stitch
from atelier.engine.imaging.masks import feather_outward
from atelier.engine.models.handles import load_checkpoint_handles
from atelier.engine.sampling.conditioning import CondEntry
from atelier.nodes.inpaint import InpaintCropAndStitch


def _box_mask(h: int, w: int, x0: int, y0: int, x1: int, y1: int) -> torch.Tensor:
    m = torch.zeros(1, h, w)
    m[:, y0:y1, x0:x1] = 1.0
    return m


def test_the_crop_is_the_feathered_box_plus_context_scaled_to_the_working_size() -> None:
    plan = plan_crop(_box_mask(40, 60, 20, 10, 30, 16), context=4, feather=2, working_size=64)
    assert plan is not None
    # box (20, 10)-(30, 16) feathered by 2 -> (18, 8)-(32, 18), plus 4 -> (14, 4)-(36, 22): 22 x 18 pixels;
    # the longer side 22 -> 64, the other 18 * 64 / 22 = 52.4 -> 56 (multiples of 8)
    assert (plan.x0, plan.y0, plan.x1, plan.y1, plan.work_width, plan.work_height) == (14, 4, 36, 22, 64, 56)
    assert plan.blend.shape == (1, 18, 22)
    # at the picture's edge the box is cut; working size 0 keeps the box's size, rounded to 8
    edge = plan_crop(_box_mask(40, 60, 0, 30, 5, 40), context=10, feather=0, working_size=0)
    assert edge is not None and (edge.x0, edge.y0, edge.x1, edge.y1) == (0, 20, 15, 40)
    assert (edge.work_width, edge.work_height) == (16, 16)
    assert plan_crop(torch.zeros(1, 8, 8), 4, 2, 64) is None


def test_stitch_is_exact_outside_the_feathered_mask() -> None:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 30, 40, 3, generator=g)
    mask = _box_mask(30, 40, 10, 8, 20, 14)
    plan = plan_crop(mask, context=3, feather=2, working_size=0)
    assert plan is not None
    new = torch.rand(2, plan.height, plan.width, 3, generator=g)  # at the box's own size: no resampling
    out = stitch(image, new, plan)
    weight = torch.zeros(1, 30, 40)
    weight[:, plan.y0 : plan.y1, plan.x0 : plan.x1] = plan.blend
    assert torch.equal(out[weight.expand(2, -1, -1) == 0], image[weight.expand(2, -1, -1) == 0])
    assert torch.equal(out[:, 8:14, 10:20], new[:, 8 - plan.y0 : 14 - plan.y0, 10 - plan.x0 : 20 - plan.x0])
    ring = (weight[0] > 0) & (weight[0] < 1)
    new_full = image.clone()
    new_full[:, plan.y0 : plan.y1, plan.x0 : plan.x1] = new
    expected = new_full * weight[..., None] + image * (1 - weight[..., None])
    assert ring.any() and torch.allclose(out[:, ring], expected[:, ring])
    assert torch.equal(feather_outward(mask, 2)[:, plan.y0 : plan.y1, plan.x0 : plan.x1], plan.blend)


def test_crop_for_inpaint_resizes_the_cut() -> None:
    image, mask = torch.rand(1, 20, 30, 3), _box_mask(20, 30, 5, 5, 10, 10)
    plan = CropPlan(4, 2, 16, 18, 24, 32, torch.ones(1, 16, 12))
    crop, m = crop_for_inpaint(image, mask, plan)
    assert crop.shape == (1, 32, 24, 3) and m.shape == (1, 32, 24)


@pytest.mark.parametrize("name", ["tiny15-inpaint.safetensors", "tiny15.safetensors"])
def test_inpaint_crop_and_stitch_touches_only_the_padded_box(
    engine, models_root: Path, ctx, name: str
) -> None:
    model, clip, vae = load_checkpoint_handles(engine.models, models_root / "checkpoints" / name)
    entry = CondEntry(clip.encode("a face")[0])
    image = torch.rand(1, 96, 128, 3, generator=torch.Generator().manual_seed(1))
    mask = _box_mask(96, 128, 70, 30, 90, 52)
    kw = dict(
        model=model,
        positive=[entry],
        negative=[entry],
        vae=vae,
        image=image,
        seed=2,
        steps=2,
        cfg=3.0,
        sampler_name="euler",
        scheduler="normal",
        denoise=1.0,
        context_expand_pixels=8,
        blend_pixels=4,
        working_size=64,
    )
    out = InpaintCropAndStitch().run(ctx, mask=mask, **kw)
    assert out.shape == image.shape
    plan = plan_crop(mask, 8, 4, 64)
    assert plan is not None and (plan.x0, plan.y0, plan.x1, plan.y1) == (58, 18, 102, 64)
    outside = torch.ones(96, 128, dtype=torch.bool)
    outside[plan.y0 : plan.y1, plan.x0 : plan.x1] = False
    assert torch.equal(out[:, outside], image[:, outside])  # exactly, not approximately
    inner = plan.blend[0] == 0
    assert torch.equal(
        out[:, plan.y0 : plan.y1, plan.x0 : plan.x1][:, inner],
        image[:, plan.y0 : plan.y1, plan.x0 : plan.x1][:, inner],
    )
    assert (out[:, 30:52, 70:90] - image[:, 30:52, 70:90]).abs().mean() > 0.01  # the mask is repainted
    empty = InpaintCropAndStitch().run(ctx, mask=torch.zeros(1, 96, 128), **kw)
    assert torch.equal(empty, image)
