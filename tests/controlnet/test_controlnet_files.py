"""ControlNet files: every layout loads the weights it was written from, the family comes from the shapes,
and files of other formats are refused with an error naming the format."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from atelier.engine.models.controlnet_files import (
    ControlNetFormatError,
    build_controlnet,
    detect_controlnet,
    read_controlnet_state,
)
from atelier.engine.models.controlnet_tiny import build_tiny_controlnet, write_tiny_controlnet
from atelier.engine.models.errors import CheckpointError


@pytest.mark.parametrize("arch", ["sd15", "sd2", "sdxl"])
@pytest.mark.parametrize(
    ("layout", "name"),
    [("original", "cn.safetensors"), ("original", "cn.pth"), ("diffusers", "cn.safetensors")],
)
def test_each_layout_loads_the_weights_it_was_written_from(
    tmp_path: Path, arch: str, layout: str, name: str
) -> None:
    path = write_tiny_controlnet(arch, tmp_path / name, seed=5, layout=layout)  # type: ignore[arg-type]
    info = detect_controlnet(path)
    assert info.family == arch and info.layout == layout
    net = build_controlnet(info, read_controlnet_state(path, info))
    reference, _ = build_tiny_controlnet(arch, seed=5)  # type: ignore[arg-type]
    got, want = net.state_dict(), reference.state_dict()
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ctx = torch.randn(2, 5, reference.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    hint = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    added = None
    if arch == "sdxl":
        pooled = (
            reference.config.projection_class_embeddings_input_dim
            - 6 * reference.config.addition_time_embed_dim
        )
        added = {
            "text_embeds": torch.randn(2, pooled),
            "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2),
        }
    kw = {
        "encoder_hidden_states": ctx,
        "controlnet_cond": hint,
        "added_cond_kwargs": added,
        "return_dict": False,
    }
    a_down, a_mid = net(x, torch.tensor([500, 500]), **kw)
    b_down, b_mid = reference(x, torch.tensor([500, 500]), **kw)
    assert torch.equal(a_mid, b_mid) and all(torch.equal(a, b) for a, b in zip(a_down, b_down, strict=True))
    assert a_mid.abs().mean() > 1e-3  # the zero convolutions are not zero: strength can matter


def test_a_diffusers_folder_uses_its_config(tmp_path: Path) -> None:
    folder = write_tiny_controlnet("sd15", tmp_path / "cn", seed=5, layout="diffusers_folder")
    for path in (folder, folder / "diffusion_pytorch_model.safetensors"):
        info = detect_controlnet(path)
        assert info.layout == "diffusers_folder" and info.family == "sd15"
        assert info.config["block_out_channels"] == [32, 64]


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ({"lora_controlnet": torch.tensor([]), "input_blocks.0.0.weight": torch.zeros(1)}, "Control-LoRA"),
        ({"adapter.body.0.resnets.0.block1.weight": torch.zeros(1)}, "T2I-Adapter"),
        ({"body.0.block1.weight": torch.zeros(1), "conv_in.weight": torch.zeros(1)}, "T2I-Adapter"),
        (
            {"lllite_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.down.weight": torch.zeros(1)},
            "LLLite",
        ),
        ({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, "Stable Diffusion checkpoint"),
        ({"something.else": torch.zeros(1)}, "not a ControlNet"),
    ],
)
def test_other_formats_are_refused_by_name(tmp_path: Path, keys: dict, named: str) -> None:
    path = tmp_path / "other.safetensors"
    save_file(keys, str(path))
    with pytest.raises(ControlNetFormatError, match=named) as caught:
        detect_controlnet(path)
    assert "other.safetensors" in str(caught.value)


def test_a_truncated_controlnet_is_a_clear_error(tmp_path: Path) -> None:
    path = write_tiny_controlnet("sd15", tmp_path / "cn.safetensors", seed=5)
    from safetensors.torch import load_file

    state = load_file(str(path))
    broken = {k: v for k, v in state.items() if ".input_blocks.4." not in k}
    save_file(broken, str(tmp_path / "broken.safetensors"))
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        info = detect_controlnet(tmp_path / "broken.safetensors")
        build_controlnet(info, read_controlnet_state(tmp_path / "broken.safetensors", info))
