"""The registry: discovery of nodes/ and plugins, JSON descriptions, declaration checks."""

from __future__ import annotations

import sys
import types
from importlib.metadata import EntryPoint

import pytest
from pydantic import ValidationError

from atelier.engine import registry as R
from atelier.engine.node import Choice, Int, Node, Output
from tests.engine.toy_nodes import toy_registry


def test_default_registry_finds_the_node_library() -> None:
    reg = R.default_registry()
    assert "SaveImage" in reg and "ImageScale" in reg
    assert reg.load_errors == []
    desc = reg.describe("SaveImage")
    assert desc["output_node"] is True and desc["category"] == "image"


def test_plugins_through_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = types.ModuleType("atelier_test_plugin")

    class PluginNode(Node):
        """From a plugin."""

        outputs = (Output("INT"),)

        def run(self, ctx):  # pragma: no cover - not run here
            return 1

    PluginNode.__module__ = mod.__name__
    mod.PluginNode = PluginNode
    sys.modules[mod.__name__] = mod
    eps = [
        EntryPoint("good", "atelier_test_plugin", R.ENTRY_POINT_GROUP),
        EntryPoint("broken", "atelier_no_such_module", R.ENTRY_POINT_GROUP),
    ]
    monkeypatch.setattr(R, "entry_points", lambda group: eps if group == R.ENTRY_POINT_GROUP else [])
    reg = R.Registry()
    reg.discover_plugins()
    assert "PluginNode" in reg
    assert reg.describe("PluginNode")["description"] == "From a plugin."
    assert len(reg.load_errors) == 1 and "broken" in reg.load_errors[0][0]


def test_describe_has_what_the_canvas_needs() -> None:
    d = toy_registry().describe()
    scale = d["Scale"]
    assert scale["outputs"] == [{"name": "NUMBER", "type": "NUMBER", "description": ""}]
    mode = next(i for i in scale["inputs"] if i["name"] == "mode")
    assert mode["choices"] == ["multiply", "divide"] and mode["default"] == "multiply"
    negate = next(i for i in scale["inputs"] if i["name"] == "negate")
    assert negate["optional"] is True
    text = next(i for i in d["Text"]["inputs"] if i["name"] == "text")
    assert text["multiline"] is True


def test_dynamic_choices_are_listed_at_describe_time() -> None:
    files = ["a.safetensors"]

    class Pick(Node):
        inputs = (Choice("name", lambda: list(files)),)

    reg = R.Registry([Pick])
    assert reg.describe("Pick")["inputs"][0]["choices"] == ["a.safetensors"]
    files.append("b.safetensors")
    assert reg.describe("Pick")["inputs"][0]["choices"] == ["a.safetensors", "b.safetensors"]


def test_bad_declarations_are_refused_at_class_creation() -> None:
    with pytest.raises(ValidationError, match="semver"):

        class BadVersion(Node):
            version = "one"

    with pytest.raises(ValidationError, match="duplicate input"):

        class Dupe(Node):
            inputs = (Int("a"), Int("a"))


def test_duplicate_type_names_are_reported_not_replaced() -> None:
    class Number(Node):
        pass

    reg = toy_registry()
    first = reg.get("Number")
    reg.add(Number)
    assert reg.get("Number") is first and "already defined" in reg.load_errors[0][1]
