"""Tensor-name mappings from diffusers / transformers modules to the original single-file layout.

The original layout is the one of the Stable Diffusion reference code (ldm for SD1/SD2, sgm for SDXL), which
is what every single-file ``.safetensors`` checkpoint uses:

* UNet: ``model.diffusion_model.{input_blocks,middle_block,output_blocks,time_embed,label_emb,out}.*``
* VAE: ``first_stage_model.{encoder,decoder,quant_conv,post_quant_conv}.*`` (mid-block attention as 1x1 convs)
* SD1 CLIP-L: ``cond_stage_model.transformer.text_model.*`` (transformers names)
* SD2 OpenCLIP-H: ``cond_stage_model.model.*`` (open_clip names, fused ``in_proj`` q/k/v, ``text_projection``
  stored as ``[width, projection]``)
* SDXL: ``conditioner.embedders.0.transformer.text_model.*`` (CLIP-L) and ``conditioner.embedders.1.model.*``
  (OpenCLIP-G)

Loading goes the other way through ``diffusers.loaders.single_file_utils``; this module is the inverse,
written independently, used to write checkpoints (tiny test models, saving merged models) and to map
original names for LoRA files.
"""

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_CLIP_PREFIX = "cond_stage_model.transformer."
SD2_CLIP_PREFIX = "cond_stage_model.model."
SDXL_CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
SDXL_CLIP_G_PREFIX = "conditioner.embedders.1.model."

_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "class_embedding.linear_1": "label_emb.0.0",
    "class_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_DOWN = re.compile(r"^down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$")
_DOWNSAMPLE = re.compile(r"^down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)$")
_MID = re.compile(r"^mid_block\.(resnets|attentions)\.(\d+)\.(.+)$")
_UP = re.compile(r"^up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$")
_UPSAMPLE = re.compile(r"^up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)$")


def _split_param(rest: str) -> tuple[str, str]:
    head, _, tail = rest.partition(".")
    return head, tail


def _resnet_name(rest: str) -> str:
    head, tail = _split_param(rest)
    if head not in _UNET_RESNET:
        raise KeyError(f"unknown UNet resnet tensor {rest!r}")
    return f"{_UNET_RESNET[head]}.{tail}"


def unet_key_to_original(key: str, unet_config: Mapping[str, Any]) -> str:
    """Name of a diffusers ``UNet2DConditionModel`` tensor in the original layout (without the
    ``model.diffusion_model.`` prefix). Raises ``KeyError`` for a name it does not know."""
    per_level = int(unet_config["layers_per_block"]) + 1
    head, tail = _split_param(key)
    for diff_name, orig_name in _UNET_TOP.items():
        if key.startswith(diff_name + "."):
            return orig_name + key[len(diff_name) :]
    if m := _DOWN.match(key):
        level, kind, index, rest = int(m[1]), m[2], int(m[3]), m[4]
        block = 1 + level * per_level + index
        if kind == "resnets":
            return f"input_blocks.{block}.0.{_resnet_name(rest)}"
        return f"input_blocks.{block}.1.{rest}"
    if m := _DOWNSAMPLE.match(key):
        level = int(m[1])
        return f"input_blocks.{1 + level * per_level + per_level - 1}.0.op.{m[2]}"
    if m := _MID.match(key):
        kind, index, rest = m[1], int(m[2]), m[3]
        if kind == "resnets":
            return f"middle_block.{2 * index}.{_resnet_name(rest)}"
        return f"middle_block.{2 * index + 1}.{rest}"
    if m := _UP.match(key):
        level, kind, index, rest = int(m[1]), m[2], int(m[3]), m[4]
        block = level * per_level + index
        if kind == "resnets":
            return f"output_blocks.{block}.0.{_resnet_name(rest)}"
        return f"output_blocks.{block}.1.{rest}"
    if m := _UPSAMPLE.match(key):
        level = int(m[1])
        has_attention = "CrossAttn" in str(unet_config["up_block_types"][level])
        block = level * per_level + per_level - 1
        return f"output_blocks.{block}.{2 if has_attention else 1}.conv.{m[2]}"
    raise KeyError(f"unknown UNet tensor {key!r} (first part {head!r}, rest {tail!r})")


