"""T2I-Adapters on the CONTROL_NET socket (as in ComfyUI, ControlNetLoader loads them and the ControlNet
Apply nodes attach them): the handle, whether an adapter fits a UNet, and its features for a hint.

An adapter turns the hint image (at the latent's pixel size; pixel-unshuffled by 8, or by 16 for SDXL)
into one feature map per UNet level, independent of the noisy latent and the timestep. The sampler's model
call (``controlnet.apply_control``) scales them by the strength and hands them to diffusers' UNet as
``down_intrablock_additional_residuals``: added after each down level's last block (and, for SDXL, after
the middle block), for the rows of the cond/uncond batch whose entries carry the hint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from atelier.engine.model_loader import LoadOptions, ModelLoader

from .control_handle import LoadedControl
from .t2i_adapter_files import T2IAdapterInfo, build_t2i_adapter, read_t2i_adapter

#: a feature map's (channels, downscale relative to the latent grid)
Point = tuple[int, int]


@dataclass(frozen=True, eq=False)
class T2IAdapterHandle(LoadedControl):
    """CONTROL_NET carrying a T2I-Adapter: a loaded diffusers ``T2IAdapter`` and what its file said."""

    net: Any  # diffusers T2IAdapter
    info: T2IAdapterInfo
    name: str = ""
    kind: str = "T2I-Adapter"

    @property
    def in_channels(self) -> int:
        return int(self.info.config["in_channels"])

    @property
    def unshuffle(self) -> int:
        """Pixels per side that one input cell of the adapter covers (8 or 16)."""
        return int(self.info.config["downscale_factor"])

    def mismatch(self, unet_config: Mapping[str, Any]) -> str | None:
        """What keeps this adapter's features from fitting a UNet of ``unet_config``, or None."""
        mine = adapter_points(self.info.config)
        theirs = unet_points(unet_config)
        if len(mine) <= len(theirs) and all(a == b for a, b in zip(mine, theirs, strict=False)):
            return None
        return (
            f"its features {_show(mine)} vs the model's injection points {_show(theirs[: max(len(mine), 1)])}"
        )

    def features(self, pixels: Tensor, strength: float) -> list[Tensor]:
        """The adapter's features for hint pixels [B, C, H, W] (0..1, H and W multiples of ``unshuffle``),
        scaled by ``strength``; a one-channel adapter gets the mean of the hint's channels (ComfyUI)."""
        if self.in_channels == 1 and pixels.shape[1] != 1:
            pixels = pixels.mean(dim=1, keepdim=True)
        with torch.inference_mode():
            out = self.net(pixels.to(self.device, self.dtype))
        return [f * strength for f in out]


def adapter_points(config: Mapping[str, Any]) -> list[Point]:
    """(channels, downscale vs the latent grid) of each feature a ``T2IAdapter`` config makes."""
    channels = list(config["channels"])
    kind = config["adapter_type"]
    if kind == "full_adapter":
        return [(c, 2**i) for i, c in enumerate(channels)]
    if kind == "full_adapter_xl":  # 16x unshuffle (half the latent grid); one downsampler, at block 2
        return [(c, 4 if i >= 2 else 2) for i, c in enumerate(channels)]
    if kind == "light_adapter":
        return [(c, 2**i) for i, c in enumerate(channels)] + [(channels[-1], 2 ** len(channels))]
    raise ValueError(f"unknown adapter_type {kind!r}")


def unet_points(config: Mapping[str, Any]) -> list[Point]:
    """Where diffusers' UNet adds ``down_intrablock_additional_residuals``, in order: after each down
    level's last block (before its downsampler for attention levels, after it for plain ones), then after
    the middle block."""
    widths = list(config.get("block_out_channels", ()))
    types = list(config.get("down_block_types", ()))
    points: list[Point] = []
    for i, (width, kind) in enumerate(zip(widths, types, strict=False)):
        last = i == len(widths) - 1
        after_downsampler = "CrossAttn" not in kind and not last
        points.append((width, 2 ** (i + 1) if after_downsampler else 2**i))
    if widths:
        points.append((widths[-1], 2 ** (len(widths) - 1)))
    return points


def _show(points: list[Point]) -> str:
    return "[" + ", ".join(f"{c}ch at 1/{s}" for c, s in points) + "]"


def load_t2i_adapter_handle(models: ModelLoader, path: Path, name: str = "") -> T2IAdapterHandle:
    """A T2I-Adapter file loaded once per file version by ``models`` (onto the engine's device)."""
    net, info = models.load(path, _t2i_loader)
    return T2IAdapterHandle(net, info, name=name or path.name)


def _t2i_loader(path: Path, options: LoadOptions) -> tuple[Any, T2IAdapterInfo]:
    info, state = read_t2i_adapter(path)
    return build_t2i_adapter(info, state, device=options.device, dtype=options.dtype), info
