"""SIGMAS arithmetic for the custom-sampling nodes: schedules from settings, splitting and flipping.

Pure functions returning 1-D float32 CPU tensors, with ComfyUI's semantics (including its edge cases:
``split_sigmas_denoise`` at denoise 0, ``flip_sigmas`` lifting a leading 0).
"""

from __future__ import annotations

import math
import re

import torch
from torch import Tensor

from .model_sampling import ModelSampling
from .schedulers import calculate_sigmas


def _append_zero(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def basic_scheduler_sigmas(sampling: ModelSampling, scheduler: str, steps: int, denoise: float) -> Tensor:
    """The last ``steps + 1`` sigmas of ``scheduler`` over ``int(steps / denoise)`` steps (all ``steps``
    at denoise 1); empty at denoise 0."""
    total = steps
    if denoise < 1.0:
        if denoise <= 0.0:
            return torch.zeros(0)
        total = int(steps / denoise)
    return calculate_sigmas(sampling, scheduler, total)[-(steps + 1) :]


def sd_turbo_sigmas(sampling: ModelSampling, steps: int, denoise: float) -> Tensor:
    """SD-Turbo's schedule: timesteps 999, 899, ..., 99, starting ``10 - int(10 * denoise)`` in, ``steps``
    of them, then 0."""
    start = 10 - int(10 * denoise)
    timesteps = torch.flip(torch.arange(1, 11) * 100 - 1, (0,))[start : start + steps]
    return _append_zero(sampling.sigma(timesteps).to(torch.float32))


def polyexponential_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> Tensor:
    """log(sigma) from sigma_max to sigma_min along a ramp ``(1 - i / (n - 1)) ** rho``, then 0 (rho 1 is
    the exponential schedule)."""
    ramp = torch.linspace(1, 0, n) ** rho
    log_min, log_max = math.log(sigma_min), math.log(sigma_max)
    return _append_zero(torch.exp(ramp * (log_max - log_min) + log_min))


def vp_sigmas(n: int, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3) -> Tensor:
    """The variance-preserving SDE's sigmas at times evenly spaced from 1 to ``eps_s``, then 0:
    ``sigma(t) = sqrt(exp(beta_d * t^2 / 2 + beta_min * t) - 1)``."""
    t = torch.linspace(1, eps_s, n)
    return _append_zero(torch.sqrt(torch.special.expm1(beta_d * t**2 / 2 + beta_min * t)))


def laplace_sigmas(n: int, sigma_min: float, sigma_max: float, mu: float = 0.0, beta: float = 0.5) -> Tensor:
    """Sigmas at evenly spaced quantiles of a Laplace(mu, beta) distribution of log(sigma), from high to
    low, clamped to [sigma_min, sigma_max] (Tiankai et al. 2024). As ComfyUI's, ``n`` values with no
    final 0: a run along them stops at the smallest."""
    eps = 1e-5  # keeps the end quantiles finite
    x = torch.linspace(0, 1, n)
    centred = 0.5 - x
    log_sigma = mu - beta * torch.sign(centred) * torch.log(1 - 2 * centred.abs() + eps)
    return torch.exp(log_sigma).clamp(min=sigma_min, max=sigma_max)


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def parse_sigmas(text: str) -> Tensor:
    """The numbers in ``text`` (any separators: "14.6, 7.0, 0") as SIGMAS."""
    return torch.tensor([float(m) for m in _NUMBER.findall(text)], dtype=torch.float32)


def split_sigmas(sigmas: Tensor, step: int) -> tuple[Tensor, Tensor]:
    """(the first ``step + 1`` sigmas, the sigmas from ``step`` on): the two share sigma ``step``, so the
    second run starts where the first stopped."""
    return sigmas[: step + 1].clone(), sigmas[step:].clone()


def split_sigmas_denoise(sigmas: Tensor, denoise: float) -> tuple[Tensor, Tensor]:
    """Split so the low part has ``round(steps * denoise)`` steps (``steps = len - 1``). As in ComfyUI,
    at 0 steps the high part is empty and the low part is the last sigma."""
    steps = max(sigmas.shape[-1] - 1, 0)
    total = round(steps * denoise)
    return sigmas[:-total].clone(), sigmas[-(total + 1) :].clone()


def flip_sigmas(sigmas: Tensor) -> Tensor:
    """The schedule reversed (ascending: for unsampling); a leading 0 becomes 0.0001."""
    if len(sigmas) == 0:
        return sigmas.clone()
    flipped = sigmas.flip(0)
    if flipped[0] == 0:
        flipped[0] = 0.0001
    return flipped
