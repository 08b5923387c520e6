"""The registry: discovery of nodes/ and plugins, JSON descriptions, declaration checks."""

from __future__ import annotations

import sys
import types
from importlib.metadata import EntryPoint

import pytest

from atelier.engine import registry as R
from atelier.engine.node import Choice, Int, Node, NodeDeclarationError, Output
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


def test_dynamic_choices_are_listed_at_describe_time_from_the_engines_folders(tmp_path) -> None:
    from atelier.engine.folders import Folders
    from atelier.engine.node import model_files

    class Pick(Node):
        inputs = (Choice("name", model_files("things")),)

        def run(self, ctx, name):
            return None

    folder = tmp_path / "things"
    folder.mkdir()
    (folder / "a.safetensors").write_bytes(b"x")
    files = Folders(models={"things": [folder]})
    reg = R.Registry([Pick])
    assert reg.describe("Pick", files=files)["inputs"][0]["choices"] == ["a.safetensors"]
    (folder / "b.safetensors").write_bytes(b"x")
    assert reg.describe("Pick", files=files)["inputs"][0]["choices"] == ["a.safetensors", "b.safetensors"]
    assert reg.describe("Pick", files=Folders())["inputs"][0]["choices"] == []  # another engine's folders


def test_bad_declarations_are_refused_at_class_creation() -> None:
    with pytest.raises(NodeDeclarationError, match="(?s)BadVersion.*semver"):

        class BadVersion(Node):
            version = "one"

            def run(self, ctx):
                return None

    with pytest.raises(NodeDeclarationError, match="duplicate input"):

        class Dupe(Node):
            inputs = (Int("a"), Int("a"))

            def run(self, ctx, a):
                return None

    with pytest.raises(NodeDeclarationError, match="NoRun does not implement run"):

        class NoRun(Node):
            inputs = (Int("a"),)


def test_run_must_take_exactly_the_declared_inputs() -> None:
    with pytest.raises(
        NodeDeclarationError,
        match=r"Typo: run\(\) takes 'strenght', which is not a declared input \(inputs: strength\)",
    ):

        class Typo(Node):
            inputs = (Int("strength"),)

            def run(self, ctx, strenght):
                return None

    with pytest.raises(NodeDeclarationError, match=r"Missing: input 'b' is declared but run\(\) has no"):

        class Missing(Node):
            inputs = (Int("a"), Int("b"))

            def run(self, ctx, a):
                return None

    with pytest.raises(
        NodeDeclarationError, match=r"Extra: run\(\) takes 'b', which is not a declared input"
    ):

        class Extra(Node):
            inputs = (Int("a"),)

            def run(self, ctx, a, b):
                return None

    with pytest.raises(NodeDeclarationError, match="optional input 'mask' needs a default"):

        class NoDefault(Node):
            inputs = (Int("a"), Int("mask", optional=True))

            def run(self, ctx, a, mask):
                return None

    class Kw(Node):  # **inputs takes whatever is declared
        inputs = (Int("a"), Int("b"))

        def run(self, ctx, a, **rest):
            return None

    assert [i.name for i in Kw.spec.inputs] == ["a", "b"]


def test_duplicate_type_names_are_reported_not_replaced() -> None:
    class Number(Node):
        def run(self, ctx):
            return None

    reg = toy_registry()
    first = reg.get("Number")
    reg.add(Number)
    assert reg.get("Number") is first and "already defined" in reg.load_errors[0][1]
