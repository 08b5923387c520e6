"""The device budget (engine/memory.py): models and cached outputs share one figure; outputs spill to the
host before the least recently used models are offloaded; models in use by a running node stay; a model
that cannot fit fails with what is needed and what is held. On this CPU machine "device" and "host" are
both the CPU: a recording placement shows which modules were asked to move, and meta tensors stand in for
cached outputs on an accelerator (as in test_executor's spill tests)."""

from __future__ import annotations

import argparse
import gc
from typing import Any

import pytest
import torch

from atelier.engine.cache import OutputCache
from atelier.engine.memory import DeviceBudget, DeviceBudgetError, capacity_from, modules_of
from atelier.engine.registry import Registry
from atelier.engine.runtime import EngineConfig, add_engine_arguments, build_engine, config_from_args

KIB = 1024


class Recorder:
    """A placement that logs the moves (into a log shared with the output cache's spills)."""

    def __init__(self, log: list[tuple[str, str]], names: dict[int, str]) -> None:
        self.log = log
        self.names = names

    def offload(self, module: Any) -> None:
        self.log.append(("offload", self.names[id(module)]))

    def reload(self, module: Any) -> None:
        self.log.append(("reload", self.names[id(module)]))


def linear(kib: int) -> torch.nn.Module:
    """A module of ``kib`` KiB of float32 weights (no bias)."""
    return torch.nn.Linear(kib * KIB // 4, 1, bias=False)


def budget_with(capacity_kib: int, **modules: torch.nn.Module) -> tuple[DeviceBudget, list[Any]]:
    log: list[tuple[str, str]] = []
    names = {id(m): name for name, m in modules.items()}
    budget = DeviceBudget(capacity_kib * KIB, "cpu", placement=Recorder(log, names))
    return budget, log


def test_least_recently_used_models_are_offloaded_and_reloaded_on_use() -> None:
    a, b, c, d = linear(4), linear(4), linear(4), linear(4)
    budget, log = budget_with(12, a=a, b=b, c=c, d=d)
    for name, m in (("a", a), ("b", b), ("c", c)):
        budget.register(m, name)
    assert log == [] and budget.models_on_device == 12 * KIB
    budget.acquire(a)  # a is now more recent than b and c
    budget.register(d, "d")  # a fourth: the least recently used (b) goes to the host
    assert log == [("offload", "b")]
    assert [budget.where(m) for m in (a, b, c, d)] == ["device", "host", "device", "device"]
    budget.acquire(b)  # back on use: c is now the least recently used
    assert log[1:] == [("offload", "c"), ("reload", "b")]
    assert budget.models_on_device <= 12 * KIB and (budget.offloads, budget.reloads) == (2, 1)
    report = budget.report()
    assert [m.name for m in report.modules] == ["b", "d", "a", "c"]  # most recently used first
    assert [m.where for m in report.modules] == ["device", "device", "device", "host"]


def test_an_offloaded_module_called_directly_comes_back_first() -> None:
    a, b = linear(4), linear(4)
    budget, log = budget_with(4, a=a, b=b)
    budget.register(a, "a")
    budget.register(b, "b")
    assert budget.where(a) == "host"
    x = torch.ones(1, 1024)
    assert torch.equal(a(x), x @ a.weight.T)  # the pre-forward hook reloaded it (and moved b out)
    assert budget.where(a) == "device" and budget.where(b) == "host"
    assert log == [("offload", "a"), ("offload", "b"), ("reload", "a")]


def test_cached_outputs_spill_to_the_host_before_a_model_is_offloaded() -> None:
    a, b, c = linear(4), linear(4), linear(8)
    budget, log = budget_with(12, a=a, b=b, c=c)

    def to_host(t: torch.Tensor) -> torch.Tensor:
        log.append(("spill", str(t.numel() * 4 // KIB)))
        return torch.zeros(t.shape, dtype=t.dtype)

    cache = OutputCache(max_device_bytes=None, spill=to_host)
    budget.attach(cache)
    budget.register(a, "a")
    cache.put("x", (torch.empty(KIB, device="meta"),))  # 4 KiB of outputs on the device
    cache.put("y", (torch.empty(KIB, device="meta"),))
    assert cache.device_bytes == 8 * KIB and log == []
    cache.put("z", (torch.empty(KIB, device="meta"),))  # over 12 KiB with the model: x spills
    assert log == [("spill", "4")] and cache.device_bytes == 8 * KIB
    budget.register(b, "b")  # room for b: outputs go first (y), the model a stays
    assert log[1:] == [("spill", "4")] and budget.where(a) == "device"
    assert cache.device_bytes + budget.models_on_device == 12 * KIB
    budget.register(c, "c")  # 8 KiB: the last output spills, then the least recently used model goes
    assert log[2:] == [("spill", "4"), ("offload", "a")]
    assert cache.device_bytes == 0 and budget.spilled_for_models == 8 * KIB
    assert cache.stats().spills == 3 and cache.stats().entries == 3  # spilled, never dropped


def test_a_node_keeps_its_models_and_a_model_that_cannot_fit_fails_clearly() -> None:
    a, b = linear(8), linear(8)
    budget, log = budget_with(12, a=a, b=b)
    budget.register(a, "ckpt.safetensors:unet")
    budget.register(b, "other.safetensors:vae")  # only one fits: a goes
    assert budget.where(a) == "host"
    with budget.scope():
        budget.acquire({"model": a})  # a node handed a: b makes room
        assert budget.report().modules[0].in_use
        with pytest.raises(DeviceBudgetError) as err:
            budget.acquire([b])  # a is in use by this node: b cannot come
    message = str(err.value)
    assert "other.safetensors:vae need 8.00 KiB" in message and "12.00 KiB" in message
    assert "in use by the running node: ckpt.safetensors:unet (8.00 KiB)" in message
    assert "--vram-budget" in message
    budget.acquire(b)  # the node finished: a may go now
    assert budget.where(b) == "device" and budget.where(a) == "host"
    assert log == [("offload", "a"), ("offload", "b"), ("reload", "a"), ("offload", "a"), ("reload", "b")]


def test_modules_are_found_in_handles_and_forgotten_when_freed() -> None:
    class Loaded:
        def __init__(self) -> None:
            self.unet, self.vae = linear(1), linear(1)

        def __atelier_modules__(self):
            yield "unet", self.unet
            yield "vae", self.vae

    loaded = Loaded()
    assert [(n, m) for n, m in modules_of({"x": [1, (loaded,)]})] == [
        ("[x][1][0].unet", loaded.unet),
        ("[x][1][0].vae", loaded.vae),
    ]
    assert list(modules_of(torch.ones(3))) == [] and list(modules_of("text")) == []
    budget = DeviceBudget(None, "cpu")  # no capacity: accounts only, never moves
    budget.register(loaded, "x.safetensors")
    assert [m.name for m in budget.report().modules] == ["x.safetensors:vae", "x.safetensors:unet"]
    assert budget.models_on_device == 2 * KIB and budget.room_for_outputs(OutputCache()) is None
    del loaded
    gc.collect()
    assert budget.report().modules == [] and budget.models_on_device == 0


def test_the_budget_comes_from_the_flag_the_environment_or_the_device(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("ATELIER_VRAM_BUDGET", raising=False)
    assert capacity_from(None, "cpu") is None  # no budget on the CPU unless set
    assert capacity_from(1.5, "cpu") == 3 << 29 and capacity_from(0, "cuda") is None
    monkeypatch.setenv("ATELIER_VRAM_BUDGET", "0.25")
    assert capacity_from(None, "cpu") == 1 << 28 and capacity_from(2, "cpu") == 2 << 30
    monkeypatch.setenv("ATELIER_VRAM_BUDGET", "lots")
    with pytest.raises(ValueError, match="ATELIER_VRAM_BUDGET='lots'"):
        capacity_from(None, "cpu")
    monkeypatch.delenv("ATELIER_VRAM_BUDGET")
    p = argparse.ArgumentParser()
    add_engine_arguments(p)
    cfg = config_from_args(p.parse_args(["--vram-budget", "0.5", "--device", "cpu"]))
    assert cfg.vram_budget_gb == 0.5
    engine = build_engine(cfg.model_copy(update={"output_dir": tmp_path}), plugins=[], registry=Registry())
    other = build_engine(EngineConfig(device="cpu", output_dir=tmp_path), plugins=[], registry=Registry())
    assert engine.memory.capacity == 1 << 29 and other.memory.capacity is None  # one budget per engine
    assert engine.models.budget is engine.memory and engine.cache.device_room is not None
    assert other.memory is not engine.memory


def test_the_default_placement_moves_modules_by_device_name_outside_inference_mode() -> None:
    moves: list[tuple[str, str, bool]] = []

    class Recorded(torch.nn.Linear):
        """Records where it is asked to go (and stays on the CPU: there is no second device here)."""

        def to(self, *args: Any, **kwargs: Any) -> Recorded:
            moves.append((self.name, str(args[0]), torch.is_inference_mode_enabled()))
            return self

    a, b = Recorded(1024, 1, bias=False), Recorded(1024, 1, bias=False)
    a.name, b.name = "a", "b"
    budget = DeviceBudget(4 * KIB, "cuda:1")  # room for one
    budget.register(a, "a")
    budget.register(b, "b")
    assert budget.where(a) == budget.where(b) == "host"  # their weights are on the CPU, not on cuda:1
    budget.acquire(a)
    assert moves == [("a", "cuda:1", False)]
    with torch.inference_mode():  # as the UNet's call is made: the hook brings b, a goes
        b(torch.ones(1, 1024))
    assert moves[1:] == [("a", "cpu", False), ("b", "cuda:1", False)]


def test_engines_sharing_a_model_loader_share_its_budget_with_both_caches() -> None:
    a = linear(4)
    budget, log = budget_with(12, a=a)
    first, second = (
        OutputCache(spill=lambda t: torch.zeros(t.shape)),
        OutputCache(spill=lambda t: torch.zeros(t.shape)),
    )
    budget.attach(first)
    budget.attach(second)
    budget.register(a, "a")
    first.put("x", (torch.empty(KIB, device="meta"),))  # 4 KiB
    assert second.device_room() == 4 * KIB  # 12 less the model and the other cache
    second.put("y", (torch.empty(2 * KIB, device="meta"),))  # 8 KiB: over, but the newest entry is kept
    assert budget.outputs_on_device == 12 * KIB
    budget.make_room(4 * KIB)  # the larger cache spills first; the model stays
    assert second.device_bytes == 0 and first.device_bytes == 4 * KIB and log == []
    del second
    gc.collect()
    assert budget.outputs_on_device == 4 * KIB  # a cache dropped with its engine is forgotten
