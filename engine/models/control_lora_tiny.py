"""Tiny random-weight Control-LoRA files for tests, in Stability's layout, with the ControlNet they stand
for.

The reference ControlNet is diffusers' ``ControlNetModel.from_unet`` of a tiny UNet (``controlnet_tiny``),
changed the way a Control-LoRA changes it: each linear/convolution weight of the copied encoder gets a
random rank-``rank`` product ``up @ down`` added, every other encoder tensor (biases, norms) a small random
drift, and the hint encoder and zero convolutions random values. The file holds what Stability's do: the
``up``/``down`` pairs under the layer's original name, the other tensors whole, and the ``lora_controlnet``
marker; the reference is returned beside it so that tests compare a Control-LoRA built from the file and
the UNet with a network made another way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from atelier.engine.models.control_lora import MARKER
from atelier.engine.models.controlnet_files import ORIGINAL_PREFIX, controlnet_original_names
from atelier.engine.models.controlnet_tiny import tiny_unet
from atelier.engine.models.tiny import TinyArch, _derived_seed, _random_tensor

_ENCODER = ("conv_in.", "time_embedding.", "add_embedding.", "down_blocks.", "mid_block.")


def build_tiny_control_lora(
    arch: TinyArch, *, seed: int = 0, unet_seed: int = 0, rank: int = 4
) -> tuple[Any, dict[str, torch.Tensor]]:
    """(reference ControlNetModel, the Control-LoRA file's tensors) for the tiny ``arch`` model of
    ``unet_seed``."""
    from atelier.engine.models.libraries import ControlNetModel

    unet = tiny_unet(arch, unet_seed)
    net = ControlNetModel.from_unet(unet, load_weights_from_unet=True)
    names = controlnet_original_names(net.state_dict(), unet.config)
    generator = torch.Generator().manual_seed(_derived_seed(seed, "control_lora"))
    tensors: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, tensor in net.state_dict(keep_vars=True).items():
            original = names[name]
            if not name.startswith(_ENCODER):  # hint encoder, zero convolutions: whole
                tensor.copy_(_random_tensor(name, tuple(tensor.shape), generator))
                tensors[original] = tensor.detach().clone()
            elif name.endswith(".weight") and tensor.dim() >= 2:  # a layer the LoRA changes
                out_ch, in_ch = tensor.shape[0], tensor[0].numel()
                up = torch.randn(out_ch, rank, generator=generator) * 0.3
                down = torch.randn(rank, in_ch, generator=generator) * 0.3 / in_ch**0.5
                tensor.add_((up @ down).reshape(tensor.shape))
                module = original.removesuffix(".weight")
                tail = (1,) * (tensor.dim() - 2)
                tensors[f"{module}.up"] = up.reshape(out_ch, rank, *tail)
                tensors[f"{module}.down"] = down.reshape(rank, *tensor.shape[1:])
            else:  # biases and norms: stored whole, drifted from the UNet's
                tensor.add_(_random_tensor(name, tuple(tensor.shape), generator) * 0.1)
                tensors[original] = tensor.detach().clone()
    net.eval().requires_grad_(False)
    return net, tensors


def write_tiny_control_lora(
    arch: TinyArch, out: str | Path, *, seed: int = 0, unet_seed: int = 0, rank: int = 4
) -> Path:
    """Write a tiny Control-LoRA for the tiny ``arch`` checkpoint of ``unet_seed``; returns the path."""
    out = Path(out)
    _, tensors = build_tiny_control_lora(arch, seed=seed, unet_seed=unet_seed, rank=rank)
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    tensors[MARKER] = torch.tensor([])
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata={"format": "pt"})
    return out


def write_tiny_control_lora_reference(
    arch: TinyArch, out: str | Path, *, seed: int = 0, unet_seed: int = 0, rank: int = 4
) -> Path:
    """Write the ControlNet a tiny Control-LoRA stands for, as a full ControlNet in the original
    single-file layout (``control_model.*``), to compare the two ways of getting it."""
    out = Path(out)
    net, _ = build_tiny_control_lora(arch, seed=seed, unet_seed=unet_seed, rank=rank)
    state = net.state_dict()
    names = controlnet_original_names(state, tiny_unet(arch, unet_seed).config)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {ORIGINAL_PREFIX + names[k]: v.contiguous() for k, v in state.items()},
        str(out),
        metadata={"format": "pt"},
    )
    return out