def unet_key_map(keys: Iterable[str], unet_config: Mapping[str, Any]) -> dict[str, str]:
    """diffusers name -> original name (without prefix) for every key given."""
    return {key: unet_key_to_original(key, unet_config) for key in keys}


_VAE_RESNET = {
    "norm1": "norm1",
    "conv1": "conv1",
    "norm2": "norm2",
    "conv2": "conv2",
    "conv_shortcut": "nin_shortcut",
}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_VAE_TOP = {
    "encoder.conv_in": "encoder.conv_in",
    "encoder.conv_out": "encoder.conv_out",
    "encoder.conv_norm_out": "encoder.norm_out",
    "decoder.conv_in": "decoder.conv_in",
    "decoder.conv_out": "decoder.conv_out",
    "decoder.conv_norm_out": "decoder.norm_out",
    "quant_conv": "quant_conv",
    "post_quant_conv": "post_quant_conv",
}
_VAE_BLOCK = re.compile(r"^(encoder\.down_blocks|decoder\.up_blocks)\.(\d+)\.resnets\.(\d+)\.(.+)$")
_VAE_SAMPLER = re.compile(
    r"^(encoder\.down_blocks|decoder\.up_blocks)\.(\d+)\.(downsamplers|upsamplers)\.0\.conv\.(.+)$"
)
_VAE_MID_RESNET = re.compile(r"^(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)$")
_VAE_MID_ATTENTION = re.compile(r"^(encoder|decoder)\.mid_block\.attentions\.0\.(.+)$")


