"""Engines over tiny checkpoints (written once per session in the real single-file layout), each test
with its own embeddings and styles folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from atelier.engine.model_loader import ModelLoader
from atelier.engine.runtime import Engine
from tests.engines import make_engine


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from atelier.engine.models.tiny import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("models")
    (root / "checkpoints").mkdir()
    write_tiny_checkpoint("sd15", root / "checkpoints" / "tiny15.safetensors", seed=0)
    write_tiny_checkpoint("sdxl", root / "checkpoints" / "tinyxl.safetensors", seed=0)
    return root


@pytest.fixture()
def engine(models_root: Path, tmp_path: Path, shared_models: ModelLoader) -> Engine:
    eng = make_engine(models_root, tmp_path, shared_models)
    for kind in ("embeddings", "styles"):
        folder = tmp_path / kind
        folder.mkdir()
        eng.folders.models[kind] = [folder]
    return eng


@pytest.fixture()
def emb_dir(engine: Engine) -> Path:
    return engine.folders.models["embeddings"][0]


@pytest.fixture()
def styles_dir(engine: Engine) -> Path:
    return engine.folders.models["styles"][0]
