"""Module configs from tensor shapes: the exact diffusers / transformers configs of a single file's UNet,
VAE and text encoders.

Widths, depths, level counts and attention layouts are read from the shapes (so tiny test models and
full-size ones go through the same code); what shapes cannot show comes from the family config
(``info.family_config``). Names are the original single-file ones (``names.py`` prefixes).
"""

from collections.abc import Iterable, Mapping
from typing import Any

from atelier.engine.models.errors import CheckpointError
from atelier.engine.models.files import TensorIndex
from atelier.engine.models.info import (
    INPAINT_EXTRA_CHANNELS,
    SDXL_FAMILIES,
    SIZE_EMBEDDINGS,
    VAE_SCALING_FACTOR,
    Family,
    TextEncoderInfo,
    TextEncoderLayout,
    family_config,
    family_text_layer,
    unet_input_kind,
)
from atelier.engine.models.names import UNET_PREFIX

# Heads convention per family (not visible in shapes): SD1 uses 8 heads everywhere, SD2 and SDXL use
# 64 channels per head. CLIP text encoders all use 64 channels per head.
_SD1_NUM_HEADS = 8
_HEAD_CHANNELS = 64


def children(keys: Iterable[str], prefix: str) -> set[str]:
    n = len(prefix)
    return {key[n:].split(".", 1)[0] for key in keys if key.startswith(prefix)}


def int_children(keys: Iterable[str], prefix: str) -> list[int]:
    return sorted(int(c) for c in children(keys, prefix) if c.isdigit())


def _heads(channels: int) -> int:
    return channels // _HEAD_CHANNELS if channels >= _HEAD_CHANNELS and channels % _HEAD_CHANNELS == 0 else 1


