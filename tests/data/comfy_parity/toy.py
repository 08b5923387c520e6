"""The fixed toy denoiser of the ComfyUI parity data, shared by generate.py and the parity tests.

A deterministic, smooth, nonlinear function of the noisy latent and sigma (no network, no prompt): two
of them, the "conditional" and the "unconditional" prediction, so that guidance and the CFG++ samplers
(which need the unconditional prediction) have something to work with. Both are denoised (x0)
predictions in k-diffusion's convention ``x = x0 + sigma * noise``.
"""

from __future__ import annotations

import torch
from torch import Tensor

SEED = 42  # the sampling seed: initial noise and every sampler's own noise
CFG = 2.0
SHAPE = (1, 4, 4, 4)


def latent_image() -> Tensor:
    """The fixed starting latent (a smooth pattern, so that partial denoise has something to keep)."""
    ys = torch.linspace(-1.0, 1.0, SHAPE[2])[:, None]
    xs = torch.linspace(-1.0, 1.0, SHAPE[3])[None, :]
    channels = [torch.sin(2.0 * xs + 0.7 * c) * torch.cos(1.5 * ys - 0.3 * c) for c in range(SHAPE[1])]
    return torch.stack(channels)[None].to(torch.float32)


def initial_noise(seed: int = SEED) -> Tensor:
    """ComfyUI's initial noise: ``torch.randn`` from a CPU generator seeded with ``seed``."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(SHAPE, generator=generator, dtype=torch.float32)


def _prediction(x: Tensor, sigma: Tensor, gain: float, shift: int, bias: float) -> Tensor:
    """EDM-style preconditioning around a bounded "network": c_skip * x + c_out * F(x_in, sigma)."""
    s = sigma.reshape(-1, 1, 1, 1).to(x)
    x_in = x / torch.sqrt(s * s + 1.0)  # the network input of an SD model
    mixed = x_in.roll(shift, dims=1) + 0.5 * x_in.roll(1, dims=3) - 0.25 * x_in.mean(dim=1, keepdim=True)
    f = torch.tanh(gain * mixed + bias * torch.log1p(s))
    return x / (s * s + 1.0) + f * (s / torch.sqrt(s * s + 1.0))


def cond_denoised(x: Tensor, sigma: Tensor) -> Tensor:
    return _prediction(x, sigma, gain=0.8, shift=1, bias=0.3)


def uncond_denoised(x: Tensor, sigma: Tensor) -> Tensor:
    return _prediction(x, sigma, gain=0.6, shift=2, bias=0.5)
