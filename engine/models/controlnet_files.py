"""ControlNet files as users have them: detection from tensor names and shapes, and loading.

Layouts read (safetensors, or ``.pth``/``.ckpt``/``.bin`` through ``torch.load(weights_only=True)``):

- the original single-file layout of lllyasviel's ControlNet (``control_model.input_blocks.*``,
  ``zero_convs.*``, ``input_hint_block.*``, ``middle_block_out.*``; with or without the ``control_model.``
  prefix), renamed to diffusers' names by diffusers' own ``convert_controlnet_checkpoint`` (plus SDXL's
  ``label_emb``, which that converter leaves out);
- diffusers' layout: a folder with ``config.json`` and ``diffusion_pytorch_model.safetensors``, or that
  safetensors file alone (renamed, as users download them).

The diffusers ``ControlNetModel`` config comes from the shapes (levels, widths, depths, attention layout,
hint encoder), over the shipped family config (``configs/<family>/controlnet``) for what shapes cannot show;
nothing is downloaded. T2I-Adapters are read by ``t2i_adapter_files`` and Control-LoRAs by ``control_lora``;
files of other control formats (ControlNet-LLLite, ControlNet-Union, ...) are refused with an error that
names the format.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from atelier.engine.models.derive import int_children
from atelier.engine.models.errors import CheckpointError
from atelier.engine.models.files import TensorIndex, load_torch_state_dict, open_single_file
from atelier.engine.models.info import family_config
from atelier.engine.models.names import unet_names

#: the prefix of the original layout's tensors (files saved from the training code carry it)
ORIGINAL_PREFIX = "control_model."
#: a tensor whose presence marks a "diff" ControlNet (weights stored as a difference to the base UNet)
DIFFERENCE_KEY = "difference"
_DIFFUSERS_MARK = "controlnet_cond_embedding.conv_in.weight"
_ORIGINAL_MARK = "input_hint_block.0.weight"
#: SDXL's size/pooled-text embedding, which diffusers' ControlNet converter does not map
_LABEL_EMB = (
    ("add_embedding.linear_1", "label_emb.0.0"),
    ("add_embedding.linear_2", "label_emb.0.2"),
)
_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
# Heads are not visible in shapes: SD1 ControlNets (convolutional proj_in) use 8 heads, SD2/SDXL ones
# (linear proj_in) 64 channels per head, as their UNets.
_SD1_HEADS = 8
_HEAD_CHANNELS = 64

#: the hint encoder: diffusers ``controlnet_cond_embedding`` -> original ``input_hint_block`` (convolutions
#: at even indices, SiLU between them)
_HINT_CONV_IN = ("controlnet_cond_embedding.conv_in", "input_hint_block.0")
_HINT_BLOCK = ("controlnet_cond_embedding.blocks.{n}", "input_hint_block.{m}")
_HINT_CONV_OUT = ("controlnet_cond_embedding.conv_out", "input_hint_block.{m}")
_ZERO_CONV = ("controlnet_down_blocks.{n}", "zero_convs.{n}.0")
_MID_OUT = ("controlnet_mid_block", "middle_block_out.0")


class ControlNetFormatError(CheckpointError):
    """A control model file of a format Atelier does not load (named in the message)."""


@dataclass(frozen=True)
class ControlNetInfo:
    """What a ControlNet file holds: its family (``sd15``, ``sd2``, ``sdxl``, from the structure), layout
    (``original``, ``diffusers``, ``diffusers_folder``), the diffusers config and whether it is a diff."""

    path: str
    family: str
    layout: str
    config: dict[str, Any]
    difference: bool = False

    @property
    def context_dim(self) -> int:
        return int(self.config["cross_attention_dim"])


def _other_format(keys: list[str]) -> str | None:
    """The name of a known non-ControlNet control format these keys belong to, if any."""
    key_set = set(keys)
    if "lora_controlnet" in key_set:
        return "Control-LoRA (Stability's control-lora; the ControlNet loaders build it from the model)"
    if any(k.startswith("lllite_") for k in keys):
        return "ControlNet-LLLite (kohya): not supported"
    if any(k.startswith(("adapter.body.", "body.0.", "adapter.conv_in.")) for k in keys):
        return "T2I-Adapter (read by t2i_adapter_files, not as a ControlNet)"
    if any(k.startswith(("control_add_embedding.", "task_embedding")) for k in keys):
        return "ControlNet-Union (xinsir ProMax): not supported"
    return None


def _layout(index: TensorIndex) -> tuple[str, str]:
    """(layout, prefix) of a single file; raises for anything that is not a ControlNet."""
    keys = index.keys()
    if _DIFFUSERS_MARK in index:
        return "diffusers", ""
    if ORIGINAL_PREFIX + _ORIGINAL_MARK in index:
        return "original", ORIGINAL_PREFIX
    if _ORIGINAL_MARK in index:
        return "original", ""
    other = _other_format(keys)
    if other is not None:
        raise ControlNetFormatError(index.path, f"this is a {other}")
    if any(k.startswith("model.diffusion_model.") for k in keys):
        raise ControlNetFormatError(
            index.path,
            "this is a Stable Diffusion checkpoint, not a ControlNet (put it in models/checkpoints)",
        )
    shown = ", ".join(keys[:3])
    raise ControlNetFormatError(
        index.path,
        f"not a ControlNet: neither {ORIGINAL_PREFIX}{_ORIGINAL_MARK} (original layout) nor {_DIFFUSERS_MARK} "
        f"(diffusers layout) among its {len(keys)} tensors (first: {shown})",
    )


def _layers_per_block(keys: list[str]) -> int:
    """Res blocks per level of an original-layout ControlNet: ``input_blocks`` 1.. hold levels x res
    blocks plus one downsampler between levels (``input_blocks.N.0.op``)."""
    blocks = [n for n in int_children(keys, "input_blocks.") if n > 0]
    samplers = {n for n in blocks if f"input_blocks.{n}.0.op.weight" in keys}
    levels = len(samplers) + 1
    per_level, rest = divmod(len(blocks) - len(samplers), levels)
    if rest or per_level < 1:
        raise ValueError(f"{len(blocks)} input blocks do not split into {levels} levels")
    return per_level


def original_to_diffusers(
    state: Mapping[str, torch.Tensor], layers_per_block: int
) -> dict[str, torch.Tensor]:
    """An original-layout ControlNet state dict (no prefix) in diffusers' names, by diffusers' converter."""
    from atelier.engine.models.libraries import convert_controlnet_checkpoint

    converted = convert_controlnet_checkpoint(dict(state), {"layers_per_block": layers_per_block})
    out = {k: v for k, v in converted.items() if v is not None}
    for new, old in _LABEL_EMB:
        for suffix in (".weight", ".bias"):
            if old + suffix in state:
                out[new + suffix] = state[old + suffix]
    return out


def derive_config(shapes: Mapping[str, tuple[int, ...]]) -> tuple[str, dict[str, Any]]:
    """(family, diffusers ControlNetModel config) from diffusers-named tensor shapes."""
    keys = list(shapes)
    levels = int_children(keys, "down_blocks.")
    channels = [shapes[f"down_blocks.{n}.resnets.0.conv1.weight"][0] for n in levels]
    per_level = len(int_children(keys, "down_blocks.0.resnets."))
    attention = [f"down_blocks.{n}.attentions.0.proj_in.weight" in shapes for n in levels]
    depths = [
        len(int_children(keys, f"down_blocks.{n}.attentions.0.transformer_blocks.")) if att else 1
        for n, att in zip(levels, attention, strict=True)
    ]
    attn_key = next((k for k in keys if k.endswith("attn2.to_k.weight")), None)
    if attn_key is None:
        raise ValueError("no cross-attention layer found")
    context = shapes[attn_key][1]
    proj_in = next(k for k in keys if k.endswith("attentions.0.proj_in.weight"))
    linear = len(shapes[proj_in]) == 2
    sdxl = "add_embedding.linear_1.weight" in shapes
    family = "sdxl" if sdxl else ("sd2" if linear else "sd15")
    config = family_config(family, "controlnet")
    embed = [shapes["controlnet_cond_embedding.conv_in.weight"][0]]
    embed += [
        shapes[f"controlnet_cond_embedding.blocks.{n}.weight"][0]
        for n in range(1, 64, 2)
        if f"controlnet_cond_embedding.blocks.{n}.weight" in shapes
    ]
    config.update(
        in_channels=shapes["conv_in.weight"][1],
        conditioning_channels=shapes["controlnet_cond_embedding.conv_in.weight"][1],
        conditioning_embedding_out_channels=embed,
        block_out_channels=channels,
        layers_per_block=per_level,
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        transformer_layers_per_block=depths,
        cross_attention_dim=context,
        use_linear_projection=linear,
        attention_head_dim=_SD1_HEADS if not linear else [max(1, c // _HEAD_CHANNELS) for c in channels],
        mid_block_type="UNetMidBlock2DCrossAttn"
        if "mid_block.attentions.0.proj_in.weight" in shapes
        else "UNetMidBlock2D",
    )
    if sdxl:
        pooled_in = shapes["add_embedding.linear_1.weight"][1]
        time_dim = int(config["addition_time_embed_dim"])
        if pooled_in != int(config["projection_class_embeddings_input_dim"]):
            # tiny or refiner-like models: 6 size values (SDXL) of time_dim each plus the pooled width
            config["projection_class_embeddings_input_dim"] = pooled_in
            config["addition_time_embed_dim"] = _time_embed_dim(pooled_in, time_dim)
    else:
        for key in (
            "addition_embed_type",
            "addition_time_embed_dim",
            "projection_class_embeddings_input_dim",
        ):
            config.pop(key, None)
    return family, config


def _time_embed_dim(pooled_in: int, default: int) -> int:
    """SDXL's per-value size embedding width: ``pooled_in = pooled + 6 * dim``; the shipped one when it
    fits, else the largest power of two that leaves a positive pooled width (tiny models use 8)."""
    for dim in (default, 256, 128, 64, 32, 16, 8, 4):
        if pooled_in - 6 * dim > 0 and (pooled_in - 6 * dim) % 8 == 0 and dim <= default:
            return dim
    return default


def _index_folder(path: Path) -> tuple[dict[str, Any], Path]:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(path, "a diffusers ControlNet folder needs config.json")
    for name in _WEIGHT_FILES:
        if (path / name).is_file():
            return json.loads(config_file.read_text(encoding="utf-8")), path / name
    raise CheckpointError(path, f"no weights in the folder (expected one of {', '.join(_WEIGHT_FILES)})")


def detect_controlnet(path: str | Path) -> ControlNetInfo:
    """What a ControlNet file or diffusers folder holds, from its names and shapes (headers only)."""
    path = Path(path)
    if path.name in _WEIGHT_FILES and (path.parent / "config.json").is_file():
        path = path.parent  # a diffusers folder's weights, as model listings name them
    if path.is_dir():
        config, weights = _index_folder(path)
        index = open_single_file(weights)
        family, derived = _derived(index, "")
        config = {k: v for k, v in config.items() if not k.startswith("_") or k == "_class_name"}
        return ControlNetInfo(str(path), family, "diffusers_folder", config)
    index = open_single_file(path)
    layout, prefix = _layout(index)
    if layout == "diffusers":
        family, config = _derived(index, "")
        return ControlNetInfo(str(path), family, layout, config, DIFFERENCE_KEY in index)
    family, config = _derived(index, prefix)
    return ControlNetInfo(str(path), family, layout, config, DIFFERENCE_KEY in index)


def _derived(index: TensorIndex, prefix: str) -> tuple[str, dict[str, Any]]:
    keys = [k[len(prefix) :] for k in index.keys() if k.startswith(prefix)]
    try:
        if _DIFFUSERS_MARK in keys:
            shapes = {k: index.shape(prefix + k) for k in keys}
        else:
            per_level = _layers_per_block(keys)
            stand_ins = {k: torch.empty(0) for k in keys}  # names only: shapes follow the renaming
            renamed = _rename_map(stand_ins, per_level)
            shapes = {new: index.shape(prefix + old) for new, old in renamed.items()}
        return derive_config(shapes)
    except (KeyError, IndexError, ValueError, StopIteration) as exc:
        raise CheckpointError(
            index.path,
            f"incomplete or unsupported ControlNet: {type(exc).__name__} {exc} while reading its layout",
        ) from None


def _rename_map(state: Mapping[str, torch.Tensor], per_level: int) -> dict[str, str]:
    """diffusers name -> original name, found by converting tensors that carry their own names."""
    tagged = {name: _Tag(name) for name in state}
    converted = original_to_diffusers(tagged, per_level)  # type: ignore[arg-type]
    return {new: tag.name for new, tag in converted.items()}


class _Tag:
    """A stand-in tensor that remembers the original name it came from (diffusers' converter only moves
    values between names)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def read_controlnet_state(path: str | Path, info: ControlNetInfo) -> dict[str, torch.Tensor]:
    """The file's tensors in diffusers' names (the marker of a diff ControlNet left out)."""
    path = Path(path)
    if path.name in _WEIGHT_FILES and (path.parent / "config.json").is_file():
        path = path.parent
    if info.layout == "diffusers_folder":
        _, weights = _index_folder(path)
        return _read_all(weights)
    state = _read_all(path)
    state.pop(DIFFERENCE_KEY, None)
    if info.layout == "diffusers":
        return state
    prefix = ORIGINAL_PREFIX if any(k.startswith(ORIGINAL_PREFIX) for k in state) else ""
    plain = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return original_to_diffusers(plain, int(info.config["layers_per_block"]))


