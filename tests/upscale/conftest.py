"""A models root with the tiny SD1.5 checkpoint and tiny random-weight upscalers written in real layouts,
and engines over it (one model loader for the session, as in tests/sd)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from atelier.engine.model_loader import ModelLoader
from atelier.engine.runtime import Engine
from tests.engines import make_engine
from tests.upscale import tiny_upscalers as tiny

ESRGAN_X4 = "esrgan_x4.safetensors"
ESRGAN_X4_PTH = "esrgan_x4.pth"
REALESRGAN_X4 = "RealESRGAN_x4plus_tiny.pth"
COMPACT_X2 = "compact_x2.pth"
COMPACT_X4 = "compact_x4.safetensors"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread per test: the CPUs are shared, and two spinning threads per process on two busy
    cores made these tests five to ten times slower (results do not depend on it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from atelier.engine.models.tiny import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("models")
    write_tiny_checkpoint("sd15", root / "checkpoints" / "tiny15.safetensors", seed=0)
    up = root / "upscale_models"
    tiny.write_safetensors(tiny.esrgan(4), up / ESRGAN_X4)
    tiny.write_pth(tiny.esrgan(4), up / ESRGAN_X4_PTH)
    tiny.write_pth(tiny.esrgan(4), up / REALESRGAN_X4, wrap="params_ema", layout="basicsr")
    tiny.write_pth(tiny.compact(2), up / COMPACT_X2)
    tiny.write_safetensors(tiny.compact(4, seed=1), up / COMPACT_X4)
    return root


@pytest.fixture()
def engine(models_root: Path, tmp_path: Path, shared_models: ModelLoader) -> Engine:
    eng = make_engine(models_root, tmp_path, shared_models)
    return eng
