"""kohya / LDM / PEFT LoRA files mapped onto tiny diffusers UNets and transformers CLIP models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
from safetensors.torch import save_file
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from atelier.engine.models.lora import (
    LoraFormatError,
    build_lora_patches,
    load_lora,
    lora_key_map,
    read_lora_file,
    unet_ldm_names,
)
from atelier.engine.models.patches import patched


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def bitwise_equal(module: torch.nn.Module, saved: dict[str, torch.Tensor]) -> bool:
    state = module.state_dict()
    return all(torch.equal(state[k], saved[k]) for k in saved)


class LoraWriter:
    """Builds a kohya-format state dict and remembers the expected delta of each entry."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.tensors: dict[str, torch.Tensor] = {}
        self.expected: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor, float]] = {}

    def add(
        self,
        key: str,
        target: tuple[str, str] | None,
        weight_shape: tuple[int, ...],
        rank: int,
        alpha: float | None,
        *,
        up_key: str = "lora_up.weight",
        down_key: str = "lora_down.weight",
    ) -> None:
        out_ch, in_ch, *kernel = weight_shape
        conv = bool(kernel)
        down = torch.randn(rank, in_ch, *kernel, generator=self.generator) * 0.5
        up = torch.randn(out_ch, rank, *([1, 1] if conv else []), generator=self.generator) * 0.5
        self.tensors[f"{key}.{down_key}"] = down.to(torch.float16)
        self.tensors[f"{key}.{up_key}"] = up.to(torch.float16)
        if alpha is not None:
            self.tensors[f"{key}.alpha"] = torch.tensor(alpha)
        if target is not None:
            scale = (alpha if alpha is not None else rank) / rank
            self.expected[target] = (up.to(torch.float16).float(), down.to(torch.float16).float(), scale)

    def expected_weight(self, target: tuple[str, str], base: torch.Tensor, strength: float) -> torch.Tensor:
        up, down, scale = self.expected[target]
        if down.ndim == 4:
            delta = torch.einsum("or,rihw->oihw", up[:, :, 0, 0], down)
        else:
            delta = torch.einsum("or,ri->oi", up, down)
        return base + delta.reshape(base.shape) * scale * strength

    def save(self, path: Path) -> Path:
        save_file(self.tensors, str(path))
        return path


def param(model: torch.nn.Module, name: str) -> torch.Tensor:
    return model.get_parameter(name)


def unet_forward(unet: UNet2DConditionModel) -> torch.Tensor:
    torch.manual_seed(0)
    with torch.no_grad():
        return unet(torch.randn(1, 4, 8, 8), 10, encoder_hidden_states=torch.randn(1, 77, 32)).sample


SD1_Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
SD1_CONV = "down_blocks.0.resnets.0.conv1.weight"
SD1_PROJ_IN = "down_blocks.0.attentions.0.proj_in.weight"
SD1_UP_CONV = "up_blocks.0.upsamplers.0.conv.weight"
TE_Q = "encoder.layers.0.self_attn.q_proj.weight"
TE_FC1 = "encoder.layers.1.mlp.fc1.weight"


