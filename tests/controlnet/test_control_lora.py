"""Control-LoRA: built from a UNet and the file it is the ControlNet written another way (diffusers'
``from_unet`` changed by the same deltas); sampled through ControlNetLoader it matches that ControlNet saved
as a full file; strength 0 is bit for bit no control; DiffControlNetLoader builds it at once; the build is
kept for the following steps and runs; another family and a broken file are clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from atelier.engine.models import control_lora
from atelier.engine.models.control_lora import ControlLoraHandle, build_control_lora, read_control_lora
from atelier.engine.models.control_lora_tiny import build_tiny_control_lora, write_tiny_control_lora
from atelier.engine.models.controlnet import load_controlnet_handle
from atelier.engine.models.controlnet_tiny import tiny_unet
from atelier.engine.models.errors import CheckpointError
from atelier.engine.runtime import Engine
from tests.controlnet.test_controlnet_sampling import failure, graph, hint_png, sample


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_built_from_unet_and_file_it_is_the_controlnet_it_stands_for(tmp_path: Path, arch: str) -> None:
    path = write_tiny_control_lora(arch, tmp_path / "cl.safetensors", seed=2)  # type: ignore[arg-type]
    weights = read_control_lora(path)
    assert weights.rank == 4 and any(k.endswith(".up") for k in weights.tensors)
    assert weights.family == arch
    net = build_control_lora(weights, tiny_unet(arch, 0))  # type: ignore[arg-type]
    reference, _ = build_tiny_control_lora(arch, seed=2)  # type: ignore[arg-type]
    got, want = net.state_dict(), reference.state_dict()
    assert set(got) == set(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-6, msg=key)
    # the deltas matter: the encoder is not the UNet's
    unet = tiny_unet(arch, 0).state_dict()  # type: ignore[arg-type]
    assert not torch.allclose(
        got["down_blocks.0.resnets.0.conv1.weight"], unet["down_blocks.0.resnets.0.conv1.weight"]
    )


def test_a_lora_pair_without_a_layer_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = write_tiny_control_lora("sdxl", tmp_path / "cl.safetensors", seed=2)
    state = load_file(str(path))
    state["input_blocks.99.0.in_layers.2.up"] = torch.zeros(4, 4)
    state["input_blocks.99.0.in_layers.2.down"] = torch.zeros(4, 4)
    save_file(state, str(tmp_path / "broken.safetensors"))
    with pytest.raises(CheckpointError, match="broken.safetensors.*input_blocks.99"):
        build_control_lora(read_control_lora(tmp_path / "broken.safetensors"), tiny_unet("sdxl", 0))


def test_sampled_it_matches_the_full_controlnet_and_strength_zero_is_no_control(engine: Engine) -> None:
    hint_png(engine)
    plain = sample(engine, graph("sdxl", []))
    zero = sample(engine, graph("sdxl", [{"name": "clxl.safetensors", "strength": 0.0}]))
    lora = sample(engine, graph("sdxl", [{"name": "clxl.safetensors"}]))
    full = sample(engine, graph("sdxl", [{"name": "clxl_reference.safetensors"}]))
    assert torch.equal(zero, plain)
    assert (lora - plain).abs().mean() > 1e-3
    torch.testing.assert_close(lora, full, rtol=1e-4, atol=1e-4)


def test_built_once_for_a_model_and_diff_loader_builds_it_at_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    hint_png(engine)
    builds: list[str] = []
    original = control_lora.build_control_lora

    def counting(weights, unet):  # noqa: ANN001, ANN202
        builds.append(weights.path)
        return original(weights, unet)

    monkeypatch.setattr(control_lora, "build_control_lora", counting)
    first = sample(engine, graph("sdxl", [{"name": "clxl.safetensors", "strength": 0.7}]))
    again = sample(engine, graph("sdxl", [{"name": "clxl.safetensors", "strength": 0.9}]))
    assert (
        len(builds) == 1
    )  # the same model: the ControlNet built at the first step serves every step and run
    assert not torch.equal(first, again)
    wf = graph("sdxl", [{"name": "clxl.safetensors", "strength": 0.7}])
    wf["load0"] = {
        "class_type": "DiffControlNetLoader",
        "inputs": {"model": ["ckpt", 0], "control_net_name": "clxl.safetensors"},
    }
    torch.testing.assert_close(sample(engine, wf), first, rtol=1e-5, atol=1e-5)


def test_the_controlnet_loader_gives_a_control_lora_handle(engine: Engine) -> None:
    handle = load_controlnet_handle(
        engine.models, engine.folders.find_model("controlnet", "clxl.safetensors")
    )
    assert isinstance(handle, ControlLoraHandle) and handle.family == "sdxl"


def test_an_sdxl_control_lora_on_an_sd15_model_is_an_error_naming_node_file_and_mismatch(
    engine: Engine,
) -> None:
    hint_png(engine)
    message = failure(engine, graph("sd15", [{"name": "clxl.safetensors"}]))
    assert "apply0" in message and "ControlNetApplyAdvanced" in message and "clxl.safetensors" in message
    assert "Control-LoRA" in message and "sdxl" in message and "sd15" in message
    assert "cross-attention width 96" in message
