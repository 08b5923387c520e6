"""Sigma schedules: which noise levels a sampler visits, from high to low, ending at 0.

Each scheduler gives the same numbers as the ComfyUI scheduler of the same name. All results are CPU
float32 tensors. Two ComfyUI quirks are kept on purpose, so that a workflow gives the same picture:
``beta`` drops repeated timesteps (fewer than ``steps + 1`` values for large step counts) and
``ddim_uniform`` can return a few more values than ``steps + 1`` when 1000 is not a multiple of steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .model_sampling import ModelSampling

__all__ = [
    "SCHEDULER_NAMES",
    "beta_ppf",
    "beta_scheduler",
    "betainc_regularized",
    "calculate_sigmas",
    "ddim_uniform_scheduler",
    "exponential_sigmas",
    "karras_sigmas",
    "kl_optimal_sigmas",
    "linear_quadratic_scheduler",
    "normal_scheduler",
    "simple_scheduler",
]

SCHEDULER_NAMES: list[str] = [
    "simple",
    "sgm_uniform",
    "karras",
    "exponential",
    "ddim_uniform",
    "beta",
    "normal",
    "linear_quadratic",
    "kl_optimal",
]
"""ComfyUI's scheduler names, in its order."""


def _append_zero(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """Karras et al. (2022): sigma^(1/rho) evenly spaced from sigma_max to sigma_min, then 0."""
    ramp = torch.linspace(0, 1, n)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return _append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def exponential_sigmas(n: int, sigma_min: float, sigma_max: float) -> Tensor:
    """log(sigma) evenly spaced from sigma_max to sigma_min, then 0."""
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp())


def normal_scheduler(model_sampling: ModelSampling, steps: int, sgm: bool = False) -> Tensor:
    """Timesteps evenly spaced between those of sigma_max and sigma_min, mapped back to sigmas.

    ``sgm=True`` ("sgm_uniform") spaces ``steps + 1`` points and drops the last one instead.
    """
    ms = model_sampling
    start = float(ms.timestep_discrete(torch.tensor(ms.sigma_max)))
    end = float(ms.timestep_discrete(torch.tensor(ms.sigma_min)))
    append_zero = True
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(float(ms.sigma(torch.tensor(end))), 0.0, abs_tol=1e-5):
            steps += 1
            append_zero = False
        timesteps = torch.linspace(start, end, steps)
    sigs = [float(ms.sigma(t)) for t in timesteps]
    if append_zero:
        sigs.append(0.0)
    return torch.tensor(sigs, dtype=torch.float32)


def simple_scheduler(model_sampling: ModelSampling, steps: int) -> Tensor:
    """Every (table length / steps)-th sigma of the model's table, from the top, then 0."""
    table = model_sampling.sigmas
    stride = len(table) / steps
    sigs = [float(table[-(1 + int(i * stride))]) for i in range(steps)]
    sigs.append(0.0)
    return torch.tensor(sigs, dtype=torch.float32)


