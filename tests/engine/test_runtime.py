"""The composition root: engines built from one configuration, independent of each other, no globals."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from atelier.engine import cli, folders, runtime
from atelier.engine.folders import Folders
from atelier.engine.node import Choice, Context, Node, Output, model_files
from atelier.engine.registry import Registry
from atelier.engine.runtime import Command, EngineConfig, Plugin, build_engine
from tests.engine.toy_nodes import TOY_TYPES, Sink, link, wf


class Pick(Node):
    """Names a model file of kind "things" (a choice read from the engine's folders)."""

    inputs = (Choice("name", model_files("things")),)
    outputs = (Output("STRING"),)

    def run(self, ctx: Context, name: str) -> str:
        return ctx.files.find_model("things", name).read_text()


class ThingsPlugin(Plugin):
    """A plugin that knows the "things" model folder under the models root, and one command."""

    name = "things"

    def __init__(self) -> None:
        self.ran: list[argparse.Namespace] = []

    def configure_folders(self, config: EngineConfig, files: Folders) -> None:
        assert config.models_dir is not None
        files.models["things"] = [config.models_dir / "things"]

    def commands(self) -> list[Command]:
        return [Command("things", "count things", lambda p: None, lambda a: self.ran.append(a) or 0)]


def _engine(root: Path, plugin: Plugin) -> runtime.Engine:
    (root / "models" / "things").mkdir(parents=True)
    return build_engine(
        EngineConfig(
            device="cpu",
            models_dir=root / "models",
            output_dir=root / "out",
            input_dir=root / "in",
            temp_dir=root / "tmp",
        ),
        plugins=[plugin],
        registry=Registry([*TOY_TYPES, Pick]),
    )


def test_two_engines_in_one_process_see_their_own_folders(tmp_path: Path) -> None:
    a, b = _engine(tmp_path / "a", ThingsPlugin()), _engine(tmp_path / "b", ThingsPlugin())
    (tmp_path / "a" / "models" / "things" / "x.bin").write_text("from a")
    (tmp_path / "b" / "models" / "things" / "y.bin").write_text("from b")
    assert a.describe("Pick")["inputs"][0]["choices"] == ["x.bin"]
    assert b.describe("Pick")["inputs"][0]["choices"] == ["y.bin"]
    graph = {
        "p": {"type": "Pick", "inputs": {"name": "x.bin"}},
        "o": {"type": "Sink", "inputs": {"value": link("p")}},
    }
    assert a.executor.run(wf(graph)).outputs["o"] == {"value": ["from a"]}
    res = b.executor.run(wf(graph))  # b has no x.bin: refused at validation, naming node and input
    assert res.status == "invalid"
    assert any(e.node == "p" and e.input == "name" and e.code == "not_in_choices" for e in res.errors)
    assert a.cache is not b.cache and a.models is not b.models and a.folders is not b.folders


def test_the_core_keeps_no_process_wide_state() -> None:
    # what nodes and handlers used to reach for: the active folders, a fallback model manager, CLI hook lists
    assert not hasattr(folders, "active") and not hasattr(folders, "configure")
    for name in ("SETUP_HOOKS", "SERVICES_FACTORY", "SUBCOMMANDS"):
        assert not hasattr(cli, name)
    import atelier.engine.models as models

    assert not hasattr(models, "manager")


def test_unset_options_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ATELIER_MODELS", str(tmp_path / "m"))
    monkeypatch.setenv("ATELIER_OUTPUT", str(tmp_path / "o"))
    monkeypatch.setenv("ATELIER_DTYPE", "bf16")
    cfg = EngineConfig(input_dir=tmp_path / "given").resolved()
    assert cfg.models_dir == tmp_path / "m" and cfg.output_dir == tmp_path / "o"
    assert cfg.input_dir == tmp_path / "given" and cfg.dtype == "bf16" and cfg.device


def test_engine_options_are_declared_once_and_shared_by_every_engine_command() -> None:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("run", "validate", "nodes", "serve", "demo"):
        options = {o for a in sub.choices[command]._actions for o in a.option_strings}
        assert {"--device", "--dtype", "--models-dir", "--config", "--output-dir", "--cache-mb"} <= options, (
            command
        )


def test_a_bad_dtype_is_refused_naming_the_accepted_ones(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "w.json"
    path.write_text('{"format": "atelier/workflow", "version": 1, "nodes": {}}')
    assert cli.main(["validate", str(path), "--dtype", "float8"]) == 2
    assert "unknown dtype 'float8'; use one of float16, bfloat16, float32" in capsys.readouterr().err


def test_plugins_add_commands_and_folders(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    plugin = ThingsPlugin()
    monkeypatch.setattr(cli, "load_plugins", lambda errors=None: [plugin])
    assert cli.main(["things", "--models-dir", str(tmp_path)]) == 0
    assert plugin.ran and plugin.ran[0].models_dir == tmp_path
    eng = _engine(tmp_path / "e", plugin)
    assert eng.folders.models["things"] == [tmp_path / "e" / "models" / "things"]


def test_a_broken_plugin_is_reported_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    broken = EntryPoint("broken", "no_such_module_anywhere:plugin", runtime.PLUGIN_GROUP)
    monkeypatch.setattr(runtime, "entry_points", lambda group: [broken])
    errors: list[tuple[str, str]] = []
    assert runtime.load_plugins(errors) == []
    assert "broken" in errors[0][0] and "ModuleNotFoundError" in errors[0][1]


def test_installed_plugins_and_node_library_are_found_through_entry_points() -> None:
    names = {p.name for p in runtime.load_plugins()}
    assert {"sd", "server"} <= names
    eng = build_engine(EngineConfig(device="cpu"))
    assert "KSampler" in eng.registry and "checkpoints" in eng.folders.models and not eng.load_errors
    assert Sink.spec.type not in eng.registry  # toys are not installed
