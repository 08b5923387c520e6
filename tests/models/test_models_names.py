"""One name map serves both the checkpoint writer and LoRA key mapping (and agrees with diffusers)."""

import pytest
import torch
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

from atelier.engine.models import build_tiny_models, family_config
from atelier.engine.models.build import empty_unet, empty_vae
from atelier.engine.models.layout import vae_to_original
from atelier.engine.models.lora import build_lora_patches, lora_key_map
from atelier.engine.models.names import (
    SD1_CLIP_PREFIX,
    SDXL_CLIP_G_PREFIX,
    SDXL_CLIP_L_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    NameMap,
    NamePair,
    clip_names,
    clip_root,
    unet_names,
    vae_names,
)
from atelier.engine.models.tiny import TinyModels

PATCHABLE = (torch.nn.Linear, torch.nn.Conv2d)


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def tiny(request: pytest.FixtureRequest) -> TinyModels:
    return build_tiny_models(request.param, seed=0)


def _written_names(models: TinyModels) -> dict[int, dict[str, str]]:
    """What the writer actually did: for each module (by id), diffusers tensor name -> prefixed original
    name. Found through tensor identity (the writer shares the modules' tensors), not through the map."""
    written = models.original_state_dict()
    by_pointer = {tensor.data_ptr(): name for name, tensor in written.items()}
    out: dict[int, dict[str, str]] = {}
    for module in (models.unet, models.vae, *models.text_encoders):
        out[id(module)] = {
            key: by_pointer[value.data_ptr()]
            for key, value in module.state_dict().items()
            if value.data_ptr() in by_pointer
        }
    return out


def _patchable_weights(module: torch.nn.Module) -> list[str]:
    return [f"{name}.weight" for name, m in module.named_modules() if name and isinstance(m, PATCHABLE)]


def test_writer_names_are_the_map_names_and_lora_resolves_them(tiny: TinyModels) -> None:
    written = _written_names(tiny)
    unet_map = unet_names(tiny.unet.config)
    te1 = tiny.text_encoders[0]
    te2 = tiny.text_encoders[1] if len(tiny.text_encoders) > 1 else None
    table = lora_key_map(tiny.unet, te1, te2)

    # UNet: every tensor is written under the map's name; every Linear/Conv weight's original module
    # name, in kohya form, resolves back to exactly that module in LoRA mapping
    unet_written = written[id(tiny.unet)]
    assert unet_written.keys() == tiny.unet.state_dict().keys()
    for key, original in unet_written.items():
        assert original == UNET_PREFIX + unet_map.to_original(key)
        assert unet_map.to_diffusers(original.removeprefix(UNET_PREFIX)) == key
    unet_weights = _patchable_weights(tiny.unet)
    assert len(unet_weights) > 60
    for weight in unet_weights:
        module = unet_written[weight].removeprefix(UNET_PREFIX).removesuffix(".weight")
        assert table["lora_unet_" + module.replace(".", "_")] == ("unet", weight), weight

    # VAE: written under the map's names (attention projections as 1x1 convs share the tensors too)
    vae_map = vae_names(tiny.vae.config)
    vae_written = written[id(tiny.vae)]
    assert vae_written.keys() == tiny.vae.state_dict().keys()
    for key, original in vae_written.items():
        assert original == VAE_PREFIX + vae_map.to_original(key)
        assert vae_map.to_diffusers(original.removeprefix(VAE_PREFIX)) == key

    # CLIP-L: the single-file names are the kohya names (``lora_te1_text_model_...``)
    clip_prefix = SD1_CLIP_PREFIX if tiny.family == "sd15" else SDXL_CLIP_L_PREFIX
    te1_written = written[id(te1)]
    te1_weights = _patchable_weights(te1)
    assert te1_weights and te1_written.keys() == te1.state_dict().keys()
    for weight in te1_weights:
        module = te1_written[weight].removeprefix(clip_prefix).removesuffix(".weight")
        assert module.startswith("text_model.")
        assert table["lora_te1_" + module.replace(".", "_")] == ("te1", weight), weight
    assert {v for k, v in table.items() if k.startswith("lora_te1_")} == {("te1", w) for w in te1_weights}

    if te2 is not None:
        # OpenCLIP-G: the file uses open_clip names from the same map (q/k/v fused, so not shared
        # tensors); kohya names it like CLIP-L, through the map's clip_l table
        g_map = clip_names("open_clip", 2, root=clip_root(te2.state_dict()), projection=True)
        g_written = written[id(te2)]
        for key, original in g_written.items():
            assert original == SDXL_CLIP_G_PREFIX + g_map.to_original(key)
        state = te2.state_dict()
        fused = [k for k in state if g_map.lookup(k)[0].kind in ("fused_qkv", "transposed")]
        assert len(fused) == 2 * 6 + 1 and not set(fused) & g_written.keys()
        te2_weights = _patchable_weights(te2)
        assert {v for k, v in table.items() if k.startswith("lora_te2_")} == {("te2", w) for w in te2_weights}
        assert table["lora_te2_text_model_encoder_layers_1_self_attn_v_proj"] == (
            "te2",
            "text_model.encoder.layers.1.self_attn.v_proj.weight",
        )
        assert table["lora_te2_text_projection"] == ("te2", "text_projection.weight")


