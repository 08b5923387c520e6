"""The one name map between diffusers / transformers modules and the original single-file layout.

Single-file checkpoints use the names of the Stable Diffusion reference code (ldm for SD1/SD2, sgm for
SDXL); diffusers and transformers name the same tensors differently. Two jobs need that correspondence:

* writing a checkpoint in the original layout from diffusers modules (``layout.py``: tiny test models),
* mapping kohya / LDM LoRA keys, which name modules in the original layout, onto diffusers modules
  (``lora.py``).

Both read the tables built here, so they cannot drift apart. (Loading goes through diffusers' own
converters instead, which makes them an independent check of these tables: the tests write with this map
and load with diffusers.)

A map is a flat list of :class:`NamePair` (diffusers name, original name), at whatever granularity the two
layouts differ: a whole attention block when only its prefix changes, each layer of a resnet when the
layer names change too. A tensor or module name maps through the pair with the longest matching dotted
prefix, the rest of the name is kept as it is. The block-level pairs are generated from the model config
(how many levels, res blocks per level, which levels have attention); everything below that is in the
plain tables ``UNET_*``, ``VAE_*`` and ``OPEN_CLIP_*`` at the top of this module.

Original names here carry no component prefix (``model.diffusion_model.`` etc.: see the ``*_PREFIX``
constants), and diffusers names are those of the module's own ``state_dict()`` / ``named_modules()``.
"""

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_CLIP_PREFIX = "cond_stage_model.transformer."
SD2_CLIP_PREFIX = "cond_stage_model.model."
SDXL_CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
SDXL_CLIP_G_PREFIX = "conditioner.embedders.1.model."
#: the SDXL refiner's only text encoder, OpenCLIP-G
SDXL_REFINER_CLIP_G_PREFIX = "conditioner.embedders.0.model."

ClipLayout = Literal["clip_l", "open_clip"]
PairKind = Literal["same", "conv1x1", "transposed", "fused_qkv"]

# ---------------------------------------------------------------------------------------------------------
# The tables (diffusers name, original name). Everything else in this module only places them.

#: UNet parts outside the down/mid/up blocks.
UNET_TOP: tuple[tuple[str, str], ...] = (
    ("conv_in", "input_blocks.0.0"),
    ("time_embedding.linear_1", "time_embed.0"),
    ("time_embedding.linear_2", "time_embed.2"),
    ("conv_norm_out", "out.0"),
    ("conv_out", "out.2"),
)
#: SDXL's size/pooled-text embedding (``add_embedding``) or a class embedding: ``label_emb`` either way.
UNET_LABEL_EMBEDDING: tuple[tuple[str, str], ...] = (
    ("linear_1", "label_emb.0.0"),
    ("linear_2", "label_emb.0.2"),
)
#: Layers of a UNet resnet block (diffusers ``ResnetBlock2D`` -> ldm ``ResBlock``).
UNET_RESNET: tuple[tuple[str, str], ...] = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
)
# Attention blocks (diffusers ``Transformer2DModel`` -> ldm ``SpatialTransformer``) keep their inner names.

#: VAE parts outside the blocks.
VAE_TOP: tuple[tuple[str, str], ...] = (
    ("encoder.conv_in", "encoder.conv_in"),
    ("encoder.conv_norm_out", "encoder.norm_out"),
    ("encoder.conv_out", "encoder.conv_out"),
    ("decoder.conv_in", "decoder.conv_in"),
    ("decoder.conv_norm_out", "decoder.norm_out"),
    ("decoder.conv_out", "decoder.conv_out"),
    ("quant_conv", "quant_conv"),
    ("post_quant_conv", "post_quant_conv"),
)
#: Layers of a VAE resnet block.
VAE_RESNET: tuple[tuple[str, str], ...] = (
    ("norm1", "norm1"),
    ("conv1", "conv1"),
    ("norm2", "norm2"),
    ("conv2", "conv2"),
    ("conv_shortcut", "nin_shortcut"),
)
#: The VAE mid-block attention: linear layers in diffusers, 1x1 convolutions in the original.
VAE_ATTENTION: tuple[tuple[str, str, PairKind], ...] = (
    ("group_norm", "norm", "same"),
    ("to_q", "q", "conv1x1"),
    ("to_k", "k", "conv1x1"),
    ("to_v", "v", "conv1x1"),
    ("to_out.0", "proj_out", "conv1x1"),
)

