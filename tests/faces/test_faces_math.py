"""The pure tensor math of faces, each against a reference computed another way (loops, numpy, areas)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from atelier.engine.faces.boxes import crop_region, grow_box, iou, nms, region_to_aspect
from atelier.engine.faces.compose import crop, paste
from atelier.engine.faces.detailer import working_size
from atelier.engine.faces.detections import FaceDetection, Faces
from atelier.engine.faces.masks import border_sides, combined_mask, feather, move_mask, shape_mask


def _iou_ref(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _nms_ref(boxes: list[list[float]], scores: list[float], thr: float) -> list[int]:
    order = sorted(range(len(boxes)), key=lambda i: -scores[i])
    keep: list[int] = []
    for i in order:
        if all(_iou_ref(boxes[i], boxes[k]) <= thr for k in keep):
            keep.append(i)
    return keep


def test_nms_matches_a_loop_over_pairs() -> None:
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=g) * 200
    wh = torch.rand(60, 2, generator=g) * 60 + 5
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(60, generator=g)
    for thr in (0.1, 0.4, 0.7):
        got = nms(boxes, scores, thr).tolist()
        assert got == _nms_ref(boxes.tolist(), scores.tolist(), thr)
    ref = [[_iou_ref(a, b) for b in boxes[:5].tolist()] for a in boxes[:7].tolist()]
    assert torch.allclose(iou(boxes[:7], boxes[:5]), torch.tensor(ref), atol=1e-6)


def test_crop_region_scales_about_the_centre_and_shifts_inside_the_image() -> None:
    assert crop_region((100, 100, 150, 160), 2.0, 1000, 1000) == (75, 70, 175, 190)
    assert crop_region((100, 100, 150, 160), 1.0, 1000, 1000) == (100, 100, 150, 160)
    # at the border the region is shifted, not shrunk
    assert crop_region((0, 10, 40, 50), 3.0, 500, 500) == (0, 0, 120, 120)
    assert crop_region((460, 460, 500, 500), 3.0, 500, 500) == (380, 380, 500, 500)
    # larger than the image: the whole side
    assert crop_region((10, 10, 90, 20), 3.0, 100, 100) == (0, 0, 100, 30)
    with pytest.raises(ValueError, match="crop factor"):
        crop_region((0, 0, 10, 10), 0.5, 100, 100)


@settings(max_examples=200, deadline=None)
@given(
    x=st.floats(0, 400),
    y=st.floats(0, 300),
    w=st.floats(2, 100),
    h=st.floats(2, 100),
    factor=st.floats(1.0, 5.0),
)
def test_crop_region_holds_the_box_and_stays_inside(
    x: float, y: float, w: float, h: float, factor: float
) -> None:
    width, height = 500, 400
    box = (x, y, min(x + w, width), min(y + h, height))
    x0, y0, x1, y1 = crop_region(box, factor, width, height)
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    assert x0 <= math.floor(box[0]) + 1 and x1 >= math.ceil(box[2]) - 1
    assert y0 <= math.floor(box[1]) + 1 and y1 >= math.ceil(box[3]) - 1
    grown = region_to_aspect((x0, y0, x1, y1), 0.8, width, height)
    assert grown[0] <= x0 and grown[1] <= y0 and grown[2] >= x1 and grown[3] >= y1  # only grows
    gw, gh = grown[2] - grown[0], grown[3] - grown[1]
    if gw < width and gh < height:
        assert abs(gw / gh - 0.8) <= 1.0 / min(gw, gh) + 1e-9


def test_box_mask_is_the_exact_pixel_coverage() -> None:
    region = (10, 20, 40, 60)
    box = (12.25, 25.5, 30.75, 41.0)
    m = shape_mask(region, box, "box")
    assert m.shape == (40, 30)
    # the mask integrates to the box's area; whole pixels inside are 1, outside 0
    assert float(m.sum()) == pytest.approx((30.75 - 12.25) * (41.0 - 25.5), abs=1e-4)
    assert float(m[10, 5]) == 1.0 and float(m[0, 0]) == 0.0
    assert float(m[5, 2]) == pytest.approx(0.5 * 0.75)  # pixel (12, 25): three quarters in x, half in y
    # the part of a box outside the region is cut
    assert float(shape_mask((0, 0, 10, 10), (5, 5, 20, 20), "box").sum()) == pytest.approx(25.0)


def test_ellipse_mask_has_the_ellipse_area_and_shape() -> None:
    region = (0, 0, 200, 160)
    box = (40.0, 30.0, 160.0, 130.0)  # semi-axes 60 and 50
    m = shape_mask(region, box, "ellipse")
    assert float(m.sum()) == pytest.approx(math.pi * 60 * 50, rel=0.01)
    assert float(m[80, 100]) == 1.0 and float(m[31, 41]) == 0.0  # centre in, box corner out
    # brute force: pixel centres inside the ellipse
    ys, xs = np.mgrid[0:160, 0:200] + 0.5
    inside = ((xs - 100) / 60) ** 2 + ((ys - 80) / 50) ** 2 <= 1
    hard = (m.numpy() >= 0.5).astype(bool)
    assert (hard != inside).mean() < 0.005
    with pytest.raises(ValueError, match="mask shape"):
        shape_mask(region, box, "star")  # type: ignore[arg-type]


def test_grow_box_never_turns_inside_out() -> None:
    assert grow_box((10, 10, 20, 30), 5) == (5, 5, 25, 35)
    assert grow_box((10, 10, 20, 30), -3) == (13, 13, 17, 27)
    assert grow_box((10, 10, 20, 30), -50) == (15, 20, 15, 20)


def test_feather_blurs_like_a_separable_gaussian_and_keeps_image_borders() -> None:
    m = torch.zeros(40, 50)
    m[10:30, 15:35] = 1
    r = 4
    out = feather(m, r)
    # reference: numpy 2-D convolution with the outer product of the same 1-D Gaussian
    sigma = r / 2
    k = np.exp(-(np.arange(-r, r + 1) ** 2) / (2 * sigma**2))
    k /= k.sum()
    k2 = np.outer(k, k)
    padded = np.pad(m.numpy(), r)
    ref = np.zeros((40, 50))
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            ref += k2[dy, dx] * padded[dy : dy + 40, dx : dx + 50]
    assert np.allclose(out.numpy(), ref, atol=1e-5)
    assert torch.equal(feather(m, 0), m)
    # a mask touching the region's top-left (the image border there) is not faded on those sides
    edge = torch.zeros(20, 20)
    edge[:10, :10] = 1
    soft = feather(edge, 3, replicate=(True, False, True, False))
    assert float(soft[0, 0]) == pytest.approx(1.0) and float(soft[0, 9]) < 1.0
    assert border_sides((0, 5, 30, 100), 30, 100) == (False, True, True, True)


def _face(
    index: int, crop: tuple[int, int, int, int], box: tuple[float, ...], value: float = 1.0
) -> FaceDetection:
    w, h = crop[2] - crop[0], crop[3] - crop[1]
    return FaceDetection(index, box, 0.9, crop, torch.full((h, w), value))  # type: ignore[arg-type]


def test_paste_changes_only_masked_pixels_and_blends_inside() -> None:
    g = torch.Generator().manual_seed(1)
    image = torch.rand(2, 30, 40, 3, generator=g)
    region = (5, 8, 25, 28)
    patch = torch.rand(1, 20, 20, 3, generator=g)
    mask = torch.zeros(20, 20)
    mask[4:16, 3:17] = torch.rand(12, 14, generator=g)
    out = paste(image, 1, region, patch, mask)
    ref = image.numpy().copy()
    view = ref[1, 8:28, 5:25]
    mm = mask.numpy()[..., None]
    ref[1, 8:28, 5:25] = np.where(mm > 0, view * (1 - mm) + patch.numpy()[0] * mm, view)
    assert np.allclose(out.numpy(), ref, atol=1e-6)
    untouched = torch.ones(2, 30, 40, dtype=torch.bool)
    untouched[1, 8:28, 5:25] = mask == 0
    assert torch.equal(out[untouched], image[untouched])  # bit for bit
    assert torch.equal(crop(out, 0, region), crop(image, 0, region))


def test_combined_and_moved_masks() -> None:
    faces = Faces(
        40,
        30,
        2,
        (
            _face(0, (0, 0, 10, 10), (2, 2, 8, 8), 0.5),
            _face(0, (5, 5, 15, 15), (7, 7, 12, 12)),
            _face(1, (20, 10, 40, 30), (25, 15, 35, 25)),
        ),
    )
    m = combined_mask(faces)
    assert m.shape == (2, 30, 40)
    assert float(m[0, 2, 2]) == 0.5 and float(m[0, 7, 7]) == 1.0 and float(m[0, 20, 20]) == 0.0
    assert float(m[1].sum()) == 400.0 and float(m[0].sum()) == 100 * 0.5 + 100 - 25 * 0.5
    moved = move_mask(torch.ones(10, 10), (5, 5, 15, 15), (0, 0, 20, 12))
    assert moved.shape == (12, 20) and float(moved.sum()) == 70.0 and float(moved[5, 5]) == 1.0


def test_faces_carrier_refuses_inconsistent_values() -> None:
    with pytest.raises(ValueError, match="does not match"):
        FaceDetection(0, (0, 0, 5, 5), 0.9, (0, 0, 10, 10), torch.ones(5, 5))
    with pytest.raises(ValueError, match="outside"):
        Faces(8, 8, 1, (_face(0, (0, 0, 10, 10), (1, 1, 5, 5)),))
    with pytest.raises(ValueError, match="batch"):
        Faces(20, 20, 1, (_face(1, (0, 0, 10, 10), (1, 1, 5, 5)),))
    faces = Faces(20, 20, 1, (_face(0, (0, 0, 10, 10), (1, 1, 5, 5)),))
    with pytest.raises(ValueError, match="1 image\\(s\\) of 20x20"):
        faces.check_image(torch.zeros(1, 30, 20, 3))


def test_working_size_follows_guide_size_and_caps_at_max_size() -> None:
    # a 100x120 box in a 300x360 crop region
    face = _face(0, (0, 0, 300, 360), (100, 120, 200, 240))
    assert working_size(face, 512, "bbox", 4096) == (1536, 1840)  # 5.12x, multiples of 8
    assert working_size(face, 512, "bbox", 1024) == (856, 1024)  # capped on the longer side
    assert working_size(face, 600, "crop_region", 4096) == (600, 720)
    # a face already larger than guide_size is not shrunk, unless max_size asks for it
    assert working_size(face, 64, "bbox", 4096) == (304, 360)
    assert working_size(face, 64, "bbox", 180) == (152, 176)
    for guide, cap in ((512, 1024), (200, 300), (64, 64)):
        w, h = working_size(face, guide, "bbox", cap)
        assert w % 8 == 0 and h % 8 == 0 and max(w, h) <= cap


def test_faces_are_grouped_by_working_size_in_order() -> None:
    from atelier.engine.faces.detailer import group_by_size

    big = _face(0, (0, 0, 300, 360), (100, 120, 200, 240))
    small = _face(0, (300, 0, 400, 100), (333, 33, 366, 66))
    big2 = _face(1, (0, 0, 300, 360), (100, 120, 200, 240))
    faces = Faces(400, 360, 2, (big, small, big2))
    groups = group_by_size(faces, 128, "bbox", 512)
    assert [(size, len(g)) for size, g in groups] == [((384, 464), 2), ((384, 384), 1)]
    assert groups[0][1] == [big, big2]
