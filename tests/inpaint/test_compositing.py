"""Compositing nodes against pixel loops, hand-computed values and ComfyUI's documented semantics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atelier.engine.imaging.checks import InputError
from atelier.engine.sampling.ksampler import prepare_noise
from atelier.nodes.compositing import (
    ImageCompositeMasked,
    ImageCrop,
    ImagePadForOutpaint,
    JoinImageWithAlpha,
    LatentBlend,
    LatentComposite,
    LatentCompositeMasked,
    LatentFromBatch,
    RepeatLatentBatch,
)
from tests.inpaint.helpers import random_mask


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _paste_loops(dest: np.ndarray, src: np.ndarray, x: int, y: int, mask: np.ndarray | None) -> np.ndarray:
    """[H, W, C] pictures, mask at the source's size."""
    out = dest.copy()
    for i in range(src.shape[0]):
        for j in range(src.shape[1]):
            if y + i < dest.shape[0] and x + j < dest.shape[1]:
                m = 1.0 if mask is None else mask[i, j]
                out[y + i, x + j] = m * src[i, j] + (1 - m) * dest[y + i, x + j]
    return out


@pytest.mark.parametrize("at", [(0, 0), (2, 3), (6, 1)])
def test_image_composite_masked_matches_a_pixel_loop(ctx, at: tuple[int, int]) -> None:
    dest, src = _rand(1, 6, 8, 3, seed=1), _rand(1, 4, 5, 3, seed=2)
    mask = random_mask(4, 5, seed=3)
    out = ImageCompositeMasked().run(
        ctx, destination=dest, source=src, x=at[0], y=at[1], resize_source=False, mask=mask
    )
    ref = _paste_loops(dest[0].numpy(), src[0].numpy(), *at, mask[0].numpy())
    np.testing.assert_allclose(out[0].numpy(), ref, atol=1e-6)
    plain = ImageCompositeMasked().run(
        ctx, destination=dest, source=src, x=at[0], y=at[1], resize_source=False
    )
    np.testing.assert_allclose(plain[0].numpy(), _paste_loops(dest[0].numpy(), src[0].numpy(), *at, None))
    assert torch.equal(dest, _rand(1, 6, 8, 3, seed=1))  # the input is not modified


def test_image_composite_masked_resizes_mask_and_source(ctx) -> None:
    dest, src = _rand(2, 4, 4, 3, seed=4), torch.full((1, 2, 2, 3), 0.25)
    # a mask at twice the source's size, constant over 2x2 blocks: bilinear halving gives the block values
    blocks = torch.tensor([[[1.0, 0.0], [0.5, 1.0]]])
    big = blocks.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    out = ImageCompositeMasked().run(
        ctx, destination=dest, source=src, x=1, y=2, resize_source=False, mask=big
    )
    ref = _paste_loops(dest[1].numpy(), src[0].numpy(), 1, 2, blocks[0].numpy())
    np.testing.assert_allclose(out[1].numpy(), ref, atol=1e-6)  # source repeated to the batch
    resized = ImageCompositeMasked().run(ctx, destination=dest, source=src, x=0, y=0, resize_source=True)
    assert torch.allclose(resized, torch.full_like(dest, 0.25))


def test_image_composite_masked_alpha_and_bad_masks(ctx) -> None:
    dest = torch.cat([_rand(1, 3, 3, 3, seed=5), torch.zeros(1, 3, 3, 1)], dim=-1)  # RGBA, transparent
    out = ImageCompositeMasked().run(
        ctx, destination=dest, source=_rand(1, 1, 1, 3), x=1, y=1, resize_source=False
    )
    assert out.shape == (1, 3, 3, 4) and out[0, 1, 1, 3] == 1.0 and out[0, 0, 0, 3] == 0.0
    with pytest.raises(
        InputError, match=r"ImageCompositeMasked: input 'mask' has a batch of 3 but 'destination' has 2"
    ):
        ImageCompositeMasked().run(
            ctx,
            destination=_rand(2, 3, 3, 3),
            source=dest[..., :3],
            x=0,
            y=0,
            resize_source=False,
            mask=torch.ones(3, 3, 3),
        )
    with pytest.raises(InputError, match=r"ImageCompositeMasked: input 'source' has 5 channels"):
        ImageCompositeMasked().run(
            ctx, destination=dest, source=torch.ones(1, 2, 2, 5), x=0, y=0, resize_source=False
        )


