"""Tiny checkpoints written once per session in the real single-file layout, and engines over them.

Every test gets its own engine (folders, cache, executor) from the composition root, but they share one
model loader for the session: loaded weights are read-only to nodes (LoRAs patch them only inside a use
and restore them bit for bit), so reloading a checkpoint per test would only cost time.
"""

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
    (root / "loras").mkdir()
    return root


@pytest.fixture()
def engine(models_root: Path, tmp_path: Path, shared_models: ModelLoader) -> Engine:
    eng = make_engine(models_root, tmp_path, shared_models)
    return eng


@pytest.fixture()
def engine_env(engine: Engine):
    """The executor of a fresh engine (most tests need only that)."""
    return engine.executor