#: CLIP-L in SD checkpoints keeps transformers' names under ``text_model.``.
CLIP_L_TOP: tuple[tuple[str, str], ...] = (
    ("embeddings", "text_model.embeddings"),
    ("encoder", "text_model.encoder"),
    ("final_layer_norm", "text_model.final_layer_norm"),
)
#: OpenCLIP (SD2's H, SDXL's bigG) outside the layers; the projection is stored transposed
#: (``x @ text_projection``), the position embedding as a bare parameter.
OPEN_CLIP_TOP: tuple[tuple[str, str, PairKind], ...] = (
    ("embeddings.token_embedding", "token_embedding", "same"),
    ("embeddings.position_embedding.weight", "positional_embedding", "same"),
    ("final_layer_norm", "ln_final", "same"),
)
OPEN_CLIP_PROJECTION: tuple[str, str, PairKind] = ("text_projection.weight", "text_projection", "transposed")
#: Layers of one OpenCLIP residual block (``encoder.layers.N`` -> ``transformer.resblocks.N``).
OPEN_CLIP_LAYER: tuple[tuple[str, str], ...] = (
    ("layer_norm1", "ln_1"),
    ("layer_norm2", "ln_2"),
    ("mlp.fc1", "mlp.c_fc"),
    ("mlp.fc2", "mlp.c_proj"),
    ("self_attn.out_proj", "attn.out_proj"),
)
#: OpenCLIP fuses q, k, v into one ``in_proj`` (rows q, then k, then v).
OPEN_CLIP_QKV: tuple[str, ...] = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")


# ---------------------------------------------------------------------------------------------------------
# The map


@dataclass(frozen=True)
class NamePair:
    """One diffusers name and its original-layout name (a module, or a single tensor).

    ``kind`` says how the tensors differ besides the name: ``same``; ``conv1x1`` (a linear weight
    ``[out, in]`` stored as a 1x1 convolution ``[out, in, 1, 1]``); ``transposed``; ``fused_qkv`` (this
    tensor is part ``part`` of three stacked along the first dimension in the original)."""

    diffusers: str
    original: str
    kind: PairKind = "same"
    part: int = 0


def _prefixes(name: str) -> Iterator[str]:
    """``a.b.c``, ``a.b``, ``a``: the dotted prefixes of a name, longest first."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        yield ".".join(parts[:end])


class NameMap:
    """A table of :class:`NamePair`; a name maps through the pair with the longest dotted prefix of it."""

    def __init__(self, component: str, pairs: Iterable[NamePair]) -> None:
        self.component = component
        self.pairs: tuple[NamePair, ...] = tuple(pairs)
        self._by_diffusers: dict[str, NamePair] = {}
        self._by_original: dict[str, NamePair] = {}
        for pair in self.pairs:
            if pair.diffusers in self._by_diffusers:
                raise ValueError(f"{component}: two pairs for diffusers name {pair.diffusers!r}")
            self._by_diffusers[pair.diffusers] = pair
            if pair.kind != "fused_qkv":  # three diffusers tensors share one fused original name
                if pair.original in self._by_original:
                    raise ValueError(f"{component}: two pairs for original name {pair.original!r}")
                self._by_original[pair.original] = pair

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[NamePair]:
        return iter(self.pairs)

    def lookup(self, name: str) -> tuple[NamePair, str]:
        """The pair a diffusers name maps through and the rest of the name after the pair's prefix
        (``""`` or ``".weight"``, ``".transformer_blocks.0.attn1.to_q"`` ...). Raises ``KeyError``."""
        for prefix in _prefixes(name):
            pair = self._by_diffusers.get(prefix)
            if pair is not None:
                return pair, name[len(prefix) :]
        raise KeyError(f"{self.component}: no original-layout name for {name!r}")

    def to_original(self, name: str) -> str:
        """The original-layout name of a diffusers tensor or module name. Raises ``KeyError``."""
        pair, rest = self.lookup(name)
        if rest and pair.kind not in ("same", "conv1x1"):
            raise KeyError(f"{self.component}: {name!r} is inside the single tensor {pair.diffusers!r}")
        return pair.original + rest

    def to_diffusers(self, name: str) -> str:
        """The diffusers name of an original-layout tensor or module name. Raises ``KeyError``, also for
        OpenCLIP's fused ``in_proj`` (three diffusers tensors)."""
        for prefix in _prefixes(name):
            pair = self._by_original.get(prefix)
            if pair is not None:
                rest = name[len(prefix) :]
                if rest and pair.kind not in ("same", "conv1x1"):
                    break
                return pair.diffusers + rest
        raise KeyError(f"{self.component}: no diffusers name for original {name!r}")

    def module_names(self, names: Iterable[str]) -> dict[str, str]:
        """diffusers -> original for each of ``names`` the map knows (others are left out)."""
        out: dict[str, str] = {}
        for name in names:
            try:
                out[name] = self.to_original(name)
            except KeyError:
                continue
        return out


