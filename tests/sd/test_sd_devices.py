"""Tensors stay on the device they were made on: a probe records the device of every node output and
every explicit copy to the host (``.cpu()``, ``.numpy()``) with the node that made it. Only what leaves
the graph (saved images, previews) may copy to the host. On a machine with CUDA the same runs on the GPU."""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.engine import events as E
from atelier.engine.model_loader import ModelLoader
from atelier.engine.runtime import EngineConfig, build_engine

ROOT = Path(__file__).resolve().parents[2]

#: nodes whose job is to leave the graph: writing images to disk
LEAVING_NODES = {"SaveImage", "PreviewImage"}
#: functions that copy to the host from inside a node, each for a reason: latent previews for the websocket,
#: the picture a face detector reads (onnxruntime/OpenCV take host arrays), the few-box overlap matrix of
#: the detector's greedy suppression
LEAVING_FUNCTIONS = {"latent_preview", "to_host_rgb", "nms"}

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from tensors(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from tensors(v)
    elif (
        dataclasses.is_dataclass(value)
        and not isinstance(value, type)
        and type(value).__name__ == "CondEntry"
    ):
        for f in dataclasses.fields(value):
            yield from tensors(getattr(value, f.name))


class DeviceProbe:
    """Output devices per node, and host copies with the node (and function) that made them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.node: tuple[str, str] | None = None
        self.outputs: dict[str, set[str]] = {}
        self.host_copies: list[tuple[str, str, frozenset[str]]] = []
        for name in ("cpu", "numpy"):
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._spy(name, original))

    def _spy(self, name: str, original: Any) -> Any:
        probe = self

        def spy(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if probe.node is not None:
                frames, f = set(), sys._getframe(1)
                for _ in range(12):
                    if f is None:
                        break
                    frames.add(f.f_code.co_name)
                    f = f.f_back
                probe.host_copies.append((probe.node[1], name, frozenset(frames)))
            return original(tensor, *args, **kwargs)

        return spy

    def on_event(self, ev: E.Event) -> None:
        if isinstance(ev, E.NodeStarted):
            self.node = (ev.node, ev.node_type)
        elif isinstance(ev, (E.NodeFinished, E.NodeFailed)):
            self.node = None

    def observe(self, nid: str, node_type: str, outputs: tuple[Any, ...]) -> None:
        self.outputs[f"{nid} ({node_type})"] = {str(t.device.type) for t in tensors(outputs)}

    def unexplained_copies(self) -> list[tuple[str, str]]:
        return [
            (node_type, name)
            for node_type, name, frames in self.host_copies
            if node_type not in LEAVING_NODES and not (frames & LEAVING_FUNCTIONS)
        ]


def _workflow(name: str) -> dict:
    return json.loads((ROOT / "workflows" / name).read_text())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("workflow", ["portrait.json", "portrait_hires.json"])
def test_intermediate_tensors_stay_on_the_compute_device(
    device: str, workflow: str, models_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = build_engine(
        EngineConfig(
            device=device, models_dir=models_root, output_dir=tmp_path / "o", input_dir=tmp_path / "i"
        ),
        models=ModelLoader(device),
    )
    probe = DeviceProbe(monkeypatch)
    engine.executor.observers.append(probe.observe)
    overrides = {"checkpoint": "tiny15.safetensors", "steps": 2, "width": 64, "height": 64}
    res = engine.executor.run(
        copy.deepcopy(_workflow(workflow)), overrides=overrides, on_event=probe.on_event
    )
    assert res.ok, res.failure
    with_tensors = {node: devs for node, devs in probe.outputs.items() if devs}
    assert len(with_tensors) >= 5  # latents, conditionings, images were all seen
    assert all(devs == {device} for devs in with_tensors.values()), with_tensors
    assert probe.unexplained_copies() == []
    assert any(t in LEAVING_NODES for t, _, _ in probe.host_copies)  # the probe does see copies


def test_the_probe_catches_a_node_that_copies_to_the_host(
    models_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe is not blind: a VAE decode that returns its image on the host is caught by name."""
    from atelier.engine.models import handles

    original = handles.VaeHandle.decode
    monkeypatch.setattr(handles.VaeHandle, "decode", lambda self, latent: original(self, latent).cpu())
    engine = build_engine(
        EngineConfig(
            device="cpu", models_dir=models_root, output_dir=tmp_path / "o", input_dir=tmp_path / "i"
        ),
        models=ModelLoader("cpu"),
    )
    probe = DeviceProbe(monkeypatch)
    overrides = {"checkpoint": "tiny15.safetensors", "steps": 1, "width": 64, "height": 64}
    res = engine.executor.run(_workflow("portrait.json"), overrides=overrides, on_event=probe.on_event)
    assert res.ok
    assert probe.unexplained_copies() == [("VAEDecode", "cpu")]


@pytest.mark.parametrize("device", DEVICES)
def test_loaded_images_and_masks_go_to_the_compute_device(
    device: str, models_root: Path, tmp_path: Path
) -> None:
    engine = build_engine(
        EngineConfig(
            device=device, models_dir=models_root, output_dir=tmp_path / "o", input_dir=tmp_path / "i"
        ),
        models=ModelLoader(device),
    )
    engine.folders.ensure()
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 3] = 255
    Image.fromarray(rgba, "RGBA").save(engine.folders.input / "a.png")
    seen: dict[str, set[str]] = {}
    engine.executor.observers.append(
        lambda nid, t, outs: seen.update({t: {x.device.type for x in tensors(outs)}})
    )
    wf = {
        "format": "atelier/workflow",
        "version": 1,
        "nodes": {
            "load": {"type": "LoadImage", "inputs": {"image": "a.png"}},
            "inv": {"type": "ImageInvert", "inputs": {"image": {"node": "load", "output": "IMAGE"}}},
            "save": {"type": "PreviewImage", "inputs": {"images": {"node": "inv", "output": "IMAGE"}}},
        },
    }
    assert engine.executor.run(wf).ok
    assert seen["LoadImage"] == {device} and seen["ImageInvert"] == {device}
