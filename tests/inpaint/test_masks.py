"""Mask nodes against references computed another way: PIL's rank filters, brute-force numpy loops and
hand-computed values from ComfyUI's documented semantics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from atelier.engine.imaging import masks as M
from atelier.engine.imaging.checks import InputError
from atelier.nodes.mask import (
    FeatherMask,
    GrowMask,
    ImageToMask,
    InvertMask,
    MaskComposite,
    MaskToImage,
    SolidMask,
    ThresholdMask,
)
from tests.inpaint.helpers import grid, random_mask


def _pil_rank(mask: np.ndarray, grow: bool, steps: int) -> np.ndarray:
    im = Image.fromarray(mask.astype(np.float32), mode="F")
    for _ in range(steps):
        im = im.filter(ImageFilter.MaxFilter(3) if grow else ImageFilter.MinFilter(3))
    return np.asarray(im)


def _cross_loops(mask: np.ndarray, grow: bool) -> np.ndarray:
    """One step over the 4-neighbourhood, pixel by pixel, the border repeating the edge."""
    h, w = mask.shape
    out = np.empty_like(mask)
    for i in range(h):
        for j in range(w):
            vals = [
                mask[min(max(i + di, 0), h - 1), min(max(j + dj, 0), w - 1)]
                for di, dj in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))
            ]
            out[i, j] = max(vals) if grow else min(vals)
    return out


@pytest.mark.parametrize("expand", [1, 3, -1, -2])
def test_grow_mask_square_matches_pil_rank_filters(ctx, expand: int) -> None:
    m = random_mask(9, 11, seed=expand + 10)
    if expand < 0:
        m = 1.0 - m  # erode something mostly full
    out = GrowMask().run(ctx, mask=m, expand=expand, tapered_corners=False)
    ref = _pil_rank(m[0].numpy(), grow=expand > 0, steps=abs(expand))
    assert out.shape == (1, 9, 11)
    np.testing.assert_allclose(out[0].numpy(), ref, atol=1e-7)


@pytest.mark.parametrize("expand", [2, -2])
def test_grow_mask_tapered_matches_a_pixel_loop(ctx, expand: int) -> None:
    m = random_mask(8, 7, seed=3)
    if expand < 0:
        m = 1.0 - m
    ref = m[0].numpy()
    for _ in range(abs(expand)):
        ref = _cross_loops(ref, grow=expand > 0)
    out = GrowMask().run(ctx, mask=m, expand=expand, tapered_corners=True)
    np.testing.assert_allclose(out[0].numpy(), ref, atol=1e-7)


def test_grow_mask_tapered_corners_round_a_point(ctx) -> None:
    point = torch.zeros(1, 5, 5)
    point[0, 2, 2] = 1.0
    tapered = GrowMask().run(ctx, mask=point, expand=2, tapered_corners=True)[0]
    square = GrowMask().run(ctx, mask=point, expand=2, tapered_corners=False)[0]
    diamond = torch.tensor([[abs(i - 2) + abs(j - 2) <= 2 for j in range(5)] for i in range(5)]).float()
    assert torch.equal(tapered, diamond)
    assert torch.equal(square, torch.ones(5, 5))


def test_grow_mask_keeps_batches_apart(ctx) -> None:
    a, b = random_mask(6, 6, seed=1), random_mask(6, 6, seed=2)
    both = GrowMask().run(ctx, mask=torch.cat([a, b]), expand=1, tapered_corners=True)
    assert torch.equal(both[1:], GrowMask().run(ctx, mask=b, expand=1, tapered_corners=True))
    assert GrowMask().run(ctx, mask=a[0], expand=0, tapered_corners=True).shape == (1, 6, 6)  # [H, W] in


def test_invert_and_threshold(ctx) -> None:
    m = grid([0.0, 0.25, 0.5], [0.75, 1.0, 0.5001])
    assert torch.allclose(InvertMask().run(ctx, mask=m), grid([1.0, 0.75, 0.5], [0.25, 0.0, 1 - 0.5001]))
    assert torch.equal(ThresholdMask().run(ctx, mask=m, value=0.5), grid([0, 0, 0], [1, 1, 1]))
    assert torch.equal(ThresholdMask().run(ctx, mask=m, value=0.0), grid([0, 1, 1], [1, 1, 1]))


def test_feather_mask_ramps_are_comfyuis() -> None:
    ones = torch.ones(1, 2, 6)
    out = FeatherMask().run(None, mask=ones, left=2, top=0, right=3, bottom=1)  # type: ignore[arg-type]
    row = [1 / 2, 1.0, 1.0, 1.0, 2 / 3, 1 / 3]
    assert torch.allclose(out, torch.tensor([[row, row]]) * torch.tensor([[[1.0], [1.0]]]))
    # bottom = 1: the last row keeps 1/1 of its value; bottom = 2: the last row is halved
    out = FeatherMask().run(None, mask=ones, left=0, top=0, right=0, bottom=2)  # type: ignore[arg-type]
    assert torch.allclose(out[0, :, 0], torch.tensor([1.0, 0.5]))
    # overlapping ramps multiply; widths beyond the mask are cut to it
    narrow = FeatherMask().run(None, mask=torch.ones(1, 1, 3), left=2, top=0, right=2, bottom=0)  # type: ignore[arg-type]
    assert torch.allclose(narrow[0, 0], torch.tensor([0.5, 1.0, 0.5]))
    wide = FeatherMask().run(None, mask=torch.ones(1, 1, 4), left=10, top=0, right=0, bottom=0)  # type: ignore[arg-type]
    assert torch.allclose(wide[0, 0], torch.tensor([0.25, 0.5, 0.75, 1.0]))


def test_solid_mask(ctx) -> None:
    out = SolidMask().run(ctx, value=0.3, width=5, height=2)
    assert out.shape == (1, 2, 5) and torch.allclose(out, torch.full((1, 2, 5), 0.3))


def _composite_loops(dest: np.ndarray, src: np.ndarray, x: int, y: int, op: str) -> np.ndarray:
    out = dest.copy()
    h, w = dest.shape
    for i in range(src.shape[0]):
        for j in range(src.shape[1]):
            if y + i >= h or x + j >= w:
                continue
            d, s = dest[y + i, x + j], src[i, j]
            db, sb = round(d) >= 1, round(s) >= 1
            out[y + i, x + j] = {
                "multiply": d * s,
                "add": d + s,
                "subtract": d - s,
                "and": float(db and sb),
                "or": float(db or sb),
                "xor": float(db != sb),
            }[op]
    return np.clip(out, 0.0, 1.0)


@pytest.mark.parametrize("op", M.MASK_OPERATIONS)
@pytest.mark.parametrize("at", [(0, 0), (3, 2), (6, 5)])
def test_mask_composite_matches_a_pixel_loop(ctx, op: str, at: tuple[int, int]) -> None:
    dest, src = random_mask(6, 8, seed=4), random_mask(3, 4, seed=5)
    out = MaskComposite().run(ctx, destination=dest, source=src, x=at[0], y=at[1], operation=op)
    ref = _composite_loops(dest[0].numpy(), src[0].numpy(), at[0], at[1], op)
    np.testing.assert_allclose(out[0].numpy(), ref, atol=1e-6)


def test_mask_composite_outside_leaves_destination_and_batches_broadcast(ctx) -> None:
    dest = random_mask(4, 4, seed=6)
    assert torch.equal(
        MaskComposite().run(ctx, destination=dest, source=dest, x=9, y=0, operation="add"), dest
    )
    two = torch.cat([dest, 1 - dest])
    out = MaskComposite().run(ctx, destination=two, source=grid([1.0]), x=1, y=1, operation="multiply")
    assert out.shape == (2, 4, 4) and torch.equal(out, two)
    with pytest.raises(InputError, match=r"MaskComposite: input 'source' has a batch of 3"):
        MaskComposite().run(ctx, destination=two, source=torch.zeros(3, 2, 2), x=0, y=0, operation="add")


def test_image_to_mask_and_back(ctx) -> None:
    g = torch.Generator().manual_seed(0)
    rgba = torch.rand(2, 3, 4, 4, generator=g)
    for n, channel in enumerate(("red", "green", "blue", "alpha")):
        assert torch.equal(ImageToMask().run(ctx, image=rgba, channel=channel), rgba[..., n])
    with pytest.raises(InputError, match=r"ImageToMask: input 'image' has 3 channels: there is no alpha"):
        ImageToMask().run(ctx, image=rgba[..., :3], channel="alpha")
    m = rgba[..., 0]
    img = MaskToImage().run(ctx, mask=m)
    assert img.shape == (2, 3, 4, 3) and all(torch.equal(img[..., c], m) for c in range(3))


def _chessboard_distance(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    d = np.full((h, w), np.inf)
    for i in range(h):
        for j in range(w):
            d[i, j] = np.min(np.maximum(np.abs(ys - i), np.abs(xs - j)))
    return d


def test_feather_outward_is_a_linear_ramp_of_chessboard_distance() -> None:
    m = torch.zeros(1, 12, 13)
    m[0, 4:6, 3:8] = 1.0
    m[0, 9, 11] = 1.0
    d = _chessboard_distance(m[0].numpy())
    for pixels in (0, 1, 3):
        ref = np.clip(1.0 - d / (pixels + 1), 0.0, 1.0)
        np.testing.assert_allclose(M.feather_outward(m, pixels)[0].numpy(), ref, atol=1e-6)


def test_grow_for_inpaint_encode_is_comfyuis_box() -> None:
    m = random_mask(10, 9, seed=8, soft=False)
    h, w = m.shape[-2:]
    for g in (1, 2, 5, 6):
        pad = -(-(g - 1) // 2)
        ref = np.zeros((h, w), np.float32)
        src = m[0].numpy()
        for i in range(h):
            for j in range(w):
                window = src[max(0, i - pad) : max(0, i - pad + g), max(0, j - pad) : max(0, j - pad + g)]
                ref[i, j] = float(window.size > 0 and window.max() > 0)
        out = M.grow_for_inpaint_encode(m[:, None], g)
        np.testing.assert_array_equal(out[0, 0].numpy(), ref, err_msg=f"grow_mask_by={g}")
    assert torch.equal(M.grow_for_inpaint_encode(m[:, None], 0), m[:, None])


def test_bounding_box() -> None:
    assert M.bounding_box(torch.zeros(2, 4, 4)) is None
    m = torch.zeros(2, 6, 7)
    m[0, 1, 2] = 0.2
    m[1, 4, 5] = 1.0
    assert M.bounding_box(m) == (2, 1, 6, 5)
