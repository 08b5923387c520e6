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
#: T2I-Adapters in models/controlnet: file name -> (kind, writer options)
T2I_ADAPTERS: dict[str, tuple[str, dict]] = {
    "t2i15.pth": ("sd15", {"layout": "original", "seed": 1}),
    "t2i15_diffusers.safetensors": ("sd15", {"layout": "diffusers", "seed": 1}),
    "t2i15_folder": ("sd15", {"layout": "diffusers_folder", "seed": 1}),
    "t2ixl_folder": ("sdxl", {"layout": "diffusers_folder", "seed": 2}),
}
#: Control-LoRAs for the tiny checkpoints (seed 0): file name -> (arch, seed); each written with the full
#: ControlNet it stands for beside it, as ``<stem>_reference.safetensors``
CONTROL_LORAS: dict[str, tuple[str, int]] = {"clxl.safetensors": ("sdxl", 5)}


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from atelier.engine.models.control_lora_tiny import (
        write_tiny_control_lora,
        write_tiny_control_lora_reference,
    )
    from atelier.engine.models.controlnet_tiny import write_tiny_controlnet
    from atelier.engine.models.t2i_adapter_tiny import write_tiny_t2i_adapter
    from atelier.engine.models.tiny import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("models")
    write_tiny_checkpoint("sd15", root / "checkpoints" / "tiny15.safetensors", seed=0)
    write_tiny_checkpoint("sdxl", root / "checkpoints" / "tinyxl.safetensors", seed=0)
    for name, (arch, options) in CONTROLNETS.items():
        write_tiny_controlnet(arch, root / "controlnet" / name, **options)  # type: ignore[arg-type]
    for name, (kind, options) in T2I_ADAPTERS.items():
        write_tiny_t2i_adapter(kind, root / "controlnet" / name, **options)  # type: ignore[arg-type]
    for name, (arch, seed) in CONTROL_LORAS.items():
        write_tiny_control_lora(arch, root / "controlnet" / name, seed=seed)  # type: ignore[arg-type]
        reference = root / "controlnet" / name.replace(".safetensors", "_reference.safetensors")
        write_tiny_control_lora_reference(arch, reference, seed=seed)  # type: ignore[arg-type]
    return root


@pytest.fixture()
def engine(models_root: Path, tmp_path: Path, shared_models: ModelLoader) -> Engine:
    return make_engine(models_root, tmp_path, shared_models)
