"""CFG functions: pure tensor math applied after classifier-free guidance combines cond and uncond.

``rescale_cfg`` is "CFG rescale" from Lin et al., "Common Diffusion Noise Schedules and Sample Steps are
Flawed" (2023), section 3.4: high guidance scales over-expose; rescaling the guided prediction back to
the standard deviation of the conditional one fixes it. The paper states it on v-predictions, so the
denoised predictions are taken to v-space for the rescale and back (for the discrete SD schedule, where
the network's input is ``x / sqrt(sigma^2 + 1)``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .guidance import CfgArgs, CfgFunction


def _to_v(denoised: Tensor, x: Tensor, sigma: Tensor) -> Tensor:
    s2 = sigma**2 + 1.0
    return (x / s2 - denoised) * s2.sqrt() / sigma


def _from_v(v: Tensor, x: Tensor, sigma: Tensor) -> Tensor:
    s2 = sigma**2 + 1.0
    return x / s2 - v * sigma / s2.sqrt()


def rescale_cfg(multiplier: float) -> CfgFunction:
    """A CFG function that rescales the guided v-prediction to the conditional one's standard deviation
    and blends: ``multiplier * rescaled + (1 - multiplier) * guided``."""

    def apply(args: CfgArgs) -> Tensor:
        sigma = args.sigma.reshape(-1, *([1] * (args.x.dim() - 1))).to(args.x)
        v_cond = _to_v(args.cond, args.x, sigma)
        v_uncond = _to_v(args.uncond, args.x, sigma)
        v_cfg = v_uncond + args.cfg * (v_cond - v_uncond)
        dims = tuple(range(1, v_cfg.dim()))
        ratio = torch.std(v_cond, dim=dims, keepdim=True) / torch.std(v_cfg, dim=dims, keepdim=True)
        v_final = multiplier * (v_cfg * ratio) + (1.0 - multiplier) * v_cfg
        return _from_v(v_final, args.x, sigma)

    return apply
