"""The shipped ControlNet workflows on tiny models: portrait in a pose, restyle keeping composition. Each
runs headless, and its control acts: another pose or strength 0 gives another picture."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from atelier.engine.runtime import Engine

ROOT = Path(__file__).resolve().parents[2]


def workflow(name: str) -> dict[str, Any]:
    return json.loads((ROOT / "workflows" / f"{name}.json").read_text())


def pose_png(engine: Engine, name: str, arm: int) -> str:
    """An OpenPose-style stick figure (coloured limbs on black), the arm raised by ``arm`` pixels."""
    img = np.zeros((96, 64, 3), np.uint8)
    img[10:80, 30:34] = (255, 0, 0)  # body
    img[30:34, 10:54] = (0, 255, 0)  # shoulders
    img[30 - arm : 34, 50:54] = (0, 0, 255)  # the raised forearm
    Image.fromarray(img).save(engine.folders.input / name)
    return name


def photo_png(engine: Engine) -> str:
    img = (np.random.default_rng(7).random((90, 80, 3)) * 60).astype(np.uint8)
    img[20:70, 25:55] = 220  # a bright "face" with clear edges
    Image.fromarray(img).save(engine.folders.input / "photo.png")
    return "photo.png"


def run(engine: Engine, wf: dict[str, Any], **overrides: Any) -> np.ndarray:
    base = {"checkpoint": "tiny15.safetensors", "controlnet": "cn15.safetensors", "steps": 3}
    base.update(overrides)
    res = engine.executor.run(copy.deepcopy(wf), overrides=base)
    assert res.ok, (res.failure, res.errors)
    ref = res.outputs["save"]["images"][0]
    return np.asarray(Image.open(engine.folders.output / ref["subfolder"] / ref["filename"]))


def test_portrait_in_a_pose(engine: Engine) -> None:
    wf = workflow("portrait_pose")
    up, down = pose_png(engine, "up.png", 20), pose_png(engine, "down.png", 0)
    a = run(engine, wf, pose=up, width=64, height=96)
    assert a.shape == (96, 64, 3)
    b = run(engine, wf, pose=down, width=64, height=96)
    free = run(engine, wf, pose=up, width=64, height=96, strength=0.0)
    assert np.abs(a.astype(int) - b).mean() > 0.005  # the pose steers the picture (a small arm: small change)
    assert np.abs(a.astype(int) - free).mean() > 0.1


def test_restyle_keeping_composition(engine: Engine) -> None:
    wf = workflow("restyle_composition")
    photo = photo_png(engine)
    held = run(engine, wf, image=photo, width=64)
    assert held.shape == (72, 64, 3)  # 80x90 scaled to width 64 keeps the aspect (height rounded to 8s)
    free = run(engine, wf, image=photo, width=64, strength=0.0)
    assert np.abs(held.astype(int) - free).mean() > 0.1