def ddim_uniform_scheduler(model_sampling: ModelSampling, steps: int) -> Tensor:
    """Table sigmas at timesteps 1, 1 + k, 1 + 2k, ... with k = table length // steps, reversed, then 0."""
    table = model_sampling.sigmas
    if math.isclose(float(table[1]), 0.0, abs_tol=1e-5):
        steps += 1
        sigs: list[float] = []
    else:
        sigs = [0.0]
    stride = max(len(table) // steps, 1)
    sigs.extend(float(table[i]) for i in range(1, len(table), stride))
    return torch.tensor(sigs[::-1], dtype=torch.float32)


def linear_quadratic_scheduler(
    model_sampling: ModelSampling, steps: int, threshold_noise: float = 0.025, linear_steps: int | None = None
) -> Tensor:
    """Mochi's schedule as a fraction of sigma_max: for t = 1 - sigma / sigma_max, the first
    ``linear_steps`` (half) rise linearly to ``threshold_noise``, the rest follow the quadratic that
    continues it with matching slope and reaches 1 (sigma 0) after ``steps`` steps."""
    if steps == 1:
        fractions = [1.0, 0.0]
    else:
        n_lin = steps // 2 if linear_steps is None else linear_steps
        n_quad = steps - n_lin
        gap = n_lin - threshold_noise * steps
        a = gap / (n_lin * n_quad**2)
        b = threshold_noise / n_lin - 2 * gap / n_quad**2
        c = a * n_lin**2
        ts = [i * threshold_noise / n_lin for i in range(n_lin)]
        ts += [a * i**2 + b * i + c for i in range(n_lin, steps)]
        fractions = [1.0 - t for t in [*ts, 1.0]]
    return torch.tensor(fractions, dtype=torch.float32) * torch.tensor(model_sampling.sigma_max)


def kl_optimal_sigmas(n: int, sigma_min: float, sigma_max: float) -> Tensor:
    """The "KL-optimal" schedule (AUTOMATIC1111 PR 15608): evenly spaced in arctan(sigma), then 0.
    One step is [sigma_max, 0] (ComfyUI divides 0 by 0 there and returns NaN)."""
    if n == 1:
        return torch.tensor([sigma_max, 0.0], dtype=torch.float32)
    ramp = torch.arange(n, dtype=torch.float32) / (n - 1)
    sigmas = torch.zeros(n + 1)
    sigmas[:-1] = (ramp * math.atan(sigma_min) + (1 - ramp) * math.atan(sigma_max)).tan()
    return sigmas


# ------------------------------------------------------------------ Beta distribution, no scipy
def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _betainc_cf(a: float, b: float, x: float) -> float:
    """Continued fraction of I_x(a, b) (converges fast for x < (a + 1) / (a + b + 2)), modified Lentz."""
    tiny = 1e-300
    f = 1.0
    c = 1.0
    d = 0.0
    for j in range(1, 1000):
        m = j // 2
        if j % 2:  # odd terms
            coef = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        else:
            coef = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1.0 + coef * d
        d = tiny if abs(d) < tiny else d
        c = 1.0 + coef / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = c * d
        f *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    front = math.exp(a * math.log(x) + b * math.log1p(-x) - _log_beta(a, b)) / a
    return front / f


def betainc_regularized(x: float, a: float, b: float) -> float:
    """The Beta(a, b) cumulative distribution function I_x(a, b)."""
    if a <= 0 or b <= 0:
        raise ValueError(f"beta parameters must be positive, got a={a}, b={b}")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x < (a + 1.0) / (a + b + 2.0):
        return _betainc_cf(a, b, x)
    return 1.0 - _betainc_cf(b, a, 1.0 - x)


def beta_ppf(q: float, a: float, b: float) -> float:
    """Inverse of :func:`betainc_regularized` in x: Newton steps kept inside a shrinking bracket."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must lie in [0, 1], got {q}")
    if q == 0.0:
        return 0.0
    if q == 1.0:
        return 1.0
    if a == b and q == 0.5:
        # the median of a symmetric Beta is 0.5; scipy's ppf (what ComfyUI's beta scheduler calls) returns
        # the float just above it, which decides how 0.5 * (table length - 1) rounds for an odd count
        return math.nextafter(0.5, 1.0)
    log_b = _log_beta(a, b)
    lo, hi = 0.0, 1.0
    x = 0.5
    for _ in range(200):
        err = betainc_regularized(x, a, b) - q
        if err == 0.0:
            return x
        if err < 0.0:
            lo = x
        else:
            hi = x
        pdf = math.exp((a - 1.0) * math.log(x) + (b - 1.0) * math.log1p(-x) - log_b)
        x_new = x - err / pdf if pdf > 0.0 else -1.0
        if not lo < x_new < hi:
            x_new = 0.5 * (lo + hi)
        if abs(x_new - x) <= 1e-16 * max(x, 1e-300) or hi - lo <= 1e-17:
            return x_new
        x = x_new
    return x


def beta_scheduler(
    model_sampling: ModelSampling, steps: int, alpha: float = 0.6, beta: float = 0.6
) -> Tensor:
    """Timesteps at the Beta(alpha, beta) quantiles 1, 1 - 1/steps, ... (rounded), repeats dropped, then 0."""
    table = model_sampling.sigmas
    total = len(table) - 1
    quantiles = 1.0 - np.linspace(0.0, 1.0, steps, endpoint=False)
    ts = np.rint(np.array([beta_ppf(float(q), alpha, beta) for q in quantiles]) * total)
    sigs: list[float] = []
    last = -1.0
    for t in ts:
        if t != last:
            sigs.append(float(table[int(t)]))
        last = t
    sigs.append(0.0)
    return torch.tensor(sigs, dtype=torch.float32)


# ------------------------------------------------------------------------------- dispatch
_SCHEDULERS: dict[str, Callable[[ModelSampling, int], Tensor]] = {
    "simple": simple_scheduler,
    "sgm_uniform": lambda ms, n: normal_scheduler(ms, n, sgm=True),
    "karras": lambda ms, n: karras_sigmas(n, ms.sigma_min, ms.sigma_max),
    "exponential": lambda ms, n: exponential_sigmas(n, ms.sigma_min, ms.sigma_max),
    "ddim_uniform": ddim_uniform_scheduler,
    "beta": beta_scheduler,
    "normal": lambda ms, n: normal_scheduler(ms, n),
    "linear_quadratic": lambda ms, n: linear_quadratic_scheduler(ms, n),
    "kl_optimal": lambda ms, n: kl_optimal_sigmas(n, ms.sigma_min, ms.sigma_max),
}


def calculate_sigmas(model_sampling: ModelSampling, scheduler_name: str, steps: int) -> Tensor:
    """The sigma schedule for ``steps`` steps: CPU float32, descending, last value 0."""
    handler = _SCHEDULERS.get(scheduler_name)
    if handler is None:
        raise ValueError(
            f"unknown scheduler {scheduler_name!r}; valid schedulers: {', '.join(SCHEDULER_NAMES)}"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return handler(model_sampling, steps).to(torch.float32)