def test_join_image_with_alpha(ctx) -> None:
    img, alpha = _rand(3, 4, 5, 3, seed=6), random_mask(4, 5, seed=7).repeat(2, 1, 1)
    out = JoinImageWithAlpha().run(ctx, image=img, alpha=alpha)
    assert out.shape == (2, 4, 5, 4)  # the shorter batch
    assert torch.equal(out[..., :3], img[:2]) and torch.allclose(out[..., 3], 1.0 - alpha)


def _outpaint_loops(image: torch.Tensor, left: int, top: int, right: int, bottom: int, feathering: int):
    """ComfyUI's documented loop, transcribed pixel by pixel."""
    _, d2, d3, _ = image.shape
    new = np.full((1, d2 + top + bottom, d3 + left + right, 3), 0.5, np.float32)
    new[:, top : top + d2, left : left + d3] = image.numpy()
    mask = np.ones((d2 + top + bottom, d3 + left + right), np.float32)
    t = np.zeros((d2, d3), np.float32)
    if feathering > 0 and feathering * 2 < d2 and feathering * 2 < d3:
        for i in range(d2):
            for j in range(d3):
                dt = i if top != 0 else d2
                db = d2 - i if bottom != 0 else d2
                dl = j if left != 0 else d3
                dr = d3 - j if right != 0 else d3
                d = min(dt, db, dl, dr)
                if d >= feathering:
                    continue
                v = (feathering - d) / feathering
                t[i, j] = v * v
    mask[top : top + d2, left : left + d3] = t
    return new, mask[None]


@pytest.mark.parametrize(
    "pads", [(8, 0, 16, 0, 3), (0, 8, 0, 8, 2), (8, 8, 8, 8, 0), (16, 0, 0, 0, 5), (8, 0, 8, 0, 6)]
)
def test_image_pad_for_outpaint_matches_comfyuis_loop(ctx, pads: tuple[int, int, int, int, int]) -> None:
    img = _rand(1, 11, 12, 3, seed=8)
    out, mask = ImagePadForOutpaint().run(
        ctx, image=img, left=pads[0], top=pads[1], right=pads[2], bottom=pads[3], feathering=pads[4]
    )
    ref_img, ref_mask = _outpaint_loops(img, *pads)
    np.testing.assert_allclose(out.numpy(), ref_img)
    np.testing.assert_allclose(mask.numpy(), ref_mask, atol=1e-6)


def test_image_crop_is_comfyuis(ctx) -> None:
    img = _rand(2, 6, 7, 3, seed=9)
    assert torch.equal(ImageCrop().run(ctx, image=img, width=3, height=2, x=1, y=4), img[:, 4:6, 1:4])
    assert torch.equal(ImageCrop().run(ctx, image=img, width=5, height=5, x=20, y=20), img[:, 5:, 6:])


def _latent(samples: torch.Tensor, **extra) -> dict:
    return {"samples": samples, **extra}


def test_latent_composite_feather_by_hand(ctx) -> None:
    to, src = torch.zeros(1, 1, 6, 6), torch.ones(1, 1, 3, 4)
    out = LatentComposite().run(ctx, samples_to=_latent(to), samples_from=_latent(src), x=8, y=8, feather=16)
    ry, rx = torch.tensor([0.5, 1.0, 0.5]), torch.tensor([0.5, 1.0, 1.0, 0.5])
    expected = torch.zeros(6, 6)
    expected[1:4, 1:5] = ry[:, None] * rx[None, :]
    assert torch.allclose(out["samples"][0, 0], expected)
    # at the corner the sides on the picture's edge are not feathered; no feather pastes as it is
    corner = LatentComposite().run(
        ctx, samples_to=_latent(to), samples_from=_latent(src), x=0, y=0, feather=16
    )
    assert torch.allclose(
        corner["samples"][0, 0, :3, :4],
        torch.tensor([1.0, 1.0, 0.5])[:, None] * torch.tensor([1.0, 1.0, 1.0, 0.5]),
    )
    hard = LatentComposite().run(
        ctx, samples_to=_latent(to), samples_from=_latent(src), x=32, y=24, feather=0
    )
    expected = torch.zeros(6, 6)
    expected[3:6, 4:6] = 1.0  # cut at the edges
    assert torch.equal(hard["samples"][0, 0], expected)