def _expand(diffusers: str, original: str, inner: Sequence[tuple[str, str]]) -> list[NamePair]:
    return [NamePair(f"{diffusers}.{d}", f"{original}.{o}") for d, o in inner]


# ---------------------------------------------------------------------------------------------------------
# UNet


def _per_level(value: int | Sequence[int], levels: int, what: str) -> list[int]:
    if isinstance(value, int):
        return [value] * levels
    values = [int(v) for v in value]
    if len(values) != levels:
        raise ValueError(f"{what} has {len(values)} entries for {levels} levels")
    return values


def _has_attention(block_type: Any) -> bool:
    return "CrossAttn" in str(block_type)


def unet_block_pairs(config: Mapping[str, Any]) -> list[tuple[str, str, Literal["resnet", "block"]]]:
    """(diffusers block, original block, kind) for each block of a ``UNet2DConditionModel`` config, in the
    order of the original ``input_blocks`` / ``middle_block`` / ``output_blocks``. Resnet blocks are
    expanded with :data:`UNET_RESNET`; other blocks (attention, samplers) keep their inner names."""
    down_types = list(config["down_block_types"])
    up_types = list(config["up_block_types"])
    levels = len(down_types)
    if len(up_types) != levels:
        raise ValueError(f"{levels} down blocks but {len(up_types)} up blocks")
    per_level = _per_level(config["layers_per_block"], levels, "layers_per_block")
    out: list[tuple[str, str, Literal["resnet", "block"]]] = []

    n = 1  # input_blocks.0 is conv_in
    for level, block_type in enumerate(down_types):
        for j in range(per_level[level]):
            out.append((f"down_blocks.{level}.resnets.{j}", f"input_blocks.{n}.0", "resnet"))
            if _has_attention(block_type):
                out.append((f"down_blocks.{level}.attentions.{j}", f"input_blocks.{n}.1", "block"))
            n += 1
        if level < levels - 1:
            out.append((f"down_blocks.{level}.downsamplers.0.conv", f"input_blocks.{n}.0.op", "block"))
            n += 1

    mid_type = config.get("mid_block_type", "UNetMidBlock2DCrossAttn")
    if mid_type == "UNetMidBlock2DCrossAttn":
        out += [
            ("mid_block.resnets.0", "middle_block.0", "resnet"),
            ("mid_block.attentions.0", "middle_block.1", "block"),
            ("mid_block.resnets.1", "middle_block.2", "resnet"),
        ]
    elif mid_type is not None:
        raise ValueError(f"unsupported UNet mid block {mid_type!r}")

    m = 0
    up_per_level = list(reversed(per_level))
    for level, block_type in enumerate(up_types):
        count = up_per_level[level] + 1
        for j in range(count):
            out.append((f"up_blocks.{level}.resnets.{j}", f"output_blocks.{m}.0", "resnet"))
            if _has_attention(block_type):
                out.append((f"up_blocks.{level}.attentions.{j}", f"output_blocks.{m}.1", "block"))
            if j == count - 1 and level < levels - 1:
                slot = 2 if _has_attention(block_type) else 1
                out.append(
                    (f"up_blocks.{level}.upsamplers.0.conv", f"output_blocks.{m}.{slot}.conv", "block")
                )
            m += 1
    return out


def unet_names(config: Mapping[str, Any]) -> NameMap:
    """The name map of a diffusers ``UNet2DConditionModel`` with this config (SD1, SD2, SDXL, tiny)."""
    pairs = [NamePair(d, o) for d, o in UNET_TOP]
    label = "add_embedding" if config.get("addition_embed_type") == "text_time" else None
    if label is None and config.get("class_embed_type") is not None:
        label = "class_embedding"
    if label is not None:
        pairs += [NamePair(f"{label}.{d}", o) for d, o in UNET_LABEL_EMBEDDING]
    for diffusers, original, kind in unet_block_pairs(config):
        if kind == "resnet":
            pairs += _expand(diffusers, original, UNET_RESNET)
        else:
            pairs.append(NamePair(diffusers, original))
    return NameMap("UNet", pairs)


# ---------------------------------------------------------------------------------------------------------
# VAE


