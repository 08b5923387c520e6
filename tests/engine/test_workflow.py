"""The workflow format: round trips, unknown content preserved, ComfyUI API import, PNG embedding."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from atelier.engine.executor import Executor
from atelier.engine.validate import check
from atelier.engine.workflow import (
    Link,
    WorkflowFormatError,
    detect_format,
    load_workflow,
    parse_workflow,
)
from tests.engine.toy_nodes import Sink, link, toy_registry, wf

FULL = {
    "format": "atelier/workflow",
    "version": 1,
    "metadata": {"name": "t", "description": "d", "author": "me", "tags": ["x"], "license": "CC0"},
    "parameters": {
        "k": {
            "type": "FLOAT",
            "default": 2.5,
            "targets": ["s.factor"],
            "description": "",
            "widget_hint": "slider",
        }
    },
    "nodes": {
        "n": {
            "type": "Number",
            "version": "1.0.0",
            "title": "Start",
            "inputs": {"value": 1},
            "color": "#fff",
        },
        "s": {
            "type": "Scale",
            "inputs": {"x": {"node": "n", "output": "NUMBER"}, "factor": 2, "mode": "multiply"},
        },
        "p": {
            "type": "FancyPluginNode",
            "inputs": {"img": {"node": "s", "output": 0}, "strength": [1, 2]},
            "zz": 1,
        },
        "o": {"type": "Sink", "inputs": {"value": {"node": "s", "output": 0}}},
    },
    "ui": {"positions": {"n": [10, 20]}, "zoom": 1.5},
    "x_tool_data": {"anything": [1, 2, 3]},
}


def test_round_trip_keeps_everything_including_unknown_types_and_fields() -> None:
    w = parse_workflow(copy.deepcopy(FULL))
    assert w.to_dict() == FULL
    assert json.loads(w.to_json()) == FULL
    assert isinstance(w.nodes["s"].inputs["x"], Link)
    assert w.nodes["p"].inputs["strength"] == [1, 2]


def test_unknown_node_type_is_reported_not_dropped() -> None:
    res = check(copy.deepcopy(FULL), toy_registry())
    assert [(e.code, e.node) for e in res.errors if e.severity == "error"] == [("unknown_node_type", "p")]
    assert res.workflow is not None and "p" in res.workflow.nodes


COMFY = {
    "1": {"inputs": {"value": 3}, "class_type": "Number", "_meta": {"title": "Three"}},
    "2": {"inputs": {"x": ["1", 0], "factor": 2.0, "mode": "multiply"}, "class_type": "Scale"},
    "3": {"inputs": {"value": ["2", 0], "label": "comfy"}, "class_type": "Sink", "is_changed": ["abc"]},
}


def test_comfyui_api_format_loads_runs_and_round_trips() -> None:
    assert detect_format(COMFY) == "comfyui-api"
    w = parse_workflow(copy.deepcopy(COMFY))
    assert w.nodes["1"].title == "Three"
    assert w.nodes["2"].inputs["x"] == Link(node="1", output=0)
    assert w.to_comfy_api() == COMFY
    Sink.received.clear()
    res = Executor(toy_registry()).run(copy.deepcopy(COMFY))
    assert res.ok and Sink.received == [("comfy", 6.0)]
    # a /prompt request body works too
    assert parse_workflow({"prompt": copy.deepcopy(COMFY), "client_id": "x"}).to_comfy_api() == COMFY


def test_comfy_export_resolves_output_names_to_indexes() -> None:
    from atelier.engine.workflow import to_comfy_api

    w = parse_workflow(
        wf(
            {
                "a": {"type": "Split", "inputs": {"x": link("b")}},
                "b": {"type": "Number"},
                "c": {"type": "Sink", "inputs": {"value": link("a", "double")}},
            }
        )
    )
    api = to_comfy_api(w, toy_registry())
    assert api["c"]["inputs"]["value"] == ["a", 1]
    assert api["a"]["inputs"]["x"] == ["b", 0]


def test_bad_documents_are_refused_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(WorkflowFormatError, match="newer"):
        parse_workflow({"format": "atelier/workflow", "version": 7, "nodes": {}})
    with pytest.raises(WorkflowFormatError, match="unknown workflow format"):
        parse_workflow({"format": "other/thing"})
    with pytest.raises(WorkflowFormatError, match="UI-format workflow .* needs the node registry"):
        parse_workflow({"nodes": [], "links": []})
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(WorkflowFormatError, match="line 1 column 2"):
        load_workflow(bad)


def test_png_carries_its_workflow_and_parameter_values(tmp_path: Path) -> None:
    from atelier.engine.folders import Folders
    from atelier.engine.registry import Registry
    from atelier.nodes.image import EmptyImage, SaveImage

    reg = Registry([EmptyImage, SaveImage])
    w = {
        "format": "atelier/workflow",
        "version": 1,
        "parameters": {"c": {"type": "INT", "default": 0, "targets": ["img.color"]}},
        "nodes": {
            "img": {"type": "EmptyImage", "inputs": {"width": 8, "height": 8, "color": 0}},
            "save": {"type": "SaveImage", "inputs": {"images": link("img"), "filename_prefix": "t"}},
        },
    }
    ex = Executor(reg, folders=Folders(output=tmp_path, input=tmp_path, temp=tmp_path))
    res = ex.run(w, overrides={"c": 0xFF0000})
    assert res.ok
    png = tmp_path / res.outputs["save"]["images"][0]["filename"]
    again = load_workflow(png)
    assert again.parameters["c"].default == 0xFF0000
    # running the PNG's workflow reproduces the picture (new executor: nothing cached)
    out2 = tmp_path / "again"
    ex2 = Executor(reg, folders=Folders(output=out2, input=tmp_path, temp=tmp_path))
    res2 = ex2.run(again)
    png2 = out2 / res2.outputs["save"]["images"][0]["filename"]
    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(png))
    b = np.asarray(Image.open(png2))
    assert (a == b).all() and tuple(a[0, 0]) == (255, 0, 0)


def test_saving_never_overwrites(tmp_path: Path) -> None:
    import torch

    from atelier.nodes.image import save_images

    img = torch.zeros(2, 4, 4, 3)
    (tmp_path / "x_00003_.png").write_bytes(b"not mine")
    names = save_images(img, tmp_path, "x", None)
    assert names == ["x_00004_.png", "x_00005_.png"]
    assert (tmp_path / "x_00003_.png").read_bytes() == b"not mine"


def test_a_failed_save_leaves_no_truncated_picture(tmp_path: Path, monkeypatch) -> None:
    """A full disk mid-write: the error reaches the caller, and neither a partial PNG nor a temporary file
    is left in the output folder."""
    import pytest
    import torch
    from PIL import Image

    from atelier.nodes.image import save_images

    real_save = Image.Image.save

    def full_disk(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG\r\n\x1a\n partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_images(torch.zeros(1, 4, 4, 3), tmp_path, "x", None)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(Image.Image, "save", real_save)
    assert save_images(torch.zeros(1, 4, 4, 3), tmp_path, "x", None) == ["x_00001_.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_00001_.png"]  # the temporary file is gone
    with Image.open(tmp_path / "x_00001_.png") as im:
        assert im.size == (4, 4)


def test_saving_works_without_hard_links(tmp_path: Path, monkeypatch) -> None:
    import os

    import torch

    from atelier.nodes.image import save_images

    def no_links(src, dst):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "x_00001_.png").write_bytes(b"not mine")
    assert save_images(torch.zeros(2, 4, 4, 3), tmp_path, "x", None) == ["x_00002_.png", "x_00003_.png"]
    assert (tmp_path / "x_00001_.png").read_bytes() == b"not mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_00001_.png", "x_00002_.png", "x_00003_.png"]