def test_kohya_sd1_diffusers_names(
    tmp_path: Path, unet_sd1: UNet2DConditionModel, clip_l: CLIPTextModel
) -> None:
    w = LoraWriter(0)
    w.add(
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
        ("unet", SD1_Q),
        (32, 32),
        4,
        2.0,
    )
    w.add("lora_unet_down_blocks_0_resnets_0_conv1", ("unet", SD1_CONV), (32, 32, 3, 3), 4, 8.0)
    w.add(
        "lora_unet_down_blocks_0_attentions_0_proj_in", ("unet", SD1_PROJ_IN), (32, 32), 2, 1.0
    )  # linear on a 1x1 conv
    w.add(
        "lora_unet_output_blocks_1_1_conv", ("unet", SD1_UP_CONV), (64, 64, 3, 3), 3, 1.5
    )  # LDM name, same file
    w.add("lora_te_text_model_encoder_layers_0_self_attn_q_proj", ("te1", TE_Q), (32, 32), 4, 1.0)
    w.add("lora_te_text_model_encoder_layers_1_mlp_fc1", ("te1", TE_FC1), (64, 32), 8, None)
    w.add("lora_unet_down_blocks_9_attentions_0_proj_in", None, (32, 32), 2, 1.0)
    w.tensors["bundle_emb.foo.string_to_param.*"] = torch.zeros(1, 32)
    path = w.save(tmp_path / "sd1.safetensors")

    patches = load_lora(path, unet=unet_sd1, te1=clip_l, strength_model=0.8, strength_clip=1.3)
    assert set(patches.unet) == {SD1_Q, SD1_CONV, SD1_PROJ_IN, SD1_UP_CONV}
    assert set(patches.te1) == {TE_Q, TE_FC1} and not patches.te2
    assert set(patches.unmatched) == {
        "lora_unet_down_blocks_9_attentions_0_proj_in",
        "bundle_emb.foo.string_to_param.*",
    }
    assert patches.problems == () and patches.count == 6

    unet_saved, clip_saved = snapshot(unet_sd1), snapshot(clip_l)
    base_out = unet_forward(unet_sd1)
    ids = torch.tensor([[49406, 320, 49407] + [49407] * 74])
    base_text = clip_l(input_ids=ids).last_hidden_state
    with patched(unet_sd1, patches.unet), patched(clip_l, patches.te1):
        for name in (SD1_Q, SD1_CONV, SD1_PROJ_IN, SD1_UP_CONV):
            expected = w.expected_weight(("unet", name), unet_saved[name], 0.8)
            torch.testing.assert_close(param(unet_sd1, name).detach(), expected, rtol=1e-5, atol=1e-5)
        for name in (TE_Q, TE_FC1):
            expected = w.expected_weight(("te1", name), clip_saved[name], 1.3)
            torch.testing.assert_close(param(clip_l, name).detach(), expected, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(unet_forward(unet_sd1), base_out)
        assert not torch.allclose(clip_l(input_ids=ids).last_hidden_state, base_text)
    assert bitwise_equal(unet_sd1, unet_saved) and bitwise_equal(clip_l, clip_saved)
    assert torch.equal(unet_forward(unet_sd1), base_out)


def test_kohya_sdxl_ldm_names(
    tmp_path: Path,
    unet_sdxl: UNet2DConditionModel,
    clip_l: CLIPTextModel,
    clip_g: CLIPTextModelWithProjection,
) -> None:
    q = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    ff = "down_blocks.2.attentions.1.transformer_blocks.1.ff.net.0.proj.weight"
    conv = "up_blocks.0.upsamplers.0.conv.weight"
    skip = "down_blocks.2.resnets.0.conv_shortcut.weight"
    g_q = "text_model.encoder.layers.2.self_attn.v_proj.weight"
    w = LoraWriter(1)
    w.add("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k", ("unet", q), (32, 80), 4, 1.0)
    w.add("lora_unet_input_blocks_8_1_transformer_blocks_1_ff_net_0_proj", ("unet", ff), (512, 64), 4, 3.0)
    w.add("lora_unet_output_blocks_2_2_conv", ("unet", conv), (64, 64, 3, 3), 2, 0.5)
    w.add("lora_unet_input_blocks_7_0_skip_connection", ("unet", skip), (64, 32, 1, 1), 2, 2.0)
    w.add("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", ("te1", TE_Q), (32, 32), 4, 4.0)
    w.add("lora_te2_text_model_encoder_layers_2_self_attn_v_proj", ("te2", g_q), (48, 48), 4, 2.0)
    path = w.save(tmp_path / "sdxl.safetensors")

    patches = load_lora(path, unet=unet_sdxl, te1=clip_l, te2=clip_g, strength_model=1.0, strength_clip=0.5)
    assert patches.unmatched == () and patches.problems == ()
    assert (
        set(patches.unet) == {q, ff, conv, skip} and set(patches.te1) == {TE_Q} and set(patches.te2) == {g_q}
    )
    saved = {id(m): snapshot(m) for m in (unet_sdxl, clip_l, clip_g)}
    with patched(unet_sdxl, patches.unet), patched(clip_l, patches.te1), patched(clip_g, patches.te2):
        for model, target, name, strength in (
            (unet_sdxl, "unet", q, 1.0),
            (unet_sdxl, "unet", ff, 1.0),
            (unet_sdxl, "unet", conv, 1.0),
            (unet_sdxl, "unet", skip, 1.0),
            (clip_l, "te1", TE_Q, 0.5),
            (clip_g, "te2", g_q, 0.5),
        ):
            expected = w.expected_weight((target, name), saved[id(model)][name], strength)
            torch.testing.assert_close(param(model, name).detach(), expected, rtol=1e-5, atol=1e-5)
    for model in (unet_sdxl, clip_l, clip_g):
        assert bitwise_equal(model, saved[id(model)])


def test_known_sdxl_kohya_names(unet_sdxl: UNet2DConditionModel) -> None:
    table = lora_key_map(unet_sdxl)
    known = {
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q": "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
        "lora_unet_input_blocks_8_1_transformer_blocks_1_ff_net_2": "down_blocks.2.attentions.1.transformer_blocks.1.ff.net.2",
        "lora_unet_input_blocks_3_0_op": "down_blocks.0.downsamplers.0.conv",
        "lora_unet_input_blocks_7_0_emb_layers_1": "down_blocks.2.resnets.0.time_emb_proj",
        "lora_unet_middle_block_1_proj_in": "mid_block.attentions.0.proj_in",
        "lora_unet_middle_block_2_out_layers_3": "mid_block.resnets.1.conv2",
        "lora_unet_output_blocks_0_1_transformer_blocks_1_attn2_to_out_0": "up_blocks.0.attentions.0.transformer_blocks.1.attn2.to_out.0",
        "lora_unet_output_blocks_2_2_conv": "up_blocks.0.upsamplers.0.conv",
        "lora_unet_output_blocks_5_2_conv": "up_blocks.1.upsamplers.0.conv",
        "lora_unet_output_blocks_8_0_in_layers_2": "up_blocks.2.resnets.2.conv1",
        "lora_unet_label_emb_0_0": "add_embedding.linear_1",
        "lora_unet_time_embed_2": "time_embedding.linear_2",
        "lora_unet_input_blocks_0_0": "conv_in",
        "lora_unet_out_2": "conv_out",
    }
    for kohya, module in known.items():
        assert table[kohya] == ("unet", f"{module}.weight"), kohya


@pytest.mark.parametrize("make", ["sd1", "sdxl"])
def test_ldm_names_round_trip_through_diffusers(
    make: str, unet_sd1: UNet2DConditionModel, unet_sdxl: UNet2DConditionModel
) -> None:
    """Our diffusers->LDM names, fed to diffusers' own LDM->diffusers converter, give the model back."""
    unet = unet_sd1 if make == "sd1" else unet_sdxl
    names = unet_ldm_names(unet)
    state = unet.state_dict()
    ldm = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        ldm[f"model.diffusion_model.{names[module]}.{leaf}"] = value
    converted = convert_ldm_unet_checkpoint(ldm, dict(unet.config))
    assert converted.keys() == state.keys()
    assert all(torch.equal(converted[k], state[k]) for k in state)


def test_peft_and_tucker_keys(unet_sd1: UNet2DConditionModel, clip_l: CLIPTextModel) -> None:
    g = torch.Generator().manual_seed(5)
    sd = {
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v.lora_A.weight": torch.randn(
            2, 32, generator=g
        ),
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v.lora_B.weight": torch.randn(
            32, 2, generator=g
        ),
        "text_encoder.text_model.encoder.layers.0.mlp.fc2.lora_A.weight": torch.randn(2, 64, generator=g),
        "text_encoder.text_model.encoder.layers.0.mlp.fc2.lora_B.weight": torch.randn(32, 2, generator=g),
        "lora_unet_down_blocks_0_resnets_0_conv2.lora_down.weight": torch.randn(3, 32, 1, 1, generator=g),
        "lora_unet_down_blocks_0_resnets_0_conv2.lora_mid.weight": torch.randn(3, 3, 3, 3, generator=g),
        "lora_unet_down_blocks_0_resnets_0_conv2.lora_up.weight": torch.randn(32, 3, 1, 1, generator=g),
        "lora_unet_down_blocks_0_resnets_0_conv2.alpha": torch.tensor(6.0),
    }
    patches = build_lora_patches(sd, unet=unet_sd1, te1=clip_l)
    assert patches.unmatched == () and patches.problems == ()
    assert set(patches.unet) == {
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v.weight",
        "down_blocks.0.resnets.0.conv2.weight",
    }
    assert set(patches.te1) == {"encoder.layers.0.mlp.fc2.weight"}
    (tucker,) = patches.unet["down_blocks.0.resnets.0.conv2.weight"]
    assert tucker.mid is not None and tucker.scale == 2.0


