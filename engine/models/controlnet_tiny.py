"""Tiny random-weight ControlNets for tests and benchmarks, written in the layouts users have.

A tiny ControlNet is built from the tiny UNet of ``tiny.py`` (``ControlNetModel.from_unet``: the encoder
starts as a copy of the UNet's, as in training), then its encoder, hint encoder and zero convolutions get
deterministic random values (real training leaves the zero convolutions non-zero; at zero, strength could
not change anything). It is written as

- ``original``: lllyasviel's single-file layout (``control_model.*``), renamed with the project's one UNet
  name map (``names.py``) plus the ControlNet's own parts below; loading goes through diffusers' converter,
  an independent check of this writer;
- ``diffusers``: the ``diffusion_pytorch_model.safetensors`` state dict in one file (renamed, as users
  keep them), or ``diffusers_folder``: a folder with ``config.json`` beside it;
- ``.pth`` (a weights-only torch pickle of the original layout) when the file name ends so;
- ``difference=True``: a "diff" ControlNet: the encoder stored minus the base UNet's weights, with the
  ``difference`` marker (load with DiffControlNetLoader on that UNet).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file

from atelier.engine.models.build import empty_unet
from atelier.engine.models.controlnet_files import (
    DIFFERENCE_KEY,
    ORIGINAL_PREFIX,
    controlnet_original_names,
)
from atelier.engine.models.info import family_config
from atelier.engine.models.tiny import _TINY_UNET, TinyArch, _derived_seed, _random_tensor, randomize

Layout = Literal["original", "diffusers", "diffusers_folder"]


def build_tiny_controlnet(arch: TinyArch, *, seed: int = 0, unet_seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """(ControlNetModel, the tiny UNet's config): a tiny ControlNet for the tiny ``arch`` model written with
    ``unet_seed``, every tensor random (deterministic per ``seed``)."""
    from atelier.engine.models.libraries import ControlNetModel

    unet = tiny_unet(arch, unet_seed)
    net = ControlNetModel.from_unet(unet, load_weights_from_unet=True)
    generator = torch.Generator().manual_seed(_derived_seed(seed, "controlnet"))
    with torch.no_grad():
        for name, tensor in net.state_dict(keep_vars=True).items():
            if name.startswith(("controlnet_", "down_blocks.0.resnets.0")):
                tensor.copy_(_random_tensor(name, tuple(tensor.shape), generator))
            else:  # the trained copy drifts from the UNet it started as
                tensor.add_(_random_tensor(name, tuple(tensor.shape), generator) * 0.1)
    net.eval().requires_grad_(False)
    return net, dict(unet.config)


def tiny_unet(arch: TinyArch, seed: int = 0) -> torch.nn.Module:
    """The UNet of ``tiny.write_tiny_checkpoint(arch, seed=seed)`` alone (same config, same weights)."""
    config = {**family_config(arch, "unet"), **_TINY_UNET[arch]}
    return randomize(empty_unet(config), seed=seed, tag="unet", device="cpu", dtype=torch.float32)


def write_tiny_controlnet(
    arch: TinyArch,
    out: str | Path,
    *,
    seed: int = 0,
    unet_seed: int = 0,
    layout: Layout = "original",
    difference: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a tiny ControlNet for the tiny ``arch`` checkpoint of ``unet_seed``; returns the path.
    ``.pth``/``.pt`` names get a torch pickle (original layout only), others safetensors."""
    out = Path(out)
    net, unet_config = build_tiny_controlnet(arch, seed=seed, unet_seed=unet_seed)
    state = {k: v.detach().to(dtype).contiguous() for k, v in net.state_dict().items()}
    if difference:
        base = tiny_unet(arch, unet_seed).state_dict()
        state = {k: (v - base[k].to(dtype)) if k in base else v for k, v in state.items()}
    if layout == "original":
        names = controlnet_original_names(state, unet_config)
        state = {ORIGINAL_PREFIX + names[k]: v for k, v in state.items()}
    if difference:
        state[DIFFERENCE_KEY] = torch.tensor([])
    return save_net_files(out, state, "ControlNetModel", net.config, layout, (".pth", ".pt", ".ckpt"))


def save_net_files(
    out: Path,
    state: dict[str, torch.Tensor],
    class_name: str,
    config: Any,
    layout: str,
    pickle_suffixes: tuple[str, ...],
) -> Path:
    """Write a tiny network's tensors as users have such files: a diffusers folder (``config.json`` naming
    ``class_name``, ``diffusion_pytorch_model.safetensors``), a torch pickle (original layout only) for
    ``out`` ending in one of ``pickle_suffixes``, or one safetensors file; returns ``out``."""
    if layout == "diffusers_folder":
        out.mkdir(parents=True, exist_ok=True)
        written = {"_class_name": class_name, **{k: v for k, v in config.items() if not k.startswith("_")}}
        (out / "config.json").write_text(json.dumps(written, indent=2), encoding="utf-8")
        save_file(state, str(out / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() in pickle_suffixes:
        if layout != "original":
            raise ValueError("torch pickles are written in the original layout only")
        torch.save(state, out)
    else:
        save_file(state, str(out), metadata={"format": "pt"})
    return out
