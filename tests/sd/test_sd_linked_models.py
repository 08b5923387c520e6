"""Model folders as people keep them: checkpoints and sub-folders that are symbolic links to a shared drive
load as ComfyUI loads them, while names from workflows still never leave the configured folders."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atelier.engine.folders import Folders, UnsafePathError, resolve_inside
from atelier.engine.model_loader import ModelLoader
from tests.engines import make_engine

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def linked_root(tmp_path: Path, models_root: Path) -> Path:
    """A models root whose checkpoints are links: one file linked, and one linked folder, both on a "shared
    drive" outside the root; plus a link cycle that listing must survive."""
    drive = tmp_path / "drive"
    (drive / "portraits").mkdir(parents=True)
    shutil.copy(models_root / "checkpoints" / "tiny15.safetensors", drive / "tiny15.safetensors")
    shutil.copy(models_root / "checkpoints" / "tiny15.safetensors", drive / "portraits" / "deep.safetensors")
    root = tmp_path / "models"
    (root / "checkpoints").mkdir(parents=True)
    (root / "loras").mkdir()
    os.symlink(drive / "tiny15.safetensors", root / "checkpoints" / "linked.safetensors")
    os.symlink(drive / "portraits", root / "checkpoints" / "shared", target_is_directory=True)
    os.symlink(root / "checkpoints", drive / "portraits" / "loop", target_is_directory=True)
    return root


def _portrait(name: str) -> dict:
    wf = json.loads((ROOT / "workflows" / "portrait.json").read_text())
    return {"workflow": wf, "overrides": {"checkpoint": name, "steps": 2, "width": 64, "height": 64}}


def test_linked_checkpoints_are_listed_once_despite_a_cycle(linked_root: Path, tmp_path: Path) -> None:
    engine = make_engine(linked_root, tmp_path / "e")
    names = engine.folders.list_models("checkpoints")
    assert "linked.safetensors" in names
    assert "shared/deep.safetensors" in names
    # the cycle (drive/portraits/loop -> checkpoints) is entered at most once per real folder
    assert len(names) == len(set(names)) and len(names) <= 4


@pytest.mark.parametrize("name", ["linked.safetensors", "shared/deep.safetensors"])
def test_linked_checkpoint_validates_and_runs(
    linked_root: Path, tmp_path: Path, shared_models: ModelLoader, name: str
) -> None:
    engine = make_engine(linked_root, tmp_path / "e", shared_models)
    job = _portrait(name)
    res = engine.executor.run(copy.deepcopy(job["workflow"]), overrides=job["overrides"])
    ref = res.outputs["save"]["images"][0]
    pixels = np.asarray(Image.open(engine.folders.output / ref["subfolder"] / ref["filename"]))
    assert pixels.shape == (64, 64, 3) and pixels.std() > 0


@pytest.mark.parametrize(
    "name", ["../checkpoints/linked.safetensors", "shared/../../x.safetensors", "/etc/passwd", "..", "a\x00b"]
)
def test_names_from_requests_never_leave_the_folder(linked_root: Path, name: str) -> None:
    with pytest.raises(UnsafePathError):
        resolve_inside(linked_root / "checkpoints", name)


def test_a_name_stays_inside_even_through_a_linked_folder(linked_root: Path) -> None:
    """``shared/..`` is the checkpoints folder itself (resolved on the name), not the drive the link leads to."""
    folder = linked_root / "checkpoints"
    assert resolve_inside(folder, "shared/../linked.safetensors") == folder.resolve() / "linked.safetensors"
    files = Folders(models={"checkpoints": [folder]})
    with pytest.raises(FileNotFoundError):
        files.find_model("checkpoints", "shared/../tiny15.safetensors")  # on the drive, not in the folder
