"""Canny (ComfyUI's node and thresholds) on OpenCV: edges where the picture has them, thresholds that
matter, and the node in a graph."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from atelier.engine.imaging.preprocess import canny
from atelier.engine.runtime import Engine
from atelier.engine.validate import check


def square(contrast: float = 1.0) -> torch.Tensor:
    img = torch.zeros(1, 64, 64, 3)
    img[:, 16:48, 16:48] = contrast
    return img


def test_edges_lie_on_the_outline_only() -> None:
    edges = canny(square(), 0.4, 0.8)
    assert edges.shape == (1, 64, 64, 3) and set(edges.unique().tolist()) <= {0.0, 1.0}
    mask = edges[0, :, :, 0] > 0
    ys, xs = torch.nonzero(mask, as_tuple=True)
    assert len(ys) > 100  # the four sides of a 32-pixel square
    on_outline = (
        ((xs - 15.5).abs() <= 2)
        | ((xs - 47.5).abs() <= 2)
        | ((ys - 15.5).abs() <= 2)
        | ((ys - 47.5).abs() <= 2)
    )
    assert bool(on_outline.all())
    assert not mask[20:44, 20:44].any()  # nothing inside, nothing far outside
    assert not mask[:10].any()


def test_thresholds_decide_which_edges_survive() -> None:
    faint = square(0.3)
    assert canny(faint, 0.4, 0.8).sum() == 0  # a faint step stays under the high threshold
    assert canny(faint, 0.1, 0.2).sum() > 0
    assert canny(square(), 0.4, 0.8).sum() > 0


def test_the_canny_node_in_a_graph(engine: Engine) -> None:
    Image.fromarray((square()[0].numpy() * 255).astype(np.uint8)).save(engine.folders.input / "sq.png")
    wf = {
        "img": {"class_type": "LoadImage", "inputs": {"image": "sq.png"}},
        "canny": {
            "class_type": "Canny",
            "inputs": {"image": ["img", 0], "low_threshold": 0.4, "high_threshold": 0.8},
        },
    }
    ex = engine.executor
    res = ex.run(wf, outputs=["canny"])
    assert res.ok, (res.failure, res.errors)
    plan = ex.plan(check(wf, ex.registry, outputs=["canny"], files=ex.folders).graph)
    got = ex.cache.get(plan.signatures["canny"]).outputs[0]
    assert torch.equal(got, canny(square(), 0.4, 0.8))
    wf["canny"]["inputs"]["low_threshold"] = 0.9
    bad = ex.run(wf, outputs=["canny"])
    assert not bad.ok and "canny" in bad.failure.node and "low_threshold" in bad.failure.message
