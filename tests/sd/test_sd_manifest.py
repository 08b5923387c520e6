"""Sharing: a workflow's manifest names its models by kind, name, sha256 and size; `atelier check` on another
machine finds them, finds them renamed (by hash, through a persistent index) and rewrites the workflow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from atelier.engine import cli
from atelier.engine import manifest as M
from atelier.engine.model_loader import ModelLoader
from atelier.engine.runtime import Engine
from tests.engines import make_engine

ROOT = Path(__file__).resolve().parents[2]


def portrait() -> dict:
    wf = json.loads((ROOT / "workflows" / "portrait.json").read_text())
    wf["parameters"]["checkpoint"]["default"] = "tiny15.safetensors"
    for name, value in {"steps": 2, "width": 64, "height": 64}.items():
        wf["parameters"][name]["default"] = value
    return wf


@pytest.fixture()
def elsewhere(tmp_path: Path, models_root: Path, shared_models: ModelLoader) -> Engine:
    """Another machine: the same checkpoint under another name, and a different one under the shared name
    of the XL file."""
    root = tmp_path / "other_models"
    (root / "checkpoints").mkdir(parents=True)
    shutil.copy(
        models_root / "checkpoints" / "tiny15.safetensors", root / "checkpoints" / "my_sd15.safetensors"
    )
    shutil.copy(
        models_root / "checkpoints" / "tiny15.safetensors", root / "checkpoints" / "tinyxl.safetensors"
    )
    return make_engine(root, tmp_path / "other", shared_models)


def test_manifest_records_kind_name_hash_size_and_node_versions(engine: Engine, models_root: Path) -> None:
    checked = engine.check(portrait())
    man = M.build_manifest(checked.graph, engine.folders)
    path = models_root / "checkpoints" / "tiny15.safetensors"
    (ref,) = man.models
    assert (ref.kind, ref.name, ref.size) == ("checkpoints", "tiny15.safetensors", path.stat().st_size)
    assert ref.sha256 == M.sha256_of_file(path) and ref.used_by == ["loader.ckpt_name"]
    assert man.nodes["KSampler"] == engine.registry.get("KSampler").spec.version
    assert set(man.nodes) == {
        "CheckpointLoaderSimple",
        "CLIPTextEncode",
        "EmptyLatentImage",
        "KSampler",
        "VAEDecode",
        "SaveImage",
    }


def test_check_finds_renamed_changed_and_missing_models_and_rewrites(
    engine: Engine, elsewhere: Engine, tmp_path: Path
) -> None:
    man = M.build_manifest(engine.check(portrait()).graph, engine.folders)
    xl = M.ModelRef(
        kind="checkpoints",
        name="tinyxl.safetensors",
        sha256=engine.folders.sha256(engine.folders.find_model("checkpoints", "tinyxl.safetensors")),
    )
    gone = M.ModelRef(kind="loras", name="gone.safetensors", sha256="0" * 64)
    man.models += [xl, gone]
    man.nodes["NoSuchNode"] = "1.0.0"
    index = M.HashIndex(tmp_path / "index.json")
    report = M.check_manifest(man, elsewhere.folders, elsewhere.registry, index)
    got = {m.ref.name: (m.status, m.local_name) for m in report.models}
    assert got == {
        "tiny15.safetensors": ("renamed", "my_sd15.safetensors"),
        "tinyxl.safetensors": ("changed", None),
        "gone.safetensors": ("missing", None),
    }
    assert {n.type: n.status for n in report.nodes}["NoSuchNode"] == "missing"
    assert not report.ok

    rewritten, overrides = M.rewrite_names(portrait(), report)
    assert overrides == []
    assert rewritten["parameters"]["checkpoint"]["default"] == "my_sd15.safetensors"
    res = elsewhere.executor.run(rewritten)
    assert res.ok, res.failure or res.errors


def test_the_hash_index_reads_each_file_version_once(
    elsewhere: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[Path] = []
    real = M.sha256_of_file
    monkeypatch.setattr(M, "sha256_of_file", lambda p: reads.append(p) or real(p))
    man = M.Manifest(models=[M.ModelRef(kind="checkpoints", name="x.safetensors", sha256="f" * 64)])
    M.check_manifest(man, elsewhere.folders, elsewhere.registry, M.HashIndex(tmp_path / "i.json"))
    assert len(reads) == 2  # both local checkpoints hashed to look for the missing one
    reads.clear()
    M.check_manifest(man, elsewhere.folders, elsewhere.registry, M.HashIndex(tmp_path / "i.json"))
    assert reads == []  # a new index object reads the saved one: nothing hashed again
    (elsewhere.config.models_dir / "checkpoints" / "my_sd15.safetensors").touch()
    M.check_manifest(man, elsewhere.folders, elsewhere.registry, M.HashIndex(tmp_path / "i.json"))
    assert [p.name for p in reads] == ["my_sd15.safetensors"]  # only the changed file


def test_cli_check_reads_the_png_a_run_made(
    engine: Engine, elsewhere: Engine, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    res = engine.executor.run(portrait())
    ref = res.outputs["save"]["images"][0]
    png = engine.folders.output / ref["subfolder"] / ref["filename"]
    args = ["--models-dir", str(elsewhere.config.models_dir), "--device", "cpu"]
    out = tmp_path / "local.json"
    assert cli.main(["check", str(png), "--rewrite", str(out), *args]) == 1  # renamed: not ok as it is
    text = capsys.readouterr().out
    assert "renamed" in text and "here as 'my_sd15.safetensors'" in text
    assert cli.main(["check", str(out), *args]) == 0  # the rewritten workflow is fine here
    assert "present" in capsys.readouterr().out


def test_export_carries_the_manifest(engine: Engine, models_root: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    shared = portrait()
    (lib / "mine@1.0.0.json").write_text(json.dumps(shared))
    out = tmp_path / "export.json"
    common = ["--models-dir", str(models_root), "--pipelines-dir", str(lib), "--device", "cpu"]
    assert cli.main(["pipelines", "export", "mine", "--out", str(out), *common]) == 0
    man = json.loads(out.read_text())["manifest"]
    assert man["models"][0]["name"] == "tiny15.safetensors" and len(man["models"][0]["sha256"]) == 64
