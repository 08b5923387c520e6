"""workflows/restyle_photo.json on the tiny checkpoint: headless from the command line, the denoise and
style parameters checked against graphs that do the same another way."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from atelier.engine import cli
from atelier.engine.executor import JobResult
from atelier.engine.folders import Folders
from atelier.engine.models.styles import load_styles
from atelier.engine.runtime import Engine

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "workflows" / "restyle_photo.json"


def restyle() -> dict[str, Any]:
    return json.loads(WORKFLOW.read_text())


@pytest.fixture()
def photo(engine: Engine) -> str:
    """An 80x90 'photo' (random pixels) in the input folder."""
    img = (np.random.default_rng(7).random((90, 80, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(engine.folders.input / "face.png")
    return "face.png"


def run(engine: Engine, wf: dict[str, Any], **overrides: Any) -> JobResult:
    base = {"checkpoint": "tiny15.safetensors", "steps": 3, "width": 64}
    base.update(overrides)
    return engine.executor.run(copy.deepcopy(wf), overrides=base)


def saved(engine: Engine, res: JobResult, node: str = "save") -> np.ndarray:
    assert res.ok, res.failure or res.errors
    ref = res.outputs[node]["images"][0]
    return np.asarray(Image.open(engine.folders.output / ref["subfolder"] / ref["filename"]))


def test_exposes_its_parameters() -> None:
    params = restyle()["parameters"]
    for name in ("image", "checkpoint", "style", "prompt", "denoise"):
        assert name in params
    assert params["denoise"]["targets"] == ["sampler.denoise"]
    assert params["style"]["default"] in load_styles(Folders()).names()  # a shipped style


def test_runs_headless_from_the_command_line(engine: Engine, photo: str, models_root: Path) -> None:
    out = engine.folders.output
    rc = cli.main(
        [
            "run",
            str(WORKFLOW),
            "--device",
            "cpu",
            "--models-dir",
            str(models_root),
            "--input-dir",
            str(engine.folders.input),
            "--output-dir",
            str(out),
            "--temp-dir",
            str(engine.folders.temp),
            "--set",
            "checkpoint=tiny15.safetensors",
            "--set",
            f"image={photo}",
            "--set",
            "style=Film photography",
            "--set",
            "prompt=portrait of a woman with freckles",
            "--set",
            "denoise=0.6",
            "--set",
            "steps=2",
            "--set",
            "width=64",
        ]
    )
    assert rc == 0
    (png,) = sorted(out.glob("restyle_*.png"))
    # 80x90 scaled to width 64 keeps the aspect ratio (72), which the VAE's 8-pixel cell allows
    assert Image.open(png).size == (64, 72)


def round_trip_workflow(image: str) -> dict[str, Any]:
    """The reference for denoise 0: the same scaled photo through the VAE and back, without sampling."""
    wf = restyle()
    nodes = wf["nodes"]
    nodes["photo"]["inputs"]["image"] = image
    nodes["loader"]["inputs"]["ckpt_name"] = "tiny15.safetensors"
    nodes["scale"]["inputs"]["width"] = 64
    nodes["decode"]["inputs"]["samples"] = {"node": "encode", "output": "LATENT"}
    for unused in ("style", "positive", "negative", "sampler"):
        del nodes[unused]
    return {"format": wf["format"], "version": wf["version"], "nodes": nodes}


def test_denoise_zero_keeps_the_photo(engine: Engine, photo: str) -> None:
    kept = saved(engine, run(engine, restyle(), image=photo, denoise=0.0))
    reference = saved(engine, engine.executor.run(round_trip_workflow(photo)))
    assert kept.shape == (72, 64, 3) and (kept == reference).all()
    changed = saved(engine, run(engine, restyle(), image=photo, denoise=0.7))
    assert not (changed == reference).all()


def test_the_style_reaches_the_prompt(engine: Engine, photo: str) -> None:
    styled = saved(engine, run(engine, restyle(), image=photo, style="Oil painting", prompt="an old sailor"))
    positive, negative = (
        load_styles(engine.folders)
        .get("Oil painting")
        .apply("an old sailor", restyle()["parameters"]["negative"]["default"])
    )
    typed = run(engine, restyle(), image=photo, style="none", prompt=positive, negative=negative)
    assert (styled == saved(engine, typed)).all()
    plain = run(engine, restyle(), image=photo, style="none", prompt="an old sailor")
    assert not (styled == saved(engine, plain)).all()
