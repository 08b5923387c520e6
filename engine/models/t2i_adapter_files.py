"""T2I-Adapter files as users have them: detection from tensor names and shapes, renaming, building.

Layouts read (safetensors, or ``.pth``/``.pt``/``.bin`` through ``torch.load(weights_only=True)``):

- TencentARC's original layout (``t2iadapter_canny_sd14v1.pth`` and friends): the full adapter
  (``conv_in``, ``body.N.block1``/``block2``/``in_conv``, ``nums_rb`` res blocks per level flattened into
  ``body``) and the light one (``body.N.in_conv``/``out_conv``/``body.M.block1``); a file wrapped in an
  ``adapter`` entry is unwrapped. SDXL-shaped original files (16x pixel unshuffle) are read too;
- diffusers' layout (``adapter.conv_in``, ``adapter.body.N.resnets.M.block1``...): a folder with
  ``config.json`` and ``diffusion_pytorch_model.safetensors``, or that file alone, renamed.

The model is diffusers' ``T2IAdapter``; its config comes from the shapes over the family's shipped config
(``configs/<family>/t2i_adapter``): the pixel-unshuffle input width tells SD1.x adapters (8x: 64 values a
pixel channel) from SDXL ones (16x: 256), as ComfyUI does. Original variants that diffusers' classes cannot
hold (3x3 skip or output convolutions, strided-convolution downsampling) are refused by name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from atelier.engine.models.derive import int_children
from atelier.engine.models.errors import CheckpointError
from atelier.engine.models.files import (
    SAFETENSORS_SUFFIXES,
    open_single_file,
    read_torch_file,
)
from atelier.engine.models.info import family_config

_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_CLASS_NAME = "T2IAdapter"
#: pixel-unshuffle factors: SD1.x adapters work at the latent's grid (8x), SDXL ones at half of it (16x)
_UNSHUFFLE = {"sd15": 8, "sdxl": 16}

# Original <-> diffusers names, as (original, diffusers) patterns over the level ``i``, res block ``j``
# and flat body index ``k`` (full adapter: ``k = i * res_blocks + j``).
FULL_NAMES = (
    ("conv_in", "adapter.conv_in"),
    ("body.{k}.block1", "adapter.body.{i}.resnets.{j}.block1"),
    ("body.{k}.block2", "adapter.body.{i}.resnets.{j}.block2"),
    ("body.{k0}.in_conv", "adapter.body.{i}.in_conv"),  # k0: the level's first res block
)
LIGHT_NAMES = (
    ("body.{i}.in_conv", "adapter.body.{i}.in_conv"),
    ("body.{i}.out_conv", "adapter.body.{i}.out_conv"),
    ("body.{i}.body.{j}.block1", "adapter.body.{i}.resnets.{j}.block1"),
    ("body.{i}.body.{j}.block2", "adapter.body.{i}.resnets.{j}.block2"),
)


@dataclass(frozen=True)
class T2IAdapterInfo:
    """What a T2I-Adapter file holds: family (``sd15``: SD1.x-shaped, ``sdxl``), layout (``original``,
    ``diffusers``, ``diffusers_folder``) and the diffusers ``T2IAdapter`` config."""

    path: str
    family: str
    layout: str
    config: dict[str, Any]

    @property
    def adapter_type(self) -> str:
        return str(self.config["adapter_type"])


def looks_like_t2i_adapter(keys: list[str]) -> bool:
    """Whether tensor names are a T2I-Adapter's (either layout)."""
    key_set = set(keys)
    if any(k.startswith("adapter.") for k in keys):
        return True
    return ("conv_in.weight" in key_set or "body.0.in_conv.weight" in key_set) and any(
        k.startswith("body.0.") for k in keys
    )


def weights_path(path: Path) -> Path:
    """A diffusers folder for its weights file (as model listings name it), else the path itself."""
    if path.name in _WEIGHT_FILES and (path.parent / "config.json").is_file():
        return path.parent
    return path


def folder_class(path: Path) -> str | None:
    """The ``_class_name`` of a diffusers folder's config (None if ``path`` is not such a folder)."""
    config = path / "config.json"
    if not (path.is_dir() and config.is_file()):
        return None
    try:
        return str(json.loads(config.read_text(encoding="utf-8")).get("_class_name", ""))
    except (OSError, ValueError):
        return None


