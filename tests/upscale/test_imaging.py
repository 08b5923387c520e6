"""Pure image math: Lanczos against PIL, windowed feathered masks against whole-canvas blurs, tile grids and
blending, the out-of-memory retry, and the tiled-redraw job plans."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from atelier.engine.imaging.paste_masks import MaskShape, gaussian_blur, render, render_canvas
from atelier.engine.imaging.redraw_plan import RedrawSettings, crop_window, grid_size, plan_jobs
from atelier.engine.imaging.resample import lanczos_resize
from atelier.engine.imaging.tiles import (
    Rect,
    overlapping_tiles,
    shrinking_tiles,
    tile_weights,
    tiled_apply,
)


@pytest.mark.parametrize("size", [(74, 106), (111, 159), (20, 30), (37, 80), (100, 17), (5, 7)])
def test_lanczos_matches_pil(size: tuple[int, int]) -> None:
    x = torch.rand(37, 53, generator=torch.Generator().manual_seed(0))
    h, w = size
    pil = Image.fromarray(x.numpy(), mode="F").resize((w, h), Image.LANCZOS)
    assert torch.allclose(lanczos_resize(x, h, w), torch.from_numpy(np.asarray(pil).copy()), atol=1e-5)


def test_lanczos_keeps_constants_and_batches() -> None:
    x = torch.full((2, 3, 10, 12), 0.25)
    assert torch.allclose(lanczos_resize(x, 31, 7), torch.full((2, 3, 31, 7), 0.25), atol=1e-6)


def test_gaussian_blur_against_a_direct_sum() -> None:
    """Blur of a small mask against the Gaussian-weighted sum written out (edges repeat their values)."""
    m = (torch.rand(9, 11, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    sigma = 1.5
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    padded = np.pad(m.numpy(), r, mode="edge")
    ref = np.zeros_like(m.numpy())
    for y in range(9):
        for x in range(11):
            ref[y, x] = (padded[y : y + 2 * r + 1, x : x + 2 * r + 1] * np.outer(k, k)).sum()
    assert np.allclose(gaussian_blur(m, sigma).numpy(), ref, atol=1e-6)
    assert torch.equal(gaussian_blur(m, 0), m)


@pytest.mark.parametrize(
    "shape",
    [
        MaskShape(96, 80, Rect(32, 16, 64, 48), blur=4),
        MaskShape(96, 80, Rect(0, 0, 32, 32), blur=6),  # touches the canvas's corner
        MaskShape(96, 80, Rect(40, -8, 72, 24), profile_y="tent", blur=3),  # reaches outside
        MaskShape(96, 80, Rect(20, 0, 36, 80), profile_x="tent"),
        MaskShape(96, 80, Rect(16, 16, 80, 64), radial=True, blur=5),
    ],
)
def test_a_mask_rendered_on_a_window_is_that_part_of_the_blurred_canvas(shape: MaskShape) -> None:
    whole = render_canvas(shape)
    for window in (Rect(0, 0, 96, 80), Rect(24, 8, 72, 56), Rect(0, 40, 40, 80), Rect(56, 0, 96, 24)):
        part = render(shape, window)
        assert part.shape == (window.height, window.width)
        assert torch.allclose(part, whole[window.y0 : window.y1, window.x0 : window.x1], atol=1e-6)


def test_mask_profiles() -> None:
    box = render_canvas(MaskShape(16, 8, Rect(4, 2, 12, 6)))
    assert box.sum() == 8 * 4 and box[2:6, 4:12].min() == 1
    tent = render_canvas(MaskShape(16, 1, Rect(0, 0, 16, 1), profile_x="tent"))[0]
    assert torch.allclose(tent, tent.flip(0)) and tent[7] == tent.max() and tent[0] < 0.1
    radial = render_canvas(MaskShape(21, 21, Rect(0, 0, 21, 21), radial=True))
    assert radial[10, 10] > 0.95 and radial[0, 0] == 0 and radial[10, 0] < 0.1


def test_tiles_cover_the_image_and_their_weights_never_vanish() -> None:
    for h, w, tile, overlap in [(100, 130, 48, 16), (64, 64, 64, 32), (50, 300, 32, 0), (513, 700, 512, 32)]:
        rects = overlapping_tiles(h, w, tile, overlap)
        total = torch.zeros(h, w)
        for r in rects:
            assert r.width <= tile and r.height <= tile
            total[r.y0 : r.y1, r.x0 : r.x1] += tile_weights(r, h, w, overlap)
        assert total.min() > 0.05


def test_tiled_apply_is_exact_for_a_network_whose_reach_fits_a_quarter_of_the_overlap() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.Tanh(),
        torch.nn.Conv2d(4, 12, 3, padding=1),
        torch.nn.PixelShuffle(2),
    ).eval()  # reach: 2 pixels
    x = torch.rand(2, 3, 45, 61)
    with torch.no_grad():
        whole = net(x)
        done: list[tuple[int, int]] = []
        tiled = tiled_apply(x, net, scale=2, tile=20, overlap=8, on_tile=lambda d, t: done.append((d, t)))
        seams = tiled_apply(x, net, scale=2, tile=20, overlap=0)
    assert tiled.shape == whole.shape == (2, 3, 90, 122)
    assert torch.allclose(tiled, whole, atol=1e-6)
    assert (seams - whole).abs().max() > 1e-3  # cut without context, the tiles show
    assert done[-1] == (len(done), len(done)) and len(done) == len(overlapping_tiles(45, 61, 20, 8))


def test_tiled_apply_refuses_a_function_of_the_wrong_scale() -> None:
    with pytest.raises(ValueError, match="came back 24x24, expected 16x16"):
        tiled_apply(
            torch.rand(1, 3, 10, 10), lambda t: F.interpolate(t, scale_factor=3), scale=2, tile=8, overlap=2
        )


def test_shrinking_tiles_on_out_of_memory() -> None:
    tried: list[int] = []

    def run(tile: int) -> int:
        tried.append(tile)
        if tile > 128:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return tile

    assert shrinking_tiles(run, 512) == 128 and tried == [512, 256, 128]
    with pytest.raises(torch.cuda.OutOfMemoryError):
        shrinking_tiles(run, 512, min_tile=256)

    def broken(tile: int) -> int:
        raise RuntimeError("shapes do not match")

    with pytest.raises(RuntimeError, match="shapes"):
        shrinking_tiles(broken, 512)  # not a memory problem: no retry


def _settings(**kw) -> RedrawSettings:
    base = dict(tile_width=64, tile_height=48, padding=16, mask_blur=4)
    return RedrawSettings(**{**base, **kw})


@pytest.mark.parametrize(
    ("seam_fix_mode", "seam_jobs"),
    [
        ("None", 0),
        ("Band Pass", (3 - 1) + (4 - 1)),
        ("Half Tile", 3 * (4 - 1) + (3 - 1) * 4),
        ("Half Tile + Intersections", 3 * (4 - 1) + (3 - 1) * 4 + (3 - 1) * (4 - 1)),
    ],
)
def test_plan_counts(seam_fix_mode: str, seam_jobs: int) -> None:
    width, height = 232, 136  # 4 columns (the last one partial) x 3 rows
    assert grid_size(width, height, 64, 48) == (3, 4)
    jobs = plan_jobs(width, height, _settings(seam_fix_mode=seam_fix_mode, seam_fix_denoise=0.3))
    tiles = [j for j in jobs if j.kind == "tile"]
    assert len(tiles) == 12 and len(jobs) - 12 == seam_jobs
    assert all(j.denoise == 0.3 for j in jobs[12:])
    for j in jobs:
        w = j.window
        assert 0 <= w.x0 < w.x1 <= width and 0 <= w.y0 < w.y1 <= height
        assert w.width % 8 == 0 and w.height % 8 == 0
    assert len(plan_jobs(width, height, _settings(mode="None", seam_fix_mode=seam_fix_mode))) == seam_jobs


def test_redraw_tiles_partition_the_canvas_and_windows_hold_them() -> None:
    width, height = 232, 136
    for uniform in (True, False):
        jobs = plan_jobs(width, height, _settings(uniform=uniform, mask_blur=0))
        cover = torch.zeros(height, width)
        for j in jobs:
            r, w = j.mask.rect, j.window
            assert w.x0 <= r.x0 and r.x1 <= w.x1 and w.y0 <= r.y0 and r.y1 <= w.y1
            cover += render(j.mask, Rect(0, 0, width, height))
        assert torch.equal(cover, torch.ones(height, width))
        sizes = {(j.window.width, j.window.height) for j in jobs}
        if uniform:
            assert sizes == {(96, 80)}  # 64 + 2 * 16, 48 + 2 * 16: the same for every tile, edges too
        else:
            assert (96, 80) in sizes and len(sizes) > 1


def test_chess_order() -> None:
    jobs = plan_jobs(192, 144, _settings(mode="Chess"))
    parity = [((j.mask.rect.x0 // 64) + (j.mask.rect.y0 // 48)) % 2 for j in jobs]
    assert parity == [0] * 5 + [1] * 4


def test_crop_window_moves_inside_the_canvas() -> None:
    assert crop_window(Rect(0, 0, 64, 64), 16, 256, 256, uniform_size=(64, 64)) == Rect(0, 0, 96, 96)
    assert crop_window(Rect(192, 192, 256, 256), 16, 256, 256, uniform_size=(64, 64)) == Rect(
        160, 160, 256, 256
    )
    assert crop_window(Rect(64, 64, 128, 128), 16, 256, 256) == Rect(48, 48, 144, 144)
    assert crop_window(Rect(0, 0, 60, 60), 3, 64, 64) == Rect(0, 0, 64, 64)  # rounded up to 8
    assert crop_window(Rect(0, 0, 64, 64), 32, 64, 64, uniform_size=(64, 64)) == Rect(0, 0, 64, 64)


def test_plan_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="not a multiple of 8"):
        plan_jobs(100, 64, _settings())
    with pytest.raises(ValueError, match="unknown seam_fix_mode"):
        plan_jobs(64, 64, _settings(seam_fix_mode="Sideways"))