def vae_names(config: Mapping[str, Any]) -> NameMap:
    """The name map of a diffusers ``AutoencoderKL`` with this config. The decoder's up blocks are
    numbered from the bottom in the original (``up.0`` is the last diffusers up block)."""
    levels = len(config["block_out_channels"])
    per_level = int(config.get("layers_per_block", 2))
    pairs = [NamePair(d, o) for d, o in VAE_TOP]
    for level in range(levels):
        for j in range(per_level):
            pairs += _expand(
                f"encoder.down_blocks.{level}.resnets.{j}", f"encoder.down.{level}.block.{j}", VAE_RESNET
            )
        if level < levels - 1:
            pairs.append(
                NamePair(
                    f"encoder.down_blocks.{level}.downsamplers.0.conv",
                    f"encoder.down.{level}.downsample.conv",
                )
            )
    for level in range(levels):
        original = f"decoder.up.{levels - 1 - level}"
        for j in range(per_level + 1):
            pairs += _expand(f"decoder.up_blocks.{level}.resnets.{j}", f"{original}.block.{j}", VAE_RESNET)
        if level < levels - 1:
            pairs.append(
                NamePair(f"decoder.up_blocks.{level}.upsamplers.0.conv", f"{original}.upsample.conv")
            )
    for part in ("encoder", "decoder"):
        for j in range(2):
            pairs += _expand(f"{part}.mid_block.resnets.{j}", f"{part}.mid.block_{j + 1}", VAE_RESNET)
        if config.get("mid_block_add_attention", True):
            pairs += [
                NamePair(f"{part}.mid_block.attentions.0.{d}", f"{part}.mid.attn_1.{o}", kind)
                for d, o, kind in VAE_ATTENTION
            ]
    return NameMap("VAE", pairs)


# ---------------------------------------------------------------------------------------------------------
# CLIP text encoders


def clip_root(names: Iterable[str]) -> str:
    """``"text_model."`` when a transformers CLIP module nests its transformer under ``text_model`` (always
    ``CLIPTextModelWithProjection``; ``CLIPTextModel`` before transformers 5.6), else ``""``."""
    return "text_model." if any(n.startswith("text_model.") for n in names) else ""


def clip_names(layout: ClipLayout, num_layers: int, *, root: str = "", projection: bool = False) -> NameMap:
    """The name map of a transformers CLIP text model (``root`` from :func:`clip_root`) stored in
    ``layout``: ``clip_l`` (transformers names under ``text_model.``, as SD1 and SDXL store CLIP-L and as
    kohya names every text encoder in LoRA files) or ``open_clip`` (SD2's and SDXL's OpenCLIP).
    ``projection``: include the text projection (``CLIPTextModelWithProjection``)."""
    pairs: list[NamePair] = []
    if layout == "clip_l":
        pairs += [NamePair(root + d, o) for d, o in CLIP_L_TOP]
        if projection:
            pairs.append(NamePair("text_projection", "text_projection"))
        return NameMap("CLIP-L", pairs)
    pairs += [NamePair(root + d, o, kind) for d, o, kind in OPEN_CLIP_TOP]
    for i in range(num_layers):
        layer, block = f"{root}encoder.layers.{i}", f"transformer.resblocks.{i}"
        pairs += _expand(layer, block, OPEN_CLIP_LAYER)
        for part, module in enumerate(OPEN_CLIP_QKV):
            for leaf in ("weight", "bias"):
                pairs.append(
                    NamePair(f"{layer}.{module}.{leaf}", f"{block}.attn.in_proj_{leaf}", "fused_qkv", part)
                )
    if projection:
        d, o, kind = OPEN_CLIP_PROJECTION
        pairs.append(NamePair(d, o, kind))
    return NameMap("OpenCLIP", pairs)


def text_encoder_prefixes(family: str) -> Sequence[tuple[str, ClipLayout]]:
    """(prefix, layout) of each text encoder of a family in the original layout, in encoder order."""
    if family == "sd15":
        return [(SD1_CLIP_PREFIX, "clip_l")]
    if family == "sd2":
        return [(SD2_CLIP_PREFIX, "open_clip")]
    if family == "sdxl":
        return [(SDXL_CLIP_L_PREFIX, "clip_l"), (SDXL_CLIP_G_PREFIX, "open_clip")]
    if family == "sdxl_refiner":
        return [(SDXL_REFINER_CLIP_G_PREFIX, "open_clip")]
    raise ValueError(f"unknown family {family!r}")