def is_t2i_adapter_file(path: str | Path) -> bool:
    """Whether a file in models/controlnet (or a diffusers folder) is a T2I-Adapter (headers only for
    safetensors; torch files are read)."""
    path = weights_path(Path(path))
    if path.is_dir():
        return folder_class(path) == _CLASS_NAME
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        return looks_like_t2i_adapter(open_single_file(path).keys())
    try:
        return looks_like_t2i_adapter(list(read_state(path)))
    except CheckpointError:
        return False


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a single file as stored (an ``adapter``/``state_dict`` wrapper unwrapped)."""
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        index = open_single_file(path)
        return {k: index.read(k) for k in index.keys()}
    data = read_torch_file(path)
    while isinstance(data, dict):
        inner = data.get("state_dict", data.get("adapter"))
        if not isinstance(inner, dict):
            break
        data = inner
    if not isinstance(data, dict):
        raise CheckpointError(path, f"PyTorch file holds a {type(data).__name__}, not a state dict")
    return {str(k): v for k, v in data.items() if isinstance(v, torch.Tensor)}


def _unsupported_original(state: Mapping[str, torch.Tensor]) -> str | None:
    if any(".skep." in k for k in state):
        return "with skip convolutions (sk=False)"
    if any(".down_opt.op." in k for k in state):
        return "with strided-convolution downsampling (use_conv=True)"
    block2 = next((v for k, v in state.items() if re.fullmatch(r"body\.\d+\.block2\.weight", k)), None)
    if block2 is not None and block2.dim() == 4 and block2.shape[-1] != 1:
        return f"with {block2.shape[-1]}x{block2.shape[-1]} output convolutions (ksize != 1)"
    return None


def original_name_pairs(kind: str, levels: int, res_blocks: int) -> list[tuple[str, str]]:
    """(original, diffusers) module names of an adapter of ``kind`` (``full``/``light``) with ``levels``
    body blocks of ``res_blocks`` res blocks each."""
    table = FULL_NAMES if kind == "full" else LIGHT_NAMES
    pairs: list[tuple[str, str]] = []
    for original, diffusers in table:
        if "{" not in original:
            pairs.append((original, diffusers))
            continue
        for i in range(levels):
            for j in range(res_blocks):
                fields = {"i": i, "j": j, "k": i * res_blocks + j, "k0": i * res_blocks}
                pair = (original.format(**fields), diffusers.format(**fields))
                if pair not in pairs:
                    pairs.append(pair)
    return pairs


def original_to_diffusers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An original-layout adapter state dict in diffusers' names."""
    keys = list(state)
    light = "body.0.in_conv.weight" in state and "conv_in.weight" not in state
    if light:
        levels = len(int_children(keys, "body."))
        res_blocks = len(int_children(keys, "body.0.body."))
        pairs = original_name_pairs("light", levels, res_blocks)
    else:
        flat = len(int_children(keys, "body."))
        # a level's first res block changes the width (or downsamples): levels are counted by width
        # changes and downsamplers, which leave no weights; a level is ``flat / levels`` blocks.
        res_blocks = _full_res_blocks(state, flat)
        pairs = original_name_pairs("full", flat // res_blocks, res_blocks)
    renames = dict(pairs)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        if module not in renames:
            raise KeyError(f"unexpected tensor {key}")
        out[f"{renames[module]}.{leaf}"] = value
    return out


def _full_res_blocks(state: Mapping[str, torch.Tensor], flat: int) -> int:
    """Res blocks per level of an original full adapter: TencentARC's are 2 (``nums_rb``); a flat body
    whose width-changing blocks (``in_conv``) sit at other strides tells otherwise."""
    starts = sorted(int(k.split(".")[1]) for k in state if re.fullmatch(r"body\.\d+\.in_conv\.weight", k))
    for res_blocks in (2, 3, 1, 4):
        if flat % res_blocks == 0 and all(s % res_blocks == 0 for s in starts):
            return res_blocks
    raise ValueError(f"{flat} body blocks do not split into levels")


def derive_config(shapes: Mapping[str, tuple[int, ...]]) -> tuple[str, dict[str, Any]]:
    """(family, diffusers ``T2IAdapter`` config) from diffusers-named tensor shapes."""
    keys = list(shapes)
    levels = int_children(keys, "adapter.body.")
    res_blocks = len(int_children(keys, "adapter.body.0.resnets."))
    if "adapter.conv_in.weight" in shapes:
        unshuffled = shapes["adapter.conv_in.weight"][1]
        family = (
            "sdxl" if unshuffled % (_UNSHUFFLE["sdxl"] ** 2) == 0 and unshuffled // 256 in (1, 3) else "sd15"
        )
        channels = [shapes[f"adapter.body.{i}.resnets.0.block1.weight"][0] for i in levels]
        adapter_type = "full_adapter_xl" if family == "sdxl" else "full_adapter"
    else:
        family = "sd15"
        unshuffled = shapes["adapter.body.0.in_conv.weight"][1]
        channels = [shapes[f"adapter.body.{i}.out_conv.weight"][0] for i in levels[:-1]]
        adapter_type = "light_adapter"
    factor = _UNSHUFFLE[family]
    if unshuffled % (factor * factor):
        raise ValueError(f"input width {unshuffled} is not a multiple of {factor * factor} (pixel unshuffle)")
    config = family_config(family, "t2i_adapter")
    config.update(
        adapter_type=adapter_type,
        channels=channels,
        num_res_blocks=res_blocks,
        downscale_factor=factor,
        in_channels=unshuffled // (factor * factor),
    )
    return family, config


def detect_t2i_adapter(path: str | Path) -> T2IAdapterInfo:
    """What a T2I-Adapter file or diffusers folder holds."""
    return read_t2i_adapter(path)[0]


def read_t2i_adapter(path: str | Path) -> tuple[T2IAdapterInfo, dict[str, torch.Tensor]]:
    """(what a T2I-Adapter file or diffusers folder holds, its tensors in diffusers' names): one read."""
    path = weights_path(Path(path))
    state, layout, folder_config = _read(path)
    try:
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        family, config = derive_config(shapes)
    except (KeyError, IndexError, ValueError) as exc:
        raise CheckpointError(
            path,
            f"incomplete or unsupported T2I-Adapter: {type(exc).__name__} {exc} while reading its layout",
        ) from None
    if folder_config is not None:
        config.update({k: v for k, v in folder_config.items() if not k.startswith("_")})
        family = "sdxl" if config.get("adapter_type") == "full_adapter_xl" else "sd15"
    return T2IAdapterInfo(str(path), family, layout, config), state


def _read(path: Path) -> tuple[dict[str, torch.Tensor], str, dict[str, Any] | None]:
    """(diffusers-named tensors, layout, folder config or None)."""
    if path.is_dir():
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        weights = next((path / n for n in _WEIGHT_FILES if (path / n).is_file()), None)
        if weights is None:
            raise CheckpointError(
                path, f"no weights in the folder (expected one of {', '.join(_WEIGHT_FILES)})"
            )
        return read_state(weights), "diffusers_folder", config
    state = read_state(path)
    if any(k.startswith("adapter.") for k in state):
        return state, "diffusers", None
    problem = _unsupported_original(state)
    if problem is not None:
        raise CheckpointError(path, f"this T2I-Adapter variant ({problem}) is not supported")
    try:
        return original_to_diffusers(state), "original", None
    except (KeyError, ValueError) as exc:
        raise CheckpointError(path, f"incomplete or unsupported T2I-Adapter: {exc}") from None


def build_t2i_adapter(
    info: T2IAdapterInfo,
    state: Mapping[str, torch.Tensor],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> Any:
    """A diffusers ``T2IAdapter`` from a config and diffusers-named tensors (strict)."""
    from atelier.engine.models.build import assign_weights, build_empty, resolve_dtype
    from atelier.engine.models.libraries import T2IAdapter

    dtype = resolve_dtype(device, dtype)
    config = {k: v for k, v in info.config.items() if not k.startswith("_")}
    module = build_empty(lambda: T2IAdapter.from_config(config))
    return assign_weights(module, state, device=device, dtype=dtype, path=info.path, component="t2i_adapter")