@pytest.mark.parametrize("form", ["kohya", "dotted"])
def test_lora_on_original_names_patches_the_tensors_the_writer_wrote_there(
    tiny: TinyModels, form: str
) -> None:
    """A LoRA made from the written file's own tensor names lands on the diffusers tensors the writer
    took them from: every one, and each factor on the right tensor (not just one of the same shape)."""
    written = _written_names(tiny)
    to_diffusers = {original: key for key, original in written[id(tiny.unet)].items()}
    te1 = tiny.text_encoders[0]
    clip_prefix = SD1_CLIP_PREFIX if tiny.family == "sd15" else SDXL_CLIP_L_PREFIX
    te1_to_diffusers = {original: key for key, original in written[id(te1)].items()}
    generator = torch.Generator().manual_seed(0)
    lora: dict[str, torch.Tensor] = {}
    expected: dict[str, dict[str, torch.Tensor]] = {"unet": {}, "te1": {}}
    for original, tensor in tiny.original_state_dict().items():
        if not original.endswith(".weight") or tensor.ndim not in (2, 4) or "embedding" in original:
            continue
        if original.startswith(UNET_PREFIX):
            target, module = "unet", original.removeprefix(UNET_PREFIX).removesuffix(".weight")
            diffusers = to_diffusers[original]
            key = f"diffusion_model.{module}" if form == "dotted" else "lora_unet_" + module.replace(".", "_")
        elif original.startswith(clip_prefix):
            target, module = "te1", original.removeprefix(clip_prefix).removesuffix(".weight")
            diffusers = te1_to_diffusers[original]
            key = "lora_te1_" + module.replace(".", "_")
        else:
            continue
        up = torch.randn(tensor.shape[0], 2, *([1, 1] if tensor.ndim == 4 else []), generator=generator)
        lora[f"{key}.lora_up.weight"] = up
        lora[f"{key}.lora_down.weight"] = torch.randn(2, *tensor.shape[1:], generator=generator)
        expected[target][diffusers] = up

    patches = build_lora_patches(lora, unet=tiny.unet, te1=te1)
    assert patches.unmatched == () and patches.problems == ()
    assert set(patches.unet) == set(expected["unet"]) == set(_patchable_weights(tiny.unet))
    assert set(patches.te1) == set(expected["te1"]) == set(_patchable_weights(te1))
    for target in ("unet", "te1"):
        for name, up in expected[target].items():
            (patch,) = patches.for_target(target)[name]  # type: ignore[arg-type]
            assert patch.up is up, name


@pytest.mark.parametrize("family", ["sd15", "sd2", "sdxl"])
def test_full_size_unet_map_agrees_with_diffusers(family: str) -> None:
    """Names only, on meta-device full-size UNets: our map and diffusers' LDM converter pair the same
    names, both ways."""
    config = family_config(family, "unet")
    keys = list(empty_unet(config).state_dict())
    names = unet_names(config)
    originals = {key: UNET_PREFIX + names.to_original(key) for key in keys}
    assert len(set(originals.values())) == len(keys)
    assert all(names.to_diffusers(o.removeprefix(UNET_PREFIX)) == k for k, o in originals.items())
    converted = convert_ldm_unet_checkpoint({o: o for o in originals.values()}, config)
    assert converted == originals


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_full_size_vae_map_agrees_with_diffusers(family: str) -> None:
    config = family_config(family, "vae")
    state = empty_vae(config).state_dict()
    written = vae_to_original(state, config)
    assert written["encoder.mid.attn_1.q.weight"].shape[2:] == (1, 1)
    back = convert_ldm_vae_checkpoint({VAE_PREFIX + k: v for k, v in written.items()}, config)
    assert back.keys() == state.keys()
    assert all(back[k].shape == state[k].shape for k in state)


def test_map_lookup_rules() -> None:
    names = NameMap(
        "test",
        [NamePair("down_blocks.0.attentions.0", "input_blocks.1.1"), NamePair("a.to_q", "a.q", "conv1x1")],
    )
    # the longest dotted prefix wins, the rest of the name is kept; "input_blocks.1" is no prefix of "...10"
    assert names.to_original("down_blocks.0.attentions.0.proj_in.weight") == "input_blocks.1.1.proj_in.weight"
    assert names.to_diffusers("input_blocks.1.1.norm.bias") == "down_blocks.0.attentions.0.norm.bias"
    with pytest.raises(KeyError):
        names.to_diffusers("input_blocks.1.10.norm.bias")
    with pytest.raises(KeyError):
        names.to_original("down_blocks.0.attentions.01.norm.bias")
    with pytest.raises(ValueError, match="two pairs"):
        NameMap("dup", [NamePair("x", "y"), NamePair("z", "y")])
    g = clip_names("open_clip", 1, projection=True)
    with pytest.raises(KeyError, match="fused|no diffusers"):
        g.to_diffusers("transformer.resblocks.0.attn.in_proj_weight")
    assert g.to_diffusers("transformer.resblocks.0.mlp.c_fc.weight") == "encoder.layers.0.mlp.fc1.weight"


def test_lora_mapping_of_a_unet_the_map_does_not_cover_keeps_diffusers_names() -> None:
    plain = torch.nn.Sequential(torch.nn.Linear(2, 2))  # no diffusers config: no original names
    assert lora_key_map(plain) == {"lora_unet_0": ("unet", "0.weight")}
