"""Tiny checkpoints for the inpainting tests, written once per session in the real single-file layout:
a plain SD1.5, and inpainting (9-channel UNet) SD1.5 and SDXL models. Engines as in ``tests/sd``."""

from __future__ import annotations

from pathlib import Path

import pytest

from atelier.engine.model_loader import ModelLoader
from atelier.engine.node import Context, JobContext
from atelier.engine.runtime import Engine
from tests.engines import make_engine

CHECKPOINTS = {
    "tiny15.safetensors": ("sd15", False),
    "tiny15-inpaint.safetensors": ("sd15", True),
    "tinyxl-inpaint.safetensors": ("sdxl", True),
}


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from atelier.engine.models.tiny import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("inpaint-models")
    (root / "checkpoints").mkdir()
    for name, (arch, inpaint) in CHECKPOINTS.items():
        write_tiny_checkpoint(arch, root / "checkpoints" / name, seed=0, inpaint=inpaint)  # type: ignore[arg-type]
    return root


@pytest.fixture()
def engine(models_root: Path, tmp_path: Path, shared_models: ModelLoader) -> Engine:
    eng = make_engine(models_root, tmp_path, shared_models)
    return eng


@pytest.fixture()
def ctx() -> Context:
    """A bare node context (CPU) for calling nodes directly."""
    return Context(job=JobContext(id="test"), node_id="n", node_type="test")
