"""The pipeline library: versions, upgrades, interface changes, install/export, running a pipeline by name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from atelier.engine.executor import Executor
from atelier.engine.pipeline_library import PipelineError, PipelineLibrary, interface_changes
from atelier.engine.validate import check
from atelier.engine.workflow import parse_workflow
from tests.engine.toy_nodes import Sink, link, toy_registry, wf

REG = toy_registry()


def scaler(version: str, offset: float = 1.0, **changes: Any) -> dict[str, Any]:
    w = wf(
        {
            "off": {"type": "Number", "inputs": {"value": offset}},
            "scale": {"type": "Scale", "inputs": {"factor": 2.0, "mode": "multiply"}},
            "add": {"type": "Add", "inputs": {"a": link("scale"), "b": link("off")}},
        },
        metadata={"name": "Scaler", "version": version, "description": f"scaler {version}"},
        parameters={
            "x": {"type": "NUMBER", "targets": ["scale.x"]},
            "factor": {"type": "FLOAT", "targets": ["scale.factor"], "default": 2.0},
        },
        outputs={"result": {"type": "NUMBER", "node": "add", "output": "sum"}},
    )
    w.update(changes)
    return w


def user(version: str | None) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "pipeline:scaler", "inputs": {"x": link("n"), "factor": 3.0}}
    if version is not None:
        node["version"] = version
    return wf(
        {
            "n": {"type": "Number", "inputs": {"value": 2.0}},
            "p": node,
            "o": {"type": "Sink", "inputs": {"value": link("p", "result")}},
        }
    )


@pytest.fixture()
def library(tmp_path: Path) -> PipelineLibrary:
    mine, shipped = tmp_path / "mine", tmp_path / "shipped"
    mine.mkdir()
    shipped.mkdir()
    (shipped / "scaler.json").write_text(json.dumps(scaler("1.0.0", offset=1.0)))
    (mine / "scaler@1.2.0.json").write_text(json.dumps(scaler("1.2.0", offset=100.0)))
    (shipped / "broken.json").write_text("{not json")
    return PipelineLibrary([mine, shipped])


def run(library: PipelineLibrary, data: dict[str, Any]) -> float:
    Sink.received.clear()
    res = Executor(REG, pipelines=library.resolve).run(data)
    assert res.ok, res.errors
    return Sink.received[-1][1]


def test_entries_list_every_version_and_skip_what_is_not_a_pipeline(library: PipelineLibrary) -> None:
    assert [(e.name, str(e.version)) for e in library.entries()] == [("scaler", "1.0.0"), ("scaler", "1.2.0")]


def test_a_pin_takes_the_newest_compatible_minor(library: PipelineLibrary) -> None:
    assert run(library, user("1.0.0")) == 2 * 3 + 100  # 1.2.0 serves a 1.0.0 pin
    assert run(library, user(None)) == 106
    assert library.get("scaler", "1.0.0").version.public == "1.2.0"


def test_a_major_change_is_refused_naming_what_changed(library: PipelineLibrary, tmp_path: Path) -> None:
    v2 = scaler("2.0.0", parameters={"y": {"type": "NUMBER", "targets": ["scale.x"]}})
    (tmp_path / "mine" / "scaler@2.0.0.json").write_text(json.dumps(v2))
    # with 1.x installed the pin keeps working, and the newer major is a warning saying what changed
    res = check(user("1.0.0"), REG, pipelines=library.resolve)
    assert res.ok
    (warning,) = [e for e in res.errors if e.code == "pipeline_version"]
    assert warning.severity == "warning" and "2.0.0" in warning.message
    assert "input 'x' removed" in warning.message and "input 'factor' removed" in warning.message
    # with only 2.x left, the reference is refused, naming how 2.0.0 fails this node
    for old in (tmp_path / "mine" / "scaler@1.2.0.json", tmp_path / "shipped" / "scaler.json"):
        old.unlink()
    res = check(user("1.0.0"), REG, pipelines=library.resolve)
    (err,) = [e for e in res.errors if e.code == "unknown_pipeline"]
    assert err.node == "p" and "2.0.0 is a major change" in err.message
    assert "it has no input 'x'" in err.message and "input 'y' (NUMBER) is new and required" in err.message


def test_interface_changes() -> None:
    old = parse_workflow(scaler("1.0.0"))
    new = parse_workflow(
        scaler(
            "2.0.0",
            outputs={"result": {"type": "TEXT", "node": "add", "output": "sum"}},
            parameters={
                "x": {"type": "NUMBER", "targets": ["scale.x"]},
                "gain": {"type": "FLOAT", "targets": ["scale.factor"], "default": 1.0},
            },
        )
    )
    assert interface_changes(old, new) == [
        "input 'factor' removed",
        "input 'gain' added",
        "output 'result' retyped NUMBER → TEXT",
    ]


def test_install_writes_name_at_version_and_never_replaces(library: PipelineLibrary, tmp_path: Path) -> None:
    src = tmp_path / "scaler@9.json"
    src.write_text(json.dumps(scaler("1.3.0")))
    entry = library.install(src)
    assert entry.path == tmp_path / "mine" / "scaler@1.3.0.json" and entry.name == "scaler"
    with pytest.raises(PipelineError, match="already installed"):
        library.install(src)
    no_version = tmp_path / "nv.json"
    no_version.write_text(json.dumps(wf({}, metadata={"name": "x"})))
    with pytest.raises(PipelineError, match="no version"):
        library.install(no_version)
    with pytest.raises(PipelineError, match="pipeline name"):
        library.install(src, name="../evil")


def test_unknown_pipeline_names_what_is_installed(library: PipelineLibrary) -> None:
    with pytest.raises(LookupError, match="installed: scaler"):
        library.get("nope")


def test_cli_list_show_install_export_and_run_by_name(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from atelier.engine.cli import main

    mine = tmp_path / "lib"
    common = [
        "--pipelines-dir",
        str(mine),
        "--output-dir",
        str(tmp_path / "out"),
        "--models-dir",
        str(tmp_path),
    ]
    src = tmp_path / "demo_copy.json"
    demo = json.loads((Path(__file__).resolve().parents[2] / "workflows" / "demo.json").read_text())
    demo["metadata"]["version"] = "3.1.0"
    src.write_text(json.dumps(demo))
    assert main(["pipelines", "install", str(src), *common]) == 0
    assert (mine / "demo_copy@3.1.0.json").is_file()
    capsys.readouterr()
    assert main(["pipelines", "list", "--json", *common]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"name": "demo_copy", "version": "3.1.0", "path": str(mine / "demo_copy@3.1.0.json")} in rows
    assert any(r["name"] == "portrait" for r in rows)  # the shipped ones come after the user's
    assert main(["pipelines", "show", "demo_copy@3", *common]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == "3.1.0" and shown["outputs"]["image"]["type"] == "IMAGE"
    assert shown["inputs"]["width"]["type"] == "INT" and shown["inputs"]["width"]["socket"] is False
    out = tmp_path / "shared.json"
    assert main(["pipelines", "export", "demo_copy", "--out", str(out), *common]) == 0
    assert json.loads(out.read_text())["metadata"]["version"] == "3.1.0"
    assert main(["run", "demo_copy", "--set", "width=32", "--set", "height=24", "-q", *common]) == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 1
    assert main(["pipelines", "show", "nothing", *common]) == 1
    assert "no pipeline 'nothing'" in capsys.readouterr().err