def vae_key_to_original(key: str, num_levels: int) -> str:
    """Name of a diffusers ``AutoencoderKL`` tensor in the original layout (without ``first_stage_model.``)."""
    for diff_name, orig_name in _VAE_TOP.items():
        if key.startswith(diff_name + "."):
            return orig_name + key[len(diff_name) :]
    if m := _VAE_BLOCK.match(key):
        part, level, index, rest = m[1], int(m[2]), int(m[3]), m[4]
        head, tail = _split_param(rest)
        if part == "encoder.down_blocks":
            return f"encoder.down.{level}.block.{index}.{_VAE_RESNET[head]}.{tail}"
        return f"decoder.up.{num_levels - 1 - level}.block.{index}.{_VAE_RESNET[head]}.{tail}"
    if m := _VAE_SAMPLER.match(key):
        part, level, rest = m[1], int(m[2]), m[4]
        if part == "encoder.down_blocks":
            return f"encoder.down.{level}.downsample.conv.{rest}"
        return f"decoder.up.{num_levels - 1 - level}.upsample.conv.{rest}"
    if m := _VAE_MID_RESNET.match(key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
    if m := _VAE_MID_ATTENTION.match(key):
        rest = m[2]
        for diff_name, orig_name in _VAE_ATTENTION.items():
            if rest.startswith(diff_name + "."):
                return f"{m[1]}.mid.attn_1.{orig_name}{rest[len(diff_name) :]}"
    raise KeyError(f"unknown VAE tensor {key!r}")


def vae_to_original(state_dict: Mapping[str, torch.Tensor], num_levels: int) -> dict[str, torch.Tensor]:
    """diffusers VAE state dict -> original layout (no prefix); attention projections become 1x1 convs."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        name = vae_key_to_original(key, num_levels)
        if ".mid.attn_1." in name and name.endswith(".weight") and value.ndim == 2:
            value = value.reshape(*value.shape, 1, 1)
        out[name] = value
    return out


def _strip_text_model(key: str) -> str:
    return key.removeprefix("text_model.")


def clip_l_to_original(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ``CLIPTextModel`` state dict -> ``text_model.*`` names as stored under
    ``cond_stage_model.transformer.`` (SD1) or ``conditioner.embedders.0.transformer.`` (SDXL)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key == "text_projection.weight":
            continue  # CLIP-L in SD checkpoints has no projection
        out["text_model." + _strip_text_model(key)] = value
    return out


_OPEN_CLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}
_HF_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")


def open_clip_to_original(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers CLIP text model (with or without projection) -> open_clip names as stored under
    ``cond_stage_model.model.`` (SD2) or ``conditioner.embedders.1.model.`` (SDXL). q/k/v are fused into
    ``attn.in_proj_*``; the projection is stored transposed (``x @ text_projection``)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        name = _strip_text_model(key)
        if name == "embeddings.token_embedding.weight":
            out["token_embedding.weight"] = value
        elif name == "embeddings.position_embedding.weight":
            out["positional_embedding"] = value
        elif name.startswith("final_layer_norm."):
            out["ln_final." + name.removeprefix("final_layer_norm.")] = value
        elif name == "text_projection.weight":
            out["text_projection"] = value.t().contiguous()
        elif m := _HF_LAYER.match(name):
            layer, rest = int(m[1]), m[2]
            if rest.startswith("self_attn.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                _, proj, param = rest.split(".")
                qkv.setdefault((layer, param), {})[proj] = value
                continue
            for hf_name, oc_name in _OPEN_CLIP_LAYER.items():
                if rest.startswith(hf_name + "."):
                    out[f"transformer.resblocks.{layer}.{oc_name}{rest[len(hf_name) :]}"] = value
                    break
            else:
                raise KeyError(f"unknown CLIP tensor {key!r}")
        else:
            raise KeyError(f"unknown CLIP tensor {key!r}")
    for (layer, param), parts in qkv.items():
        fused = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]], dim=0)
        out[f"transformer.resblocks.{layer}.attn.in_proj_{param}"] = fused
    return out


def with_prefix(prefix: str, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + key: value for key, value in state_dict.items()}


def text_encoder_prefixes(family: str) -> Sequence[tuple[str, str]]:
    """(prefix, layout) of each text encoder of a family in the original layout, in encoder order."""
    if family == "sd15":
        return [(SD1_CLIP_PREFIX, "clip_l")]
    if family == "sd2":
        return [(SD2_CLIP_PREFIX, "open_clip")]
    if family == "sdxl":
        return [(SDXL_CLIP_L_PREFIX, "clip_l"), (SDXL_CLIP_G_PREFIX, "open_clip")]
    raise ValueError(f"unknown family {family!r}")


def original_state_dict(
    family: str,
    unet: torch.nn.Module,
    vae: torch.nn.Module | None,
    text_encoders: Sequence[torch.nn.Module],
    unet_config: Mapping[str, Any],
) -> dict[str, torch.Tensor]:
    """The full single-file state dict (original layout, prefixed) of a model given as diffusers /
    transformers modules. Tensors are shared with the modules (no copies) except fused/transposed ones."""
    out: dict[str, torch.Tensor] = {}
    unet_sd = unet.state_dict()
    for key, name in unet_key_map(unet_sd.keys(), unet_config).items():
        out[UNET_PREFIX + name] = unet_sd[key]
    if vae is not None:
        num_levels = len(vae.config["block_out_channels"])  # type: ignore[index]
        out.update(with_prefix(VAE_PREFIX, vae_to_original(vae.state_dict(), num_levels)))
    prefixes = text_encoder_prefixes(family)
    if len(text_encoders) not in (0, len(prefixes)):
        raise ValueError(f"{family} has {len(prefixes)} text encoders, got {len(text_encoders)}")
    for (prefix, layout), encoder in zip(prefixes, text_encoders, strict=False):
        sd = encoder.state_dict()
        converted = clip_l_to_original(sd) if layout == "clip_l" else open_clip_to_original(sd)
        out.update(with_prefix(prefix, converted))
    return out