def test_skips_shape_mismatches_missing_targets_and_zero_strength(
    unet_sd1: UNet2DConditionModel, clip_l: CLIPTextModel
) -> None:
    sd = {
        "lora_unet_conv_in.lora_down.weight": torch.ones(2, 4, 3, 3),
        "lora_unet_conv_in.lora_up.weight": torch.ones(99, 2, 1, 1),
        "lora_unet_conv_out.lora_down.weight": torch.ones(2, 32, 3, 3),
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.ones(2, 32),
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.ones(64, 2),
        "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.ones(2, 48),
        "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.ones(96, 2),
    }
    patches = build_lora_patches(sd, unet=unet_sd1)  # model only: text encoder keys are skipped silently
    assert not patches.unet and not patches.te1 and patches.unmatched == ()
    assert len(patches.problems) == 2
    assert any("lora_unet_conv_in" in p and "does not fit" in p for p in patches.problems)
    assert any("lora_unet_conv_out" in p and "lora_up" in p for p in patches.problems)
    assert build_lora_patches(sd, te1=clip_l).te1.keys() == {"encoder.layers.0.mlp.fc1.weight"}
    assert build_lora_patches(sd, te1=clip_l, strength_clip=0.0).count == 0
    merged = build_lora_patches(sd, te1=clip_l).merged(build_lora_patches(sd, te1=clip_l, strength_clip=0.5))
    assert [p.strength for p in merged.te1["encoder.layers.0.mlp.fc1.weight"]] == [1.0, 0.5]


