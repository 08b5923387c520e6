"""Tiny random-weight T2I-Adapters for tests and benchmarks, written in the layouts users have.

A tiny adapter is diffusers' ``T2IAdapter`` with the tiny UNets' widths (``tiny.py``: 32 and 64 channels,
two levels), so that its features land on the tiny model's injection points: a full SD1.x adapter
(8x pixel unshuffle, one feature per level), an SDXL one (16x unshuffle, ``full_adapter_xl``) and a light
one (SD1.x-shaped, one feature more than the tiny UNet takes: for file tests). Every tensor is
deterministic random. Written as

- ``original``: TencentARC's layout (``conv_in``, ``body.N.block1``...), renamed with the name table of
  ``t2i_adapter_files`` in reverse; ``.pth`` names get a torch pickle (as TencentARC ship them);
- ``diffusers``: the ``diffusion_pytorch_model.safetensors`` state dict in one file (renamed), or
  ``diffusers_folder``: a folder with ``config.json`` beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch

from atelier.engine.models.controlnet_tiny import save_net_files
from atelier.engine.models.derive import int_children
from atelier.engine.models.t2i_adapter_files import original_name_pairs
from atelier.engine.models.tiny import _derived_seed, _random_tensor

Layout = Literal["original", "diffusers", "diffusers_folder"]
Kind = Literal["sd15", "sdxl", "sd15_light"]

_TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "sd15": {
        "adapter_type": "full_adapter",
        "channels": [32, 64],
        "num_res_blocks": 2,
        "downscale_factor": 8,
    },
    "sdxl": {
        "adapter_type": "full_adapter_xl",
        "channels": [32, 64],
        "num_res_blocks": 2,
        "downscale_factor": 16,
    },
    "sd15_light": {
        "adapter_type": "light_adapter",
        "channels": [32, 64],
        "num_res_blocks": 2,
        "downscale_factor": 8,
    },
}


def build_tiny_t2i_adapter(kind: Kind, *, seed: int = 0, in_channels: int = 3) -> Any:
    """A tiny diffusers ``T2IAdapter`` of ``kind``, every tensor random (deterministic per ``seed``)."""
    from atelier.engine.models.libraries import T2IAdapter

    net = T2IAdapter(in_channels=in_channels, **_TINY_CONFIGS[kind])
    generator = torch.Generator().manual_seed(_derived_seed(seed, f"t2i_adapter_{kind}"))
    with torch.no_grad():
        for name, tensor in net.state_dict(keep_vars=True).items():
            tensor.copy_(_random_tensor(name, tuple(tensor.shape), generator))
    net.eval().requires_grad_(False)
    return net


def to_original_names(state: dict[str, torch.Tensor], adapter_type: str) -> dict[str, torch.Tensor]:
    """A diffusers-named adapter state dict in TencentARC's names."""
    keys = list(state)
    levels = len(int_children(keys, "adapter.body."))
    res_blocks = len(int_children(keys, "adapter.body.0.resnets."))
    kind = "light" if adapter_type == "light_adapter" else "full"
    renames = {diffusers: original for original, diffusers in original_name_pairs(kind, levels, res_blocks)}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        out[f"{renames[module]}.{leaf}"] = value
    return out


def write_tiny_t2i_adapter(
    kind: Kind,
    out: str | Path,
    *,
    seed: int = 0,
    layout: Layout = "original",
    in_channels: int = 3,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a tiny T2I-Adapter; returns the path (the folder for ``diffusers_folder``)."""
    out = Path(out)
    net = build_tiny_t2i_adapter(kind, seed=seed, in_channels=in_channels)
    state = {k: v.detach().to(dtype).contiguous() for k, v in net.state_dict().items()}
    if layout == "original":
        state = to_original_names(state, _TINY_CONFIGS[kind]["adapter_type"])
    return save_net_files(out, state, "T2IAdapter", net.config, layout, (".pth", ".pt"))
