"""Tiny checkpoints and tiny random-weight ControlNets in the layouts users have, written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from atelier.engine.model_loader import ModelLoader
from atelier.engine.runtime import Engine
from tests.engines import make_engine

#: file name -> (arch, writer options)
CONTROLNETS: dict[str, tuple[str, dict]] = {
    "cn15.safetensors": ("sd15", {"layout": "original", "seed": 1}),
    "cn15_b.safetensors": ("sd15", {"layout": "original", "seed": 2}),
    "cn15.pth": ("sd15", {"layout": "original", "seed": 1}),
    "cn15_diffusers.safetensors": ("sd15", {"layout": "diffusers", "seed": 1}),
    "cn15_folder": ("sd15", {"layout": "diffusers_folder", "seed": 1}),
    "cn15_diff.safetensors": ("sd15", {"layout": "original", "seed": 1, "difference": True}),
    "cnxl.safetensors": ("sdxl", {"layout": "original", "seed": 3}),
    "cnxl_b.safetensors": ("sdxl", {"layout": "diffusers", "seed": 4}),
}


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from atelier.engine.models.controlnet_tiny import write_tiny_controlnet
    from atelier.engine.models.tiny import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("models")
    write_tiny_checkpoint("sd15", root / "checkpoints" / "tiny15.safetensors", seed=0)
    write_tiny_checkpoint("sdxl", root / "checkpoints" / "tinyxl.safetensors", seed=0)
    for name, (arch, options) in CONTROLNETS.items():
        write_tiny_controlnet(arch, root / "controlnet" / name, **options)  # type: ignore[arg-type]
    return root


@pytest.fixture()
def engine(models_root: Path, tmp_path: Path, shared_models: ModelLoader) -> Engine:
    return make_engine(models_root, tmp_path, shared_models)
