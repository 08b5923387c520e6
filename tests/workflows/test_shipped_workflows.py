"""Every shipped workflow validates against an engine that has what it needs, and the full portrait finish
(txt2img, hires fix, face detail, 4x model upscale) runs headless end to end on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atelier.engine.model_loader import ModelLoader
from atelier.engine.runtime import Engine, EngineConfig, build_engine
from tests.upscale import tiny_upscalers as tiny

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))

#: what each parameter that names a file is set to in these tests
FILES = {
    "checkpoint": "tiny15.safetensors",
    "image": "face.png",
    "upscale_model": "esrgan-x4.safetensors",
    "reference": "face.png",
    "ipadapter": "plus-face15.bin",
    "clip_vision": "tiny-vit.safetensors",
    "controlnet": "cn15.safetensors",
    "pose": "face.png",
    "photo": "face.png",
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    from atelier.engine.models.tiny import write_tiny_checkpoint
    from atelier.engine.models.tiny_ipadapter import write_tiny_clip_vision, write_tiny_ipadapter

    root = tmp_path_factory.mktemp("shipped")
    write_tiny_checkpoint("sd15", root / "models" / "checkpoints" / "tiny15.safetensors", seed=0)
    tiny.write_safetensors(tiny.esrgan(4), root / "models" / "upscale_models" / "esrgan-x4.safetensors")
    write_tiny_clip_vision(root / "models" / "clip_vision" / "tiny-vit.safetensors")
    write_tiny_ipadapter(root / "models" / "ipadapter" / "plus-face15.bin", "sd15", "plus")
    from atelier.engine.models.controlnet_tiny import write_tiny_controlnet

    write_tiny_controlnet("sd15", root / "models" / "controlnet" / "cn15.safetensors", seed=1)
    eng = build_engine(
        EngineConfig(
            device="cpu",
            models_dir=root / "models",
            output_dir=root / "out",
            input_dir=root / "in",
            temp_dir=root / "tmp",
        ),
        models=ModelLoader("cpu"),
    )
    eng.folders.ensure()
    rgba = np.full((64, 64, 4), 160, np.uint8)
    rgba[16:48, 16:48, 3] = 0  # a transparent square: the inpainting workflows' mask
    Image.fromarray(rgba, "RGBA").save(eng.folders.input / "face.png")
    return eng


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_shipped_workflow_validates(engine: Engine, path: Path) -> None:
    wf = json.loads(path.read_text())
    assert wf["metadata"]["name"] and wf["metadata"]["description"]
    overrides = {name: FILES[name] for name in wf.get("parameters", {}) if name in FILES}
    result = engine.check(wf, overrides)
    assert result.ok, [str(e) for e in result.errors]


def test_the_full_portrait_finish_runs_headless(engine: Engine) -> None:
    wf = json.loads((ROOT / "workflows" / "portrait_full.json").read_text())
    overrides = {
        **{k: v for k, v in FILES.items() if k != "image" and k in wf["parameters"]},
        "width": 64,
        "height": 64,
        "steps": 2,
        "hires_steps": 2,
        "hires_scale": 1.5,
        "face_steps": 2,
    }
    res = engine.executor.run(wf, overrides=overrides)
    assert res.ok, res.failure or res.errors
    ref = res.outputs["save"]["images"][0]
    image = Image.open(engine.folders.output / ref["subfolder"] / ref["filename"])
    assert image.size == (96 * 4, 96 * 4)  # 64 px, hires x1.5, model x4
    assert {"sampler", "refine", "faces", "detailer", "upscale_image", "save"} <= set(res.executed)


@pytest.mark.parametrize("name", ["fix_faces.json", "upscale_image.json", "inpaint_face.json"])
def test_toolkit_pipelines_keep_tensors_on_the_compute_device(
    engine: Engine, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The device probe of tests/sd over the face, upscale and inpaint pipelines, on a real face photo:
    node outputs stay on the engine's device; host copies only where a reason is written beside them."""
    from skimage.data import astronaut

    from tests.sd.test_sd_devices import DeviceProbe

    Image.fromarray(astronaut()).resize((128, 128)).save(engine.folders.input / "astronaut.png")
    probe = DeviceProbe(monkeypatch)
    engine.executor.observers.append(probe.observe)
    try:
        wf = json.loads((ROOT / "workflows" / name).read_text())
        overrides = {k: v for k, v in FILES.items() if k in wf.get("parameters", {})}
        if name == "fix_faces.json":
            overrides.update(image="astronaut.png", steps=2, guide_size=64)
        elif name == "inpaint_face.json":
            overrides.update(steps=2)
        events: list = []
        res = engine.executor.run(
            wf, overrides=overrides, on_event=lambda ev: (events.append(ev), probe.on_event(ev))
        )
    finally:
        engine.executor.observers.remove(probe.observe)
    assert res.ok, res.failure or res.errors
    with_tensors = {node: devs for node, devs in probe.outputs.items() if devs}
    assert with_tensors and all(devs == {"cpu"} for devs in with_tensors.values()), with_tensors
    assert probe.unexplained_copies() == []
    if name == "fix_faces.json":  # the face was found and re-painted
        ui = next(
            e.ui for e in events if getattr(e, "node", None) == "detailer" and e.type == "node_finished"
        )
        assert ui["faces"] == [1], ui
