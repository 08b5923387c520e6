"""Denoise-mask functions: the noise mask a masked sampling run uses at each step (pure tensor math).

A MODEL handle carries at most one (``ModelHandle.with_denoise_mask_function``); the step loop calls it
with :class:`~atelier.engine.sampling.guidance.DenoiseMaskArgs`.
"""

from __future__ import annotations

from torch import Tensor

from .guidance import DenoiseMaskArgs, DenoiseMaskFunction


def differential_threshold(args: DenoiseMaskArgs) -> Tensor:
    """How far the run still has to go at this step, 1 at its first sigma down to 0 at its last (or the
    schedule's smallest), measured in the model's discrete timesteps."""
    ms = args.sampling
    sigma_from = float(args.sigmas[0])
    sigma_to = max(ms.sigma_min, float(args.sigmas[-1]))
    ts_from = ms.timestep_discrete(sigma_from).float()
    ts_to = ms.timestep_discrete(sigma_to).float()
    # one scalar per step, looked up in the schedule's host-side table
    current = ms.timestep_discrete(args.sigma.reshape(-1)[0].float().cpu()).float()
    return (current - ts_to) / (ts_from - ts_to)


def differential_diffusion(strength: float = 1.0) -> DenoiseMaskFunction:
    """Differential Diffusion (Levin & Fried, 2023; ComfyUI's node): each step denoises only where the soft
    mask reaches the step's threshold, so a mask value of 0.3 is repainted over the last 30 % of the run
    and the edit fades smoothly into the picture. ``strength`` < 1 mixes the binary step mask with the
    soft mask itself.

    One deliberate difference from ComfyUI: where the mask is 0 nothing is ever repainted. ComfyUI's
    threshold reaches 0 on the last step (the schedule's smallest sigma), where ``mask >= 0`` would let the
    model touch the whole picture once."""

    def fn(args: DenoiseMaskArgs) -> Tensor:
        ms = args.sampling
        if ms.timestep_discrete(float(args.sigmas[0])) == ms.timestep_discrete(
            max(ms.sigma_min, float(args.sigmas[-1]))
        ):
            return args.mask  # a run within one timestep: nothing to spread over
        threshold = differential_threshold(args).to(args.mask.device)
        binary = ((args.mask >= threshold) & (args.mask > 0)).to(args.mask.dtype)
        if strength and strength < 1:
            return strength * binary + (1.0 - strength) * args.mask
        return binary

    return fn
