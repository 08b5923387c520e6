"""What the model browser reads from a file's header (engine/models/browse.py): families from conditioning
widths and from metadata, kohya's tag frequencies parsed defensively, preview names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from atelier.engine.models.browse import (
    describe_file,
    family_from_metadata,
    preview_candidates,
    tag_frequency,
)
from atelier.engine.models.tiny import build_tiny_models
from tests.models.test_models_formats import _save_diffusers_folder


@pytest.mark.parametrize(
    ("metadata", "family"),
    [
        ({"modelspec.architecture": "stable-diffusion-v1/lora"}, "sd15"),
        ({"modelspec.architecture": "stable-diffusion-v2-768-v/lora"}, "sd2"),
        ({"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}, "sdxl"),
        ({"modelspec.architecture": "stable-diffusion-xl-v1-refiner"}, "sdxl_refiner"),
        ({"ss_base_model_version": "sdxl_base_v1-0"}, "sdxl"),
        ({"ss_base_model_version": "sd_v2_768_v"}, "sd2"),
        ({"ss_base_model_version": "sd_v1"}, "sd15"),
        ({"ss_v2": "True"}, "sd2"),
        ({"ss_v2": "False", "ss_network_module": "networks.lora"}, "sd15"),
        ({"ss_v2": "False"}, None),  # not a kohya network: says nothing
        ({"modelspec.architecture": "flux-1-dev/lora"}, None),
        ({}, None),
    ],
)
def test_family_from_metadata(metadata: dict[str, str], family: str | None) -> None:
    assert family_from_metadata(metadata) == family


def test_tag_frequency_sums_folders_ranks_and_skips_what_does_not_parse() -> None:
    raw = {"a": {"x": 2, "y": 5, "bad": "many", "flag": True, "neg": -3}, "b": {"x": 4, " ": 9}, "c": ["z"]}
    assert tag_frequency(json.dumps(raw)) == [("x", 6), ("y", 5)]
    assert tag_frequency(json.dumps(json.dumps({"a": {"w": 1}}))) == [("w", 1)]  # encoded twice
    for bad in ("", "{", "[1, 2]", "null", '"just text"', "12"):
        assert tag_frequency(bad) == []


def test_preview_candidates_keep_the_subfolder() -> None:
    assert preview_candidates("sub/x.v2.safetensors")[:2] == ["sub/x.v2.preview.png", "sub/x.v2.preview.jpg"]
    assert "sub/x.v2.webp" in preview_candidates("sub/x.v2.safetensors")


@pytest.mark.parametrize(
    ("key", "shape", "family"),
    [
        ("control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", (320, 768), "sd15"),
        ("down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight", (640, 2048), "sdxl"),
        ("control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", (320, 1024), "sd2"),
        ("control_model.input_blocks.0.0.weight", (320, 4, 3, 3), "unknown"),
    ],
)
def test_controlnet_family_from_its_context_width(
    tmp_path: Path, key: str, shape: tuple[int, ...], family: str
) -> None:
    path = tmp_path / "cn.safetensors"
    save_file({key: torch.zeros(shape)}, str(path))
    info = describe_file("controlnet", path)
    assert (info.family, info.error) == (family, None)
    assert info.family_source == ("" if family == "unknown" else "tensors")


def test_text_encoder_only_lora_and_upscaler(tmp_path: Path) -> None:
    path = tmp_path / "te.safetensors"
    save_file(
        {"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(2, 1024)}, str(path)
    )
    assert describe_file("loras", path).family == "sd2"
    up = tmp_path / "x4.pth"
    torch.save({"w": torch.zeros(1)}, up)
    info = describe_file("upscale_models", up)
    assert (info.family, info.format, info.error) == (None, "torch", None)


def test_diffusers_folder_family_from_its_configs(tmp_path: Path) -> None:
    folder = tmp_path / "xl-diffusers"
    _save_diffusers_folder(build_tiny_models("sdxl", seed=1), folder)
    info = describe_file("checkpoints", folder)
    assert (info.family, info.format, info.family_source, info.error) == (
        "sdxl",
        "diffusers",
        "configs",
        None,
    )
    (folder / "unet" / "config.json").write_text("{not json")
    info = describe_file("checkpoints", folder)
    assert info.family == "unknown" and info.error and "config.json" in info.error