def derive_unet_config(index: TensorIndex, family: Family, adm_pooled_dim: int | None) -> dict[str, Any]:
    """The diffusers ``UNet2DConditionModel`` config of the UNet in ``index`` (original layout)."""
    p = UNET_PREFIX
    keys = [k for k in index.keys() if k.startswith(p)]
    conv_in = index.shape(p + "input_blocks.0.0.weight")
    model_channels, in_channels = conv_in[0], conv_in[1]
    out_channels = index.shape(p + "out.2.weight")[0]
    if unet_input_kind(in_channels, out_channels) is None:
        raise CheckpointError(
            index.path,
            f"unsupported UNet: {in_channels} input channels for a {out_channels}-channel latent; "
            f"supported are plain ({out_channels}) and inpainting ({out_channels + INPAINT_EXTRA_CHANNELS}: "
            "latent, mask, masked image) models, not InstructPix2Pix-style or depth-conditioned ones",
        )

    def depth(block: str) -> int | None:
        if block + ".1.proj_in.weight" not in index:
            return None
        return len(int_children(keys, block + ".1.transformer_blocks."))

    levels: list[dict[str, Any]] = []
    current: dict[str, Any] = {"res": 0, "channels": None, "depths": []}
    for i in int_children(keys, p + "input_blocks."):
        if i == 0:
            continue
        block = f"{p}input_blocks.{i}"
        if block + ".0.op.weight" in index:
            levels.append(current)
            current = {"res": 0, "channels": None, "depths": []}
            continue
        current["res"] += 1
        current["channels"] = index.shape(block + ".0.out_layers.3.weight")[0]
        current["depths"].append(depth(block))
    levels.append(current)

    def fail(why: str) -> CheckpointError:
        return CheckpointError(index.path, f"unsupported UNet layout: {why}")

    res_counts = {level["res"] for level in levels}
    if len(res_counts) != 1 or 0 in res_counts:
        raise fail(f"res blocks per level differ: {[level['res'] for level in levels]}")
    layers_per_block = res_counts.pop()
    channels = [int(level["channels"]) for level in levels]
    level_depths: list[int | None] = []
    for n, level in enumerate(levels):
        if len(set(level["depths"])) != 1:
            raise fail(f"level {n} mixes transformer depths {level['depths']}")
        level_depths.append(level["depths"][0])

    # output blocks mirror the input blocks with one extra block per level
    out_ids = int_children(keys, p + "output_blocks.")
    if len(out_ids) != len(levels) * (layers_per_block + 1):
        raise fail(f"{len(out_ids)} output blocks for {len(levels)} levels of {layers_per_block} res blocks")
    for up_level in range(len(levels)):
        expected = level_depths[len(levels) - 1 - up_level]
        for j in range(layers_per_block + 1):
            got = depth(f"{p}output_blocks.{up_level * (layers_per_block + 1) + j}")
            if got != expected:
                raise fail(f"output level {up_level} has transformer depth {got}, input level has {expected}")

    mid_depth = depth(p + "middle_block")
    if mid_depth is None:
        raise fail("the middle block has no transformer")
    transformer_layers = [d if d is not None else 1 for d in level_depths]
    if level_depths[-1] is None:
        transformer_layers[-1] = mid_depth
    elif level_depths[-1] != mid_depth:
        raise fail(f"middle block depth {mid_depth} differs from the last level's {level_depths[-1]}")

    attn_key = next((k for k in keys if k.endswith(".attn2.to_k.weight")), None)
    proj_in_key = next((k for k in keys if k.endswith(".proj_in.weight")), None)
    if attn_key is None or proj_in_key is None:
        raise fail("no cross-attention layers")
    cross_attention_dim = index.shape(attn_key)[1]
    use_linear = len(index.shape(proj_in_key)) == 2

    config = family_config(family, "unet")
    config.update(
        in_channels=in_channels,
        out_channels=out_channels,
        block_out_channels=channels,
        layers_per_block=layers_per_block,
        down_block_types=["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in level_depths],
        up_block_types=["CrossAttnUpBlock2D" if d else "UpBlock2D" for d in reversed(level_depths)],
        cross_attention_dim=cross_attention_dim,
        use_linear_projection=use_linear,
        transformer_layers_per_block=(
            transformer_layers[0] if len(set(transformer_layers)) == 1 else transformer_layers
        ),
        attention_head_dim=_SD1_NUM_HEADS if family == "sd15" else [_heads(c) for c in channels],
    )
    time_embed_dim = index.shape(p + "time_embed.0.weight")[0]
    if time_embed_dim != 4 * model_channels:
        config["time_embedding_dim"] = time_embed_dim
    if model_channels != channels[0]:
        raise fail(f"conv_in has {model_channels} channels but the first level has {channels[0]}")
    groups = int(config.get("norm_num_groups", 32))
    if any(c % groups for c in channels):
        raise fail(f"channels {channels} are not divisible by {groups} norm groups")

    label = p + "label_emb.0.0.weight"
    if family in SDXL_FAMILIES:
        if label not in index:
            raise fail("SDXL text encoders but the UNet has no label_emb (size conditioning)")
        adm_in = index.shape(label)[1]
        pooled = adm_pooled_dim if adm_pooled_dim is not None else 1280
        sizes = SIZE_EMBEDDINGS[family]
        time_dim, rest = divmod(adm_in - pooled, sizes)
        if rest or time_dim <= 0:
            raise fail(f"label_emb input {adm_in} does not fit pooled {pooled} + {sizes} size embeddings")
        config.update(projection_class_embeddings_input_dim=adm_in, addition_time_embed_dim=time_dim)
    elif label in index and family == "sd2":
        # Stable unCLIP: the image embedding and its noise level's embedding, added to the time embedding
        config.update(
            class_embed_type="projection", projection_class_embeddings_input_dim=index.shape(label)[1]
        )
    elif label in index:
        raise fail("the UNet has class/label embeddings (only SD2 unCLIP ones are supported)")
    return config


def derive_vae_config(index: TensorIndex, prefix: str, family: Family | None) -> dict[str, Any]:
    """The diffusers ``AutoencoderKL`` config of an original-layout VAE under ``prefix``."""
    keys = [k for k in index.keys() if k.startswith(prefix)]
    e = prefix + "encoder."
    levels = int_children(keys, e + "down.")
    if not levels:
        raise CheckpointError(index.path, "VAE encoder has no down blocks")
    layers_per_block = len(int_children(keys, e + "down.0.block."))
    channels = [index.shape(f"{e}down.{i}.block.{layers_per_block - 1}.conv2.weight")[0] for i in levels]
    dec_layers = len(int_children(keys, prefix + "decoder.up.0.block."))
    if dec_layers != layers_per_block + 1:
        raise CheckpointError(index.path, f"unsupported VAE: decoder has {dec_layers} res blocks per level")
    latent = index.shape(prefix + "decoder.conv_in.weight")[1]
    config = family_config(family or "sd15", "vae")
    config.update(
        in_channels=index.shape(e + "conv_in.weight")[1],
        out_channels=index.shape(prefix + "decoder.conv_out.weight")[0],
        block_out_channels=channels,
        layers_per_block=layers_per_block,
        latent_channels=latent,
        down_block_types=["DownEncoderBlock2D"] * len(channels),
        up_block_types=["UpDecoderBlock2D"] * len(channels),
        use_quant_conv=prefix + "quant_conv.weight" in index,
        use_post_quant_conv=prefix + "post_quant_conv.weight" in index,
        mid_block_add_attention=e + "mid.attn_1.q.weight" in index,
        scaling_factor=VAE_SCALING_FACTOR[family or "sd15"],
    )
    return config


def _clip_config(
    family_cfg: Mapping[str, Any],
    hidden: int,
    inter: int,
    layers: int,
    vocab: int,
    positions: int,
    proj: int | None,
) -> dict[str, Any]:
    config = {k: v for k, v in family_cfg.items() if k not in ("architectures", "model_type")}
    config.update(
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=_heads(hidden),
        vocab_size=vocab,
        max_position_embeddings=positions,
        projection_dim=proj if proj is not None else hidden,
    )
    return config


def derive_text_encoder(
    index: TensorIndex,
    prefix: str,
    layout: TextEncoderLayout,
    *,
    family: Family,
    name: str,
) -> TextEncoderInfo:
    """Config of the text encoder stored under ``prefix`` in ``layout``."""
    keys = [k for k in index.keys() if k.startswith(prefix)]
    try:
        if layout == "clip_l":
            t = prefix + "text_model."
            vocab, hidden = index.shape(t + "embeddings.token_embedding.weight")
            positions = index.shape(t + "embeddings.position_embedding.weight")[0]
            layers = len(int_children(keys, t + "encoder.layers."))
            inter = index.shape(t + "encoder.layers.0.mlp.fc1.weight")[0]
            proj = None
        else:
            vocab, hidden = index.shape(prefix + "token_embedding.weight")
            positions = index.shape(prefix + "positional_embedding")[0]
            layers = len(int_children(keys, prefix + "transformer.resblocks."))
            inter = index.shape(prefix + "transformer.resblocks.0.mlp.c_fc.weight")[0]
            proj_key = prefix + "text_projection"
            proj = index.shape(proj_key)[1] if proj_key in index else None
    except (KeyError, IndexError, ValueError):
        raise CheckpointError(index.path, f"text encoder under {prefix}* is incomplete") from None
    component = "text_encoder_2" if name == "text_encoder_2" else "text_encoder"
    with_projection = family in SDXL_FAMILIES and name == "text_encoder_2"
    config = _clip_config(family_config(family, component), hidden, inter, layers, vocab, positions, proj)
    default_layer, final_ln = family_text_layer(family)
    return TextEncoderInfo(
        name=name,
        layout=layout,
        model_class="CLIPTextModelWithProjection" if with_projection else "CLIPTextModel",
        key_prefix=prefix,
        hidden_size=hidden,
        num_layers=layers,
        projection_dim=proj if with_projection else None,
        pad_token="!" if layout == "open_clip" else "<|endoftext|>",
        default_layer=default_layer,
        final_layer_norm=final_ln,
        config=config,
    )