def _read_all(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix.lower() in (".safetensors", ".sft"):
        index = open_single_file(path)
        return {k: index.read(k) for k in index.keys()}
    return load_torch_state_dict(path)


def build_controlnet(
    info: ControlNetInfo,
    state: Mapping[str, torch.Tensor],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> Any:
    """A diffusers ``ControlNetModel`` from a config and diffusers-named tensors (strict: every tensor
    present with its shape)."""
    from atelier.engine.models.build import assign_weights, build_empty, resolve_dtype
    from atelier.engine.models.libraries import ControlNetModel

    dtype = resolve_dtype(device, dtype)
    config = {k: v for k, v in info.config.items() if not k.startswith("_")}
    module = build_empty(lambda: ControlNetModel.from_config(config))
    return assign_weights(module, state, device=device, dtype=dtype, path=info.path, component="controlnet")


def add_base_weights(state: Mapping[str, torch.Tensor], unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A diff ControlNet's tensors made whole: each tensor that the base UNet has under the same diffusers
    name (the copied encoder: ``conv_in``, ``time_embedding``, ``down_blocks``, ``mid_block``) gets the
    UNet's weight added; the hint encoder and zero convolutions are kept as they are."""
    base = unet.state_dict()
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        weight = base.get(name)
        if weight is not None and tuple(weight.shape) == tuple(value.shape):
            out[name] = value.float() + weight.detach().to("cpu", torch.float32)
        else:
            out[name] = value
    return out


def controlnet_original_names(state: Mapping[str, Any], unet_config: Mapping[str, Any]) -> dict[str, str]:
    """diffusers name -> original-layout name (no prefix) for each tensor name of a ControlNet state dict
    (the keys of ``state``; values unused), for a ControlNet copied from a UNet of ``unet_config``."""
    unet_map = unet_names(unet_config)
    hint_blocks = sorted(
        {int(k.split(".")[2]) for k in state if k.startswith("controlnet_cond_embedding.blocks.")}
    )
    fixed: dict[str, str] = {_HINT_CONV_IN[0]: _HINT_CONV_IN[1], _MID_OUT[0]: _MID_OUT[1]}
    for n in hint_blocks:
        fixed[_HINT_BLOCK[0].format(n=n)] = _HINT_BLOCK[1].format(m=2 * (n + 1))
    fixed[_HINT_CONV_OUT[0]] = _HINT_CONV_OUT[1].format(m=2 * (len(hint_blocks) + 1))
    zero = {int(k.split(".")[1]) for k in state if k.startswith("controlnet_down_blocks.")}
    for n in zero:
        fixed[_ZERO_CONV[0].format(n=n)] = _ZERO_CONV[1].format(n=n)
    out: dict[str, str] = {}
    for key in state:
        module, _, leaf = key.rpartition(".")
        out[key] = f"{fixed[module]}.{leaf}" if module in fixed else unet_map.to_original(key)
    return out
