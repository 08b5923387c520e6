"""Tiny checkpoints written once per session in the real single-file layout, and an executor over them."""

from __future__ import annotations

from pathlib import Path

import pytest

from atelier.engine import folders as F
from atelier.engine.executor import Executor
from atelier.engine.models.manager import ModelManager, configure_models
from atelier.engine.node import Paths
from atelier.engine.registry import default_registry


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from atelier.engine.models.tiny import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("models")
    (root / "checkpoints").mkdir()
    write_tiny_checkpoint("sd15", root / "checkpoints" / "tiny15.safetensors", seed=0)
    write_tiny_checkpoint("sdxl", root / "checkpoints" / "tinyxl.safetensors", seed=0)
    (root / "loras").mkdir()
    return root


@pytest.fixture()
def engine_env(models_root: Path, tmp_path: Path):
    previous = F.active()
    fol = F.configure(F.Folders(output=tmp_path / "out", input=tmp_path / "in", temp=tmp_path / "tmp"))
    fol.ensure()
    configure_models(models_root)
    registry = default_registry()
    ex = Executor(
        registry,
        paths=Paths(output=fol.output, input=fol.input, temp=fol.temp),
        services={"models": ModelManager("cpu")},
    )
    yield ex
    F.configure(previous)
