"""A device budget too small for two checkpoints and an upscaler: parts are offloaded and reloaded between
nodes, and the pictures are those of an engine without a budget, bit for bit.

On this CPU machine the device and the host are the same memory, so the test's placement simulates a
device that loses the weights of what is offloaded: it takes every parameter and buffer away (empty
tensors) and gives them back on reload. A node run with a module the budget failed to bring back would
fail or draw another picture."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from atelier.engine.model_loader import ModelLoader
from atelier.engine.runtime import Engine, EngineConfig, build_engine
from tests.engines import make_engine
from tests.sd.vram_workflow import two_checkpoints_and_upscaler, write_models

MIB = 1 << 20


class Stash:
    """Offload takes a module's tensors away (to a stash), reload puts the same tensors back."""

    def __init__(self) -> None:
        self.held: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.moves: list[str] = []

    def offload(self, module: Any) -> None:
        tensors = list(itertools.chain(module.parameters(), module.buffers()))
        assert id(module) not in self.held
        self.held[id(module)] = [(t, t.data) for t in tensors]
        for t in tensors:
            t.data = torch.empty(0, dtype=t.dtype)
        self.moves.append("offload")

    def reload(self, module: Any) -> None:
        for t, data in self.held.pop(id(module)):
            t.data = data
        self.moves.append("reload")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread (as in tests/upscale): two spinning threads per process on two busy cores are slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, models_root: Path) -> Path:
    """The session's tiny SDXL (tests/sd/conftest.py) as the base, a refiner and an upscaler."""
    base = models_root / "checkpoints" / "tinyxl.safetensors"
    return write_models(tmp_path_factory.mktemp("vram_models"), base=base)


def budget_engine(root: Path, tmp_path: Path, mib: float) -> Engine:
    engine = build_engine(
        EngineConfig(
            device="cpu",
            models_dir=root,
            output_dir=tmp_path / "out",
            input_dir=tmp_path / "in",
            temp_dir=tmp_path / "tmp",
            vram_budget_gb=mib / 1024,
        )
    )
    engine.folders.ensure()
    engine.memory.placement = Stash()
    return engine


def pictures(engine: Engine) -> dict[str, torch.Tensor]:
    """Runs the workflow; the decoded pictures of the refiner and of the hires pass."""
    got: dict[str, torch.Tensor] = {}

    def keep(nid: str, _type: str, outputs: tuple[Any, ...]) -> None:
        if nid in ("decode", "final"):
            got[nid] = outputs[0].clone()

    engine.executor.observers.append(keep)
    res = engine.executor.run(two_checkpoints_and_upscaler())
    engine.executor.observers.remove(keep)
    assert res.ok, res.failure
    return got


def test_evictions_and_reloads_between_two_checkpoints_keep_pictures_identical(
    root: Path, tmp_path: Path, shared_models: ModelLoader
) -> None:
    want = pictures(make_engine(root, tmp_path / "plain", shared_models))
    assert want["final"].shape == (1, 128, 128, 3) and want["final"].std() > 0.01  # upscaled, not flat

    engine = budget_engine(root, tmp_path / "budget", 20)  # both SDXL text encoders fit, little else
    stash = engine.memory.placement
    got = pictures(engine)
    assert all(torch.equal(got[k], want[k]) for k in want)
    report = engine.memory.report()
    assert report.offloads >= 4 and report.reloads >= 2 and stash.moves.count("reload") == report.reloads
    assert report.peak <= 20 * MIB and report.models_on_device <= 20 * MIB
    names = {m.name for m in report.modules}
    assert {"base.safetensors:unet", "refiner.safetensors:vae", "compact_x2.pth"} <= names
    assert not any(m.in_use for m in report.modules)  # nodes release what they held
    assert engine.models.loads == 3  # offloaded parts came back by a copy, never a second read

    engine.cache.clear()  # again with every node re-run: parts offloaded at the end come back
    reloads = report.reloads
    again = pictures(engine)
    assert all(torch.equal(again[k], want[k]) for k in want)
    assert engine.memory.reloads > reloads and engine.models.loads == 3


def test_a_budget_too_small_for_what_one_node_needs_fails_that_node_clearly(
    root: Path, tmp_path: Path
) -> None:
    engine = budget_engine(root, tmp_path, 16)  # the two SDXL text encoders need 19.5 MB together
    res = engine.executor.run(two_checkpoints_and_upscaler())
    assert not res.ok and res.failure.node in ("pos", "neg") and res.failure.node_type == "CLIPTextEncode"
    message = res.failure.message
    assert "base.safetensors:text_encoders[" in message and "16.00 MiB" in message
    assert "--vram-budget" in message
    assert not any(m.in_use for m in engine.memory.report().modules)