def test_latent_composite_masked_matches_a_pixel_loop(ctx) -> None:
    dest, src = _rand(1, 4, 6, 7, seed=10), _rand(1, 4, 3, 3, seed=11)
    mask = random_mask(3, 3, seed=12)
    out = LatentCompositeMasked().run(
        ctx,
        destination=_latent(dest, noise_mask=torch.ones(1, 1, 48, 56)),
        source=_latent(src),
        x=16,
        y=24,
        resize_source=False,
        mask=mask,
    )
    ref = _paste_loops(
        dest[0].permute(1, 2, 0).numpy(), src[0].permute(1, 2, 0).numpy(), 2, 3, mask[0].numpy()
    )
    np.testing.assert_allclose(out["samples"][0].permute(1, 2, 0).numpy(), ref, atol=1e-6)
    assert "noise_mask" in out  # the destination's other entries are kept
    with pytest.raises(InputError, match=r"LatentCompositeMasked: input 'source' has 16 latent channels"):
        LatentCompositeMasked().run(
            ctx,
            destination=_latent(dest),
            source=_latent(torch.zeros(1, 16, 2, 2)),
            x=0,
            y=0,
            resize_source=False,
        )


def test_latent_blend(ctx) -> None:
    a, b = _rand(2, 4, 4, 4, seed=13), _rand(2, 4, 4, 4, seed=14)
    out = LatentBlend().run(ctx, samples1=_latent(a), samples2=_latent(b), blend_factor=0.3)
    assert torch.allclose(out["samples"], a * 0.3 + b * 0.7)
    small = torch.full((1, 4, 2, 2), 2.0)  # resized and repeated to samples1
    out = LatentBlend().run(ctx, samples1=_latent(a), samples2=_latent(small), blend_factor=0.5)
    assert torch.allclose(out["samples"], a * 0.5 + 1.0)


def test_repeat_and_pick_from_batches(ctx) -> None:
    s = _rand(3, 4, 2, 2, seed=15)
    masks = torch.rand(3, 1, 16, 16)
    rep = RepeatLatentBatch().run(ctx, samples=_latent(s, noise_mask=masks), amount=2)
    assert torch.equal(rep["samples"], torch.cat([s, s])) and torch.equal(
        rep["noise_mask"], torch.cat([masks, masks])
    )
    picked = LatentFromBatch().run(ctx, samples=rep, batch_index=-2, length=5)
    assert torch.equal(picked["samples"], s[1:]) and torch.equal(picked["noise_mask"], masks[1:])
    assert picked["batch_index"] == [4, 5]
    again = RepeatLatentBatch().run(ctx, samples=picked, amount=3)
    assert again["batch_index"] == [4, 5, 6, 7, 8, 9]
    one = LatentFromBatch().run(ctx, samples=_latent(s, noise_mask=masks[:1]), batch_index=9, length=1)
    assert (
        torch.equal(one["samples"], s[2:]) and one["batch_index"] == [2] and one["noise_mask"].shape[0] == 1
    )


def test_a_picked_latent_gets_the_noise_it_had_in_the_batch() -> None:
    # ComfyUI draws one item's noise after another up to the highest index and picks
    latent = torch.zeros(2, 4, 3, 3)
    g = torch.manual_seed(77)
    draws = [torch.randn(1, 4, 3, 3, generator=g) for _ in range(6)]
    assert torch.equal(prepare_noise(latent, 77, [5, 2]), torch.cat([draws[5], draws[2]]))
    with pytest.raises(ValueError, match="batch_index"):
        prepare_noise(latent, 77, [1])
