"""The inpainting workflows run headless on tiny checkpoints (plain and 9-channel, SD1.5 and SDXL): the
face inpaint keeps every pixel outside its grown mask, the outpaint widens the frame and keeps the
picture where its mask does not reach; a wrongly sized mask fails naming the node and the input."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.engine.imaging.compositing import outpaint_feather
from atelier.engine.imaging.masks import grow

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINTS = ["tiny15-inpaint.safetensors", "tinyxl-inpaint.safetensors", "tiny15.safetensors"]


def _workflow(name: str) -> dict:
    return json.loads((ROOT / "workflows" / f"{name}.json").read_text())


def _portrait(h: int = 64, w: int = 48, seed: int = 0) -> np.ndarray:
    g = np.random.default_rng(seed)
    return g.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _saved(engine, res, node: str = "save") -> np.ndarray:
    ref = res.outputs[node]["images"][0]
    return np.asarray(Image.open(engine.folders.output / ref["subfolder"] / ref["filename"]))


@pytest.mark.parametrize("checkpoint", CHECKPOINTS)
def test_inpaint_face_keeps_everything_outside_the_grown_mask(engine, checkpoint: str) -> None:
    rgb = _portrait()
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[20:36, 14:30] = 0  # the "face": transparent pixels are repainted
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(engine.folders.input / "face.png")
    res = engine.executor.run(
        _workflow("inpaint_face"),
        overrides={"image": "face.png", "checkpoint": checkpoint, "steps": 2, "denoise": 1.0, "grow": 3},
    )
    assert res.ok, res.failure
    out = _saved(engine, res)
    assert out.shape == rgb.shape
    grown = grow(torch.from_numpy(1.0 - alpha / 255.0).float()[None], 3)[0].numpy()
    assert (out[grown == 0] == rgb[grown == 0]).all()  # bit for bit
    assert np.abs(out[20:36, 14:30].astype(int) - rgb[20:36, 14:30]).mean() > 2  # the face is repainted


@pytest.mark.parametrize("checkpoint", CHECKPOINTS[:2])
def test_outpaint_widens_the_frame_and_keeps_the_picture(engine, checkpoint: str) -> None:
    rgb = _portrait(64, 40, seed=1)
    Image.fromarray(rgb).save(engine.folders.input / "portrait.png")
    res = engine.executor.run(
        _workflow("outpaint"),
        overrides={
            "image": "portrait.png",
            "checkpoint": checkpoint,
            "steps": 2,
            "left": 16,
            "right": 8,
            "feathering": 6,
        },
    )
    assert res.ok, res.failure
    out = _saved(engine, res)
    assert out.shape == (64, 64, 3)
    untouched = outpaint_feather(64, 40, (False, False, True, True), 6).numpy() == 0
    assert (out[:, 16:56][untouched] == rgb[untouched]).all()
    assert untouched[:, 6:34].all() and not untouched[:, :6].any()
    border = out[:, :16].astype(float)
    assert border.std() > 1 and np.abs(border - 127.5).mean() > 1  # painted, not left grey


def test_a_mask_of_another_picture_fails_naming_node_and_input(engine) -> None:
    Image.fromarray(_portrait()).save(engine.folders.input / "face.png")
    wf = copy.deepcopy(_workflow("inpaint_face"))
    wf["nodes"]["other"] = {"type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 64}}
    wf["nodes"]["grow"]["inputs"]["mask"] = {"node": "other", "output": "MASK"}
    res = engine.executor.run(wf, overrides={"image": "face.png", "checkpoint": CHECKPOINTS[0], "steps": 1})
    assert not res.ok and res.failure is not None
    assert res.failure.node == "inpaint"
    assert "InpaintModelConditioning: input 'mask' is 64x64 but 'pixels' is 48x64" in res.failure.message
