"""LoadImageMask and ImageBatch against values computed another way."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from atelier.engine.node import JobContext


def _ctx(ex, node_type: str):
    return ex.make_context(JobContext("j"), "n", node_type)


def test_load_image_mask_reads_each_channel_and_inverts_alpha(engine_env) -> None:
    from atelier.nodes.image_extras import LoadImageMask

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, size=(5, 7, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(engine_env.folders.input / "m.png")
    node = LoadImageMask()
    for index, channel in enumerate(("red", "green", "blue")):
        mask = node.run(_ctx(engine_env, "LoadImageMask"), image="m.png", channel=channel)
        assert mask.shape == (1, 5, 7)
        np.testing.assert_allclose(mask[0].numpy(), rgba[..., index] / 255.0, rtol=0, atol=1e-6)
    alpha = node.run(_ctx(engine_env, "LoadImageMask"), image="m.png", channel="alpha")
    np.testing.assert_allclose(alpha[0].numpy(), 1.0 - rgba[..., 3] / 255.0, rtol=0, atol=1e-6)
    # a picture without alpha is opaque: nothing masked; grey pictures give their level in every channel
    Image.fromarray(rgba[..., 0], "L").save(engine_env.folders.input / "grey.png")
    grey_alpha = node.run(_ctx(engine_env, "LoadImageMask"), image="grey.png", channel="alpha")
    assert torch.equal(grey_alpha, torch.zeros(1, 5, 7))
    grey_blue = node.run(_ctx(engine_env, "LoadImageMask"), image="grey.png", channel="blue")
    np.testing.assert_allclose(grey_blue[0].numpy(), rgba[..., 0] / 255.0, rtol=0, atol=1e-6)


def test_load_image_mask_through_a_workflow_and_bad_file(engine_env) -> None:
    Image.fromarray(np.full((4, 4, 3), 51, np.uint8)).save(engine_env.folders.input / "flat.png")
    (engine_env.folders.input / "broken.png").write_bytes(b"not a picture")
    wf = {
        "1": {"class_type": "LoadImageMask", "inputs": {"image": "flat.png", "channel": "green"}},
        "2": {"class_type": "MaskToImage", "inputs": {"mask": ["1", 0]}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    res = engine_env.run(wf)
    assert res.ok, res.failure
    wf["1"]["inputs"]["image"] = "broken.png"
    bad = engine_env.run(wf)
    assert not bad.ok and "LoadImageMask" in bad.failure.message and "broken.png" in bad.failure.message


def test_image_batch_resizes_the_second_to_the_first_like_comfyui(engine_env) -> None:
    from atelier.nodes.image_extras import ImageBatch

    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 8, 12, 3, generator=g)
    same = torch.rand(1, 8, 12, 3, generator=g)
    out = ImageBatch().run(_ctx(engine_env, "ImageBatch"), image1=a, image2=same)
    assert torch.equal(out, torch.cat([a, same]))
    # 16x16 into 8x12 (aspect 1.5): crop the centre 16 wide x round(16 - 16 * (1 / 1.5)) / 2 = 3 rows off
    # top and bottom, then bilinear (no antialiasing, half-pixel centres) to 8x12
    b = torch.rand(1, 16, 16, 3, generator=g)
    out = ImageBatch().run(_ctx(engine_env, "ImageBatch"), image1=a, image2=b)
    cropped = b[:, 3:13, :, :].permute(0, 3, 1, 2)
    expected = F.interpolate(cropped, size=(8, 12), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
    assert out.shape == (3, 8, 12, 3)
    torch.testing.assert_close(out[2:], expected)
    # RGB joined to RGBA gets an opaque alpha
    rgba = torch.rand(1, 8, 12, 4, generator=g)
    mixed = ImageBatch().run(_ctx(engine_env, "ImageBatch"), image1=rgba, image2=same)
    assert mixed.shape == (2, 8, 12, 4) and torch.equal(mixed[1, ..., 3], torch.ones(8, 12))


@pytest.mark.parametrize("channel", ["alpha", "red"])
def test_load_image_mask_declares_comfyui_inputs(channel: str) -> None:
    from atelier.nodes.image_extras import LoadImageMask

    spec = LoadImageMask.spec
    assert [i.name for i in spec.inputs] == ["image", "channel"]
    assert channel in spec.input("channel").choices and spec.input("channel").choices[0] == "alpha"
    assert [o.type for o in spec.outputs] == ["MASK"]
