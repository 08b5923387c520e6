"""State dicts of handles for saving: a MODEL/CLIP/VAE as one single-file checkpoint, a VAE alone.

The weights are the ones the handles compute with (their LoRA and merge patches applied), renamed to
the original single-file layout (``layout.py``), so the loader reads what is saved like any checkpoint.
Tensors are copied to the host while the patches are applied, so the loaded modules end unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack

import torch

from .handles import ClipHandle, ModelHandle, VaeHandle
from .layout import original_state_dict, vae_to_original

__all__ = ["checkpoint_state_dict", "vae_state_dict"]


def _host_copies(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def checkpoint_state_dict(
    model: ModelHandle, clip: ClipHandle | None, vae: VaeHandle | None
) -> dict[str, torch.Tensor]:
    """The single-file checkpoint of a model (with its patches), its text encoders and VAE; a
    v-prediction model gets the ``v_pred`` marker key, as ComfyUI writes."""
    if clip is not None and clip.family != model.family:
        raise ValueError(
            f"clip is a {clip.family} text encoder, model a {model.family} UNet: not one checkpoint"
        )
    with ExitStack() as stack:
        stack.enter_context(model.session())
        if clip is not None:
            stack.enter_context(clip.session())
        encoders = [spec.model for spec in clip.encoders] if clip is not None else []
        state = original_state_dict(
            model.family, model.unet, vae.vae if vae is not None else None, encoders, model.unet.config
        )
        out = _host_copies(state)
    if model.sampling.prediction == "v_prediction":
        out["v_pred"] = torch.tensor([])
    return out


def vae_state_dict(vae: VaeHandle) -> dict[str, torch.Tensor]:
    """A VAE in the original layout without prefix (``encoder.*``, ``decoder.*``), as standalone VAE files."""
    return _host_copies(vae_to_original(vae.vae.state_dict(), vae.vae.config))