def test_bad_files_name_the_file_and_the_problem(tmp_path: Path, unet_sd1: UNet2DConditionModel) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(LoraFormatError, match=r"garbage\.safetensors.*not a readable safetensors"):
        load_lora(garbage, unet=unet_sd1)
    with pytest.raises(LoraFormatError, match=r"missing\.safetensors.*no such"):
        read_lora_file(tmp_path / "missing.safetensors")

    loha = tmp_path / "loha.safetensors"
    save_file(
        {
            f"lora_unet_down_blocks_0_resnets_0_conv1.{part}": torch.ones(2, 2)
            for part in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
        }
        | {"lora_unet_down_blocks_0_resnets_0_conv1.alpha": torch.tensor(1.0)},
        str(loha),
    )
    with pytest.raises(LoraFormatError, match=r"loha\.safetensors.*LoHa \(hada_\*\)"):
        load_lora(loha, unet=unet_sd1)

    dora = tmp_path / "dora.safetensors"
    save_file(
        {
            "lora_unet_conv_in.lora_down.weight": torch.ones(2, 4, 3, 3),
            "lora_unet_conv_in.lora_up.weight": torch.ones(32, 2, 1, 1),
            "lora_unet_conv_in.dora_scale": torch.ones(32, 1, 1, 1),
        },
        str(dora),
    )
    with pytest.raises(LoraFormatError, match="DoRA"):
        load_lora(dora, unet=unet_sd1)

    empty = tmp_path / "empty.safetensors"
    save_file({"something": torch.ones(1)}, str(empty))
    with pytest.raises(LoraFormatError, match=r"empty\.safetensors.*no LoRA weights"):
        load_lora(empty, unet=unet_sd1)
