"""T2I-Adapter files: every layout loads the weights it was written from, the original layout's names mean
what TencentARC's network makes of them (checked by running that network by hand), the family and kind
come from the shapes, and what diffusers' classes cannot hold is refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from atelier.engine.models.controlnet_files import detect_controlnet
from atelier.engine.models.errors import CheckpointError
from atelier.engine.models.info import family_config
from atelier.engine.models.t2i_adapter import T2IAdapterHandle, adapter_points, unet_points
from atelier.engine.models.t2i_adapter_files import (
    build_t2i_adapter,
    is_t2i_adapter_file,
    read_t2i_adapter,
)
from atelier.engine.models.t2i_adapter_tiny import build_tiny_t2i_adapter, write_tiny_t2i_adapter

HINT = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kind", ["sd15", "sdxl", "sd15_light"])
@pytest.mark.parametrize(
    ("layout", "name"),
    [
        ("original", "a.pth"),
        ("original", "a.safetensors"),
        ("diffusers", "a.safetensors"),
        ("diffusers_folder", "a"),
    ],
)
def test_each_layout_loads_the_weights_it_was_written_from(
    tmp_path: Path, kind: str, layout: str, name: str
) -> None:
    path = write_tiny_t2i_adapter(kind, tmp_path / name, seed=4, layout=layout)  # type: ignore[arg-type]
    if layout == "diffusers_folder":
        path = path / "diffusion_pytorch_model.safetensors"  # as the model list names it
    assert is_t2i_adapter_file(path)
    info, state = read_t2i_adapter(path)
    assert info.layout == layout
    assert info.family == ("sdxl" if kind == "sdxl" else "sd15")
    assert (
        info.adapter_type
        == {"sd15": "full_adapter", "sdxl": "full_adapter_xl", "sd15_light": "light_adapter"}[kind]
    )
    net = build_t2i_adapter(info, state)
    reference = build_tiny_t2i_adapter(kind, seed=4)  # type: ignore[arg-type]
    got, want = net.state_dict(), reference.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    features = net(HINT)
    assert [tuple(f.shape[1:2]) + (64 // f.shape[-1],) for f in features] == [
        (c, 8 * s) for c, s in adapter_points(info.config)
    ]
    assert all(f.abs().mean() > 1e-3 for f in features)


def _original_full(state: dict[str, torch.Tensor], x: torch.Tensor, unshuffle: int, downs: set[int]) -> list:
    """TencentARC's full adapter (sk=True, ksize=1, average-pool downsampling), run on original names:
    ``downs`` are the levels whose first block halves the size. Two res blocks a level."""
    x = F.conv2d(F.pixel_unshuffle(x, unshuffle), state["conv_in.weight"], state["conv_in.bias"], padding=1)
    levels = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("body.")) // 2
    out = []
    for level in range(levels):
        for j in range(2):
            n = 2 * level + j
            if j == 0 and level in downs:
                x = F.avg_pool2d(x, 2, ceil_mode=True)
            if f"body.{n}.in_conv.weight" in state:
                x = F.conv2d(x, state[f"body.{n}.in_conv.weight"], state[f"body.{n}.in_conv.bias"])
            h = F.relu(
                F.conv2d(x, state[f"body.{n}.block1.weight"], state[f"body.{n}.block1.bias"], padding=1)
            )
            x = x + F.conv2d(h, state[f"body.{n}.block2.weight"], state[f"body.{n}.block2.bias"])
        out.append(x)
    return out


@pytest.mark.parametrize(("kind", "unshuffle", "downs"), [("sd15", 8, {1}), ("sdxl", 16, set())])
def test_original_names_mean_what_tencentarc_network_makes_of_them(
    tmp_path: Path, kind: str, unshuffle: int, downs: set[int]
) -> None:
    path = write_tiny_t2i_adapter(kind, tmp_path / "a.safetensors", seed=6, layout="original")  # type: ignore[arg-type]
    original = load_file(str(path))
    assert "body.2.in_conv.weight" in original and "body.3.block2.weight" in original
    info, state = read_t2i_adapter(path)
    net = build_t2i_adapter(info, state)
    with torch.no_grad():
        for got, want in zip(net(HINT), _original_full(original, HINT, unshuffle, downs), strict=True):
            torch.testing.assert_close(got, want)


def test_light_original_names_map_level_by_level(tmp_path: Path) -> None:
    path = write_tiny_t2i_adapter("sd15_light", tmp_path / "a.safetensors", seed=6, layout="original")
    original = load_file(str(path))
    _, state = read_t2i_adapter(path)
    pairs = {
        "body.0.in_conv.weight": "adapter.body.0.in_conv.weight",
        "body.2.out_conv.bias": "adapter.body.2.out_conv.bias",
        "body.1.body.1.block2.weight": "adapter.body.1.resnets.1.block2.weight",
    }
    for old, new in pairs.items():
        assert torch.equal(original[old], state[new])


def test_a_one_channel_adapter_gets_the_mean_of_the_hint_channels(tmp_path: Path) -> None:
    path = write_tiny_t2i_adapter("sd15", tmp_path / "canny.pth", seed=2, in_channels=1)
    info, state = read_t2i_adapter(path)
    assert info.config["in_channels"] == 1
    handle = T2IAdapterHandle(build_t2i_adapter(info, state), info)
    features = handle.features(HINT, 0.5)
    direct = handle.net(HINT.mean(dim=1, keepdim=True))
    for a, b in zip(features, direct, strict=True):
        torch.testing.assert_close(a, b * 0.5)


def test_fit_is_decided_by_the_unets_injection_points() -> None:
    full15 = family_config("sd15", "t2i_adapter")
    fullxl = family_config("sdxl", "t2i_adapter")
    light15 = {**full15, "adapter_type": "light_adapter", "channels": [320, 640, 1280]}
    sd15, sdxl, sd2 = (family_config(f, "unet") for f in ("sd15", "sdxl", "sd2"))
    handle = lambda config: T2IAdapterHandle(None, type("I", (), {"config": config})())  # noqa: E731
    for config in (full15, light15):
        assert handle(config).mismatch(sd15) is None and handle(config).mismatch(sd2) is None
        assert handle(config).mismatch(sdxl) is not None
    assert handle(fullxl).mismatch(sdxl) is None and handle(fullxl).mismatch(sd15) is not None
    # the real SDXL UNet takes the fourth feature after its middle block
    assert unet_points(sdxl)[-1] == adapter_points(fullxl)[-1]


def test_an_unsupported_original_variant_is_refused_by_name(tmp_path: Path) -> None:
    path = write_tiny_t2i_adapter("sd15", tmp_path / "a.safetensors", seed=1)
    state = load_file(str(path))
    state["body.0.skep.weight"] = torch.zeros(32, 32, 1, 1)
    save_file(state, str(tmp_path / "skep.safetensors"))
    with pytest.raises(CheckpointError, match="skep.safetensors.*skip convolutions"):
        read_t2i_adapter(tmp_path / "skep.safetensors")


def test_a_controlnet_is_not_taken_for_an_adapter_and_the_controlnet_reader_names_adapters(
    tmp_path: Path,
) -> None:
    from atelier.engine.models.controlnet_tiny import write_tiny_controlnet

    assert not is_t2i_adapter_file(write_tiny_controlnet("sd15", tmp_path / "cn.safetensors", seed=1))
    adapter = write_tiny_t2i_adapter("sd15", tmp_path / "t2i.safetensors", seed=1)
    with pytest.raises(CheckpointError, match="T2I-Adapter"):
        detect_controlnet(adapter)
