"""The shipped face workflows run headless on the tiny checkpoint: portrait_face_detail.json through the
executor with its parameters, fix_faces.json through the README's command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from atelier.engine import cli
from atelier.engine import events as E
from atelier.engine.validate import check

ROOT = Path(__file__).resolve().parents[2]


def load(name: str) -> dict:
    return json.loads((ROOT / "workflows" / name).read_text())


@pytest.mark.parametrize("name", ["portrait_face_detail.json", "fix_faces.json"])
def test_face_workflows_expose_their_parameters_and_validate(face_engine: Any, name: str) -> None:
    wf = load(name)
    overrides = {"checkpoint": "tiny15.safetensors"}
    if name == "fix_faces.json":
        overrides["image"] = "astronaut.png"
        assert {"image", "checkpoint", "face_prompt"} <= set(wf["parameters"])
    else:
        assert {"face_prompt", "face_denoise", "face_detector"} <= set(wf["parameters"])
    checked = check(wf, face_engine.registry, overrides, files=face_engine.folders)
    assert checked.graph is not None, [str(e) for e in checked.errors]


def test_portrait_face_detail_runs_headless(face_engine: Any) -> None:
    events: list[E.Event] = []
    overrides = {
        "checkpoint": "tiny15.safetensors",
        "steps": 2,
        "width": 64,
        "height": 64,
        "face_prompt": "a face",
    }
    res = face_engine.executor.run(
        load("portrait_face_detail.json"), overrides=overrides, on_event=events.append
    )
    assert res.ok, res.failure
    ref = res.outputs["save"]["images"][0]
    saved = np.asarray(Image.open(face_engine.folders.output / ref["filename"]))
    assert saved.shape == (64, 64, 3)
    assert res.outputs["preview"]["images"][0]["type"] == "temp"
    # random weights paint noise, not faces: the detailer says so and passes the picture through
    (done,) = [e for e in events if isinstance(e, E.NodeFinished) and e.node == "detailer"]
    assert done.ui is not None and done.ui["text"] == ["no face found in the image: passed through unchanged"]


def test_fix_faces_runs_from_the_command_line(face_engine: Any, capsys: pytest.CaptureFixture) -> None:
    folders = face_engine.folders
    rc = cli.main(
        [
            "run",
            str(ROOT / "workflows" / "fix_faces.json"),
            "--models-dir",
            str(face_engine.config.models_dir),
            "--input-dir",
            str(folders.input),
            "--output-dir",
            str(folders.output),
            "--temp-dir",
            str(folders.temp),
            "--device",
            "cpu",
            "--set",
            "image=astronaut.png",
            "--set",
            "checkpoint=tiny15.safetensors",
            "--set",
            "face_prompt=an astronaut's face, detailed eyes",
            "--set",
            "steps=2",
            "--set",
            "guide_size=64",
            "--events",
            "-",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    finished = {e["node"]: e for e in events if e["type"] == "node_finished"}
    assert finished["detailer"]["ui"]["text"][0].startswith("detailed 1 face(s)")
    assert finished["faces"]["ui"]["text"] == ["1 face(s) found by retinaface"]
    (ref,) = finished["save"]["ui"]["images"]
    before = np.asarray(Image.open(folders.input / "astronaut.png"))
    after = np.asarray(Image.open(folders.output / ref["filename"]))
    assert after.shape == before.shape
    changed = np.any(after != before, axis=-1)
    ys, xs = np.nonzero(changed)
    # only around the face: inside its crop region (3x the box about its centre, under the top edge)
    assert 0 <= ys.min() and ys.max() < 362 and xs.min() >= 83 and xs.max() < 369
    assert changed[80:150, 200:250].mean() > 0.95


def test_shipped_pipelines_compose_portrait_then_fix_faces(face_engine: Any) -> None:
    """The library's portrait feeds the library's fix_faces: one graph, the shared checkpoint loaded by one
    node, fix_faces' own LoadImage dropped (its input is connected), both pictures saved."""
    top = {
        "format": "atelier/workflow",
        "version": 1,
        "nodes": {
            "base": {
                "type": "pipeline:portrait",
                "version": "1.0.0",
                "inputs": {"checkpoint": "tiny15.safetensors", "steps": 2, "width": 64, "height": 64},
            },
            "fix": {
                "type": "pipeline:fix_faces",
                "version": "1.0",
                "inputs": {
                    "picture": {"node": "base", "output": "image"},
                    "checkpoint": "tiny15.safetensors",
                    "steps": 2,
                },
            },
        },
    }
    checked = face_engine.check(top)
    assert checked.ok, [str(e) for e in checked.errors]
    assert "fix:image" not in checked.graph.nodes and "fix:detailer" in checked.graph.nodes
    assert checked.graph.nodes["fix:detailer"].links["image"] == ("base:decode", 0)
    events: list[E.Event] = []
    res = face_engine.executor.run(top, on_event=events.append)
    assert res.ok, res.failure
    started = {e.node for e in events if isinstance(e, E.NodeStarted)}
    assert len(started & {"base:loader", "fix:loader"}) == 1  # one checkpoint load serves both
    assert {"base:save", "fix:save", "fix:detailer"} <= started
    assert set(res.outputs) >= {"base:save", "fix:save"}
