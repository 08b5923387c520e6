"""Writing diffusers / transformers modules as a single-file checkpoint in the original layout.

The original layout is the one of the Stable Diffusion reference code (ldm for SD1/SD2, sgm for SDXL), which
is what every single-file ``.safetensors`` checkpoint uses:

* UNet: ``model.diffusion_model.{input_blocks,middle_block,output_blocks,time_embed,label_emb,out}.*``
* VAE: ``first_stage_model.{encoder,decoder,quant_conv,post_quant_conv}.*`` (mid-block attention as 1x1 convs)
* SD1 CLIP-L: ``cond_stage_model.transformer.text_model.*`` (transformers names)
* SD2 OpenCLIP-H: ``cond_stage_model.model.*`` (open_clip names, fused ``in_proj`` q/k/v, ``text_projection``
  stored as ``[width, projection]``)
* SDXL: ``conditioner.embedders.0.transformer.text_model.*`` (CLIP-L) and ``conditioner.embedders.1.model.*``
  (OpenCLIP-G)

The names come from the shared map in ``names.py`` (which LoRA key mapping uses too); this module only
applies it to state dicts and does the tensor changes the map's pair kinds call for (1x1 conv reshapes,
the transposed projection, fusing q/k/v). Loading goes the other way through diffusers' own converters.
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from atelier.engine.models.names import (
    SD1_CLIP_PREFIX,
    SD2_CLIP_PREFIX,
    SDXL_CLIP_G_PREFIX,
    SDXL_CLIP_L_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    ClipLayout,
    NameMap,
    clip_names,
    clip_root,
    text_encoder_prefixes,
    unet_names,
    vae_names,
)

__all__ = [
    "SD1_CLIP_PREFIX",
    "SD2_CLIP_PREFIX",
    "SDXL_CLIP_G_PREFIX",
    "SDXL_CLIP_L_PREFIX",
    "UNET_PREFIX",
    "VAE_PREFIX",
    "clip_to_original",
    "original_state_dict",
    "text_encoder_prefixes",
    "to_original",
    "unet_key_map",
    "unet_key_to_original",
    "unet_to_original",
    "vae_to_original",
    "with_prefix",
]


def to_original(state_dict: Mapping[str, torch.Tensor], names: NameMap) -> dict[str, torch.Tensor]:
    """A diffusers state dict renamed through ``names`` (no prefix), with the tensor changes each pair's
    kind calls for. Every tensor must be known to the map (``KeyError`` otherwise): a tensor silently left
    out would only show up when the file is loaded."""
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[int, torch.Tensor]] = {}
    for key, value in state_dict.items():
        pair, rest = names.lookup(key)
        if pair.kind == "fused_qkv":
            fused.setdefault(pair.original, {})[pair.part] = value
            continue
        name = pair.original + rest
        if name in out:
            raise KeyError(f"{names.component}: {key!r} and another tensor both map to {name!r}")
        if pair.kind == "conv1x1" and name.endswith(".weight") and value.ndim == 2:
            value = value.reshape(*value.shape, 1, 1)
        elif pair.kind == "transposed":
            value = value.t().contiguous()
        out[name] = value
    for name, parts in fused.items():
        if sorted(parts) != [0, 1, 2]:
            raise KeyError(f"{names.component}: {name!r} needs q, k and v, got parts {sorted(parts)}")
        out[name] = torch.cat([parts[0], parts[1], parts[2]], dim=0)
    return out


def unet_key_to_original(key: str, unet_config: Mapping[str, Any]) -> str:
    """Name of a diffusers ``UNet2DConditionModel`` tensor in the original layout (without the
    ``model.diffusion_model.`` prefix). Raises ``KeyError`` for a name it does not know."""
    return unet_names(unet_config).to_original(key)


def unet_key_map(keys: Iterable[str], unet_config: Mapping[str, Any]) -> dict[str, str]:
    """diffusers name -> original name (without prefix) for every key given (``KeyError`` for unknown)."""
    names = unet_names(unet_config)
    return {key: names.to_original(key) for key in keys}


def unet_to_original(
    state_dict: Mapping[str, torch.Tensor], unet_config: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """diffusers UNet state dict -> original layout (no prefix)."""
    return to_original(state_dict, unet_names(unet_config))


def vae_to_original(
    state_dict: Mapping[str, torch.Tensor], vae_config: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """diffusers VAE state dict -> original layout (no prefix); attention projections become 1x1 convs."""
    return to_original(state_dict, vae_names(vae_config))


def clip_to_original(state_dict: Mapping[str, torch.Tensor], layout: ClipLayout) -> dict[str, torch.Tensor]:
    """transformers CLIP text model state dict -> names as stored under the encoder's prefix.

    ``clip_l``: ``text_model.*``; a projection is dropped (CLIP-L in SD checkpoints has none). ``open_clip``:
    open_clip names, q/k/v fused into ``attn.in_proj_*``, the projection transposed."""
    keys = list(state_dict)
    root = clip_root(keys)
    layers = {int(k[len(root) :].split(".")[2]) for k in keys if k.startswith(root + "encoder.layers.")}
    if layout == "clip_l":
        state_dict = {k: v for k, v in state_dict.items() if k != "text_projection.weight"}
    projection = "text_projection.weight" in state_dict
    names = clip_names(layout, len(layers), root=root, projection=projection)
    return to_original(state_dict, names)


def with_prefix(prefix: str, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + key: value for key, value in state_dict.items()}


def original_state_dict(
    family: str,
    unet: torch.nn.Module,
    vae: torch.nn.Module | None,
    text_encoders: Sequence[torch.nn.Module],
    unet_config: Mapping[str, Any],
) -> dict[str, torch.Tensor]:
    """The full single-file state dict (original layout, prefixed) of a model given as diffusers /
    transformers modules. Tensors are shared with the modules (no copies) except fused/transposed ones."""
    out = with_prefix(UNET_PREFIX, unet_to_original(unet.state_dict(), unet_config))
    if vae is not None:
        out.update(with_prefix(VAE_PREFIX, vae_to_original(vae.state_dict(), vae.config)))  # type: ignore[arg-type]
    prefixes = text_encoder_prefixes(family)
    if len(text_encoders) not in (0, len(prefixes)):
        raise ValueError(f"{family} has {len(prefixes)} text encoders, got {len(text_encoders)}")
    for (prefix, layout), encoder in zip(prefixes, text_encoders, strict=False):
        out.update(with_prefix(prefix, clip_to_original(encoder.state_dict(), layout)))
    return out
