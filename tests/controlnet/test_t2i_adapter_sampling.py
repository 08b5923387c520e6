"""T2I-Adapters in sampling, through the real nodes (ControlNetLoader + the ControlNet Apply nodes) on tiny
checkpoints and tiny adapter files: strength, strength 0 bit for bit, start/end ranges, cond/uncond batching,
SD1.x and SDXL, layouts, wrong family."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.engine.models.controlnet import load_controlnet_handle
from atelier.engine.models.handles import load_checkpoint_handles
from atelier.engine.models.t2i_adapter import T2IAdapterHandle
from atelier.engine.runtime import Engine
from atelier.engine.sampling.schedulers import calculate_sigmas
from tests.controlnet.test_controlnet_sampling import CHECKPOINT, STEPS, failure, graph, hint_png, sample

ADAPTER = {"sd15": "t2i15.pth", "sdxl": "t2ixl_folder/diffusion_pytorch_model.safetensors"}
INTRA = "down_intrablock_additional_residuals"


class UnetCalls:
    """Records each UNet forward's timestep and the adapter features it was given (None: none)."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.timesteps: list[float] = []
        self.features: list[list[torch.Tensor] | None] = []
        self._handle = unet.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: Any, args: tuple, kwargs: dict) -> None:
        t = args[1] if len(args) > 1 else kwargs["timestep"]
        self.timesteps.append(float(t.flatten()[0]))
        given = kwargs.get(INTRA)
        self.features.append(None if given is None else [f.clone() for f in given])

    def close(self) -> None:
        self._handle.remove()


def unet_of(engine: Engine, arch: str) -> torch.nn.Module:
    model, _, _ = load_checkpoint_handles(
        engine.models, engine.folders.find_model("checkpoints", CHECKPOINT[arch])
    )
    return model.unet


def adapter_of(engine: Engine, name: str) -> T2IAdapterHandle:
    handle = load_controlnet_handle(engine.models, engine.folders.find_model("controlnet", name))
    assert isinstance(handle, T2IAdapterHandle)
    return handle


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_strength_changes_the_picture_and_zero_is_no_adapter_bit_for_bit(engine: Engine, arch: str) -> None:
    hint_png(engine)
    name = ADAPTER[arch]
    plain = sample(engine, graph(arch, []))
    zero = sample(engine, graph(arch, [{"name": name, "strength": 0.0}]))
    calls = UnetCalls(unet_of(engine, arch))
    try:
        half = sample(engine, graph(arch, [{"name": name, "strength": 0.5}]))
        full = sample(engine, graph(arch, [{"name": name, "strength": 1.0}]))
    finally:
        calls.close()
    assert torch.equal(zero, plain)
    assert (half - plain).abs().mean() > 1e-3
    assert (full - half).abs().mean() > 1e-3
    # the first step's features (same input: same noise, same hint) are the adapter's, scaled by the strength
    first_half, first_full = calls.features[0], calls.features[STEPS]
    assert first_half is not None and first_full is not None
    for a, b in zip(first_half, first_full, strict=True):
        torch.testing.assert_close(a * 2, b)
    # and they are the adapter's own output for the hint at the latent's pixel size
    adapter = adapter_of(engine, name)
    pixels = torch.from_numpy(np.asarray(Image.open(engine.folders.input / "hint.png"), np.float32) / 255)
    direct = adapter.net(pixels.movedim(-1, 0)[None])
    assert len(direct) == len(first_full)
    for got, want in zip(first_full, direct, strict=True):
        assert got.shape[0] == 2  # cond and uncond rows (ControlNetApplyAdvanced conditions both)
        torch.testing.assert_close(got[0], want[0])
        torch.testing.assert_close(got[1], want[0])


def test_apply_conditions_the_positive_rows_only(engine: Engine) -> None:
    hint_png(engine)
    calls = UnetCalls(unet_of(engine, "sd15"))
    try:
        sample(engine, graph("sd15", [{"name": ADAPTER["sd15"], "advanced": False}], batch=2))
    finally:
        calls.close()
    assert len(calls.features) == STEPS  # cond and uncond in one forward per step
    for features in calls.features:
        assert features is not None
        for f in features:
            assert f.shape[0] == 4  # (cond, uncond) x batch 2
            assert f[:2].abs().amax() > 0 and torch.equal(f[2:], torch.zeros_like(f[2:]))


@pytest.mark.parametrize(("start", "end"), [(0.0, 0.5), (0.5, 1.0)])
def test_start_and_end_percent_select_the_steps(engine: Engine, start: float, end: float) -> None:
    hint_png(engine)
    model, _, _ = load_checkpoint_handles(
        engine.models, engine.folders.find_model("checkpoints", CHECKPOINT["sd15"])
    )
    ms = model.sampling
    sigmas = calculate_sigmas(ms, "normal", STEPS)[:-1]
    high, low = ms.percent_to_sigma(start), ms.percent_to_sigma(end)
    expected = [low <= float(s) <= high for s in sigmas]
    assert 0 < sum(expected) < STEPS
    calls = UnetCalls(model.unet)
    try:
        sample(engine, graph("sd15", [{"name": ADAPTER["sd15"], "start": start, "end": end}]))
    finally:
        calls.close()
    assert [f is not None for f in calls.features] == expected


def test_every_layout_of_the_same_adapter_samples_the_same(engine: Engine) -> None:
    hint_png(engine)
    reference = sample(engine, graph("sd15", [{"name": "t2i15.pth"}]))
    for name in ("t2i15_diffusers.safetensors", "t2i15_folder/diffusion_pytorch_model.safetensors"):
        assert torch.equal(sample(engine, graph("sd15", [{"name": name}])), reference), name


def test_an_adapter_and_a_controlnet_stack(engine: Engine) -> None:
    hint_png(engine)
    both = sample(engine, graph("sd15", [{"name": "t2i15.pth"}, {"name": "cn15.safetensors"}]))
    adapter = sample(engine, graph("sd15", [{"name": "t2i15.pth"}]))
    controlnet = sample(engine, graph("sd15", [{"name": "cn15.safetensors"}]))
    assert (both - adapter).abs().mean() > 1e-4 and (both - controlnet).abs().mean() > 1e-4


def test_an_sdxl_adapter_on_an_sd15_model_is_an_error_naming_node_file_and_mismatch(engine: Engine) -> None:
    hint_png(engine)
    message = failure(engine, graph("sd15", [{"name": ADAPTER["sdxl"]}]))
    assert "apply0" in message and "ControlNetApplyAdvanced" in message and "t2ixl_folder" in message
    assert "T2I-Adapter" in message and "sdxl" in message and "sd15" in message
    assert "32ch at 1/2" in message and "32ch at 1/1" in message  # its features vs the model's


def test_an_sdxl_adapter_needs_sides_in_multiples_of_16_pixels(engine: Engine) -> None:
    hint_png(engine, "odd.png", size=(72, 72))
    message = failure(engine, graph("sdxl", [{"name": ADAPTER["sdxl"]}], hint="odd.png", width=72, height=72))
    assert "apply0" in message and "multiples of 16" in message and "72x72" in message
