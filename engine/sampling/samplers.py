"""k-diffusion style samplers: each a pure function ``(model, x, sigmas, ...) -> x``.

``model(x, sigma_batch, **extra_args)`` returns the DENOISED prediction (an estimate of x0) for a
noisy ``x = x0 + sigma * noise``; ``sigma_batch`` is a 1-D tensor of shape ``[B]`` on ``x.device``.
``sigmas`` is the descending schedule (usually ending with 0). It is read once into Python floats:
every step coefficient is computed on the host, so no per-step device synchronisation happens.

``callback`` receives ``{"i", "x", "denoised", "sigma", "sigma_hat", "sigma_next"}`` once per step,
after the model call of that step and before ``x`` moves on (sigma values are Python floats). An
exception raised by the callback propagates and ends sampling: that is how interrupt works.

Stochastic samplers draw their noise from ``noise_sampler(sigma, sigma_next) -> Tensor`` (unit
variance, shaped like ``x``), by default seeded with ``seed`` as ComfyUI seeds it (see noise.py):
independent gaussians for the ancestral samplers, one Brownian tree per run for the SDE samplers
(dpmpp_sde, dpmpp_2m_sde, dpmpp_3m_sde and their ``_gpu`` variants, whose tree lives on ``x``'s device).

CFG++ samplers (``*_cfg_pp``) need the unconditional prediction as well: they call the model with
``post_cfg=(fn,)`` and read ``CfgArgs.uncond`` in ``fn``; a guided denoiser (guidance.CFGDenoiser) runs
``post_cfg`` functions after CFG. A model that never calls them is an error for these samplers.

The formulas follow Karras et al. 2022 (Euler, Heun, churn), Lu et al. 2022 (DPM-Solver, DPM-Solver++),
Zhao et al. 2023 (UniPC) and the conventions of k-diffusion / ComfyUI, written anew here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor

from .model_sampling import ModelSampling
from .noise import NoiseSampler, brownian_tree_noise_sampler, default_noise_sampler

__all__ = [
    "DISCARD_PENULTIMATE_SIGMA_SAMPLERS",
    "SAMPLERS",
    "SAMPLER_NAMES",
    "MODEL_SAMPLING_SAMPLERS",
    "Callback",
    "Denoiser",
    "NoiseSampler",
    "brownian_tree_noise_sampler",
    "default_noise_sampler",
    "get_ancestral_step",
    "get_sampler",
    "lms_coefficient",
    "sample_ddim",
    "sample_dpm_2",
    "sample_dpm_2_ancestral",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_dpmpp_2s_ancestral",
    "sample_dpmpp_sde",
    "sample_euler",
    "sample_euler_ancestral",
    "sample_heun",
    "sample_lcm",
    "sample_lms",
    "sample_uni_pc",
    "sample_uni_pc_bh2",
]


class Denoiser(Protocol):
    def __call__(self, x: Tensor, sigma: Tensor, **extra_args: Any) -> Tensor: ...


Callback = Callable[[dict[str, Any]], None]


# ---------------------------------------------------------------------------------- helpers
def get_ancestral_step(sigma_from: float, sigma_to: float, eta: float = 1.0) -> tuple[float, float]:
    """Split a step sigma_from -> sigma_to into a deterministic part down to ``sigma_down`` and fresh
    noise of size ``sigma_up`` (sigma_down^2 + sigma_up^2 = sigma_to^2). eta = 0 is deterministic."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(
        sigma_to, eta * math.sqrt(max(sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2, 0.0))
    )
    sigma_down = math.sqrt(max(sigma_to**2 - sigma_up**2, 0.0))
    return sigma_down, sigma_up


def _as_floats(sigmas: Tensor | Sequence[float]) -> list[float]:
    """The schedule as Python floats (one device->host copy if it lives on a device)."""
    if isinstance(sigmas, Tensor):
        values = sigmas.detach().to("cpu", torch.float64).reshape(-1).tolist()
    else:
        values = [float(s) for s in sigmas]
    if len(values) < 2:
        raise ValueError("sigmas needs at least two values (one step)")
    return values


class _Runner:
    """Shared plumbing: the model call with a device-side sigma batch, callback, lazy noise."""

    def __init__(
        self,
        model: Denoiser,
        x: Tensor,
        extra_args: dict[str, Any] | None,
        callback: Callback | None,
        noise_sampler: NoiseSampler | None,
        seed: int | None,
        brownian: Sequence[float] | None = None,
        brownian_cpu: bool = True,
    ) -> None:
        self.model = model
        self.extra_args = {} if extra_args is None else extra_args
        self.callback = callback
        self._noise_sampler = noise_sampler
        self.seed = seed
        self.batch = x.shape[0]
        self.device = x.device
        self.sigma_dtype = torch.promote_types(x.dtype, torch.float32)
        self._x = x
        if noise_sampler is None and brownian is not None:  # the SDE samplers' default: one Brownian tree
            positive = [s for s in brownian if s > 0]
            if positive:
                self._noise_sampler = brownian_tree_noise_sampler(
                    x, min(positive), max(brownian), seed, cpu=brownian_cpu
                )

    def denoise(self, x: Tensor, sigma: float) -> Tensor:
        s = torch.full((self.batch,), sigma, dtype=self.sigma_dtype, device=self.device)
        return self.model(x, s, **self.extra_args)

    def denoise_cfg_pp(self, x: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        """The guided prediction and the unconditional one (read through a post-CFG function)."""
        seen: list[Tensor] = []

        def capture(args: Any) -> Tensor:
            seen.append(args.uncond)
            return args.denoised

        s = torch.full((self.batch,), sigma, dtype=self.sigma_dtype, device=self.device)
        extra = dict(self.extra_args)
        extra["post_cfg"] = (*extra.get("post_cfg", ()), capture)
        denoised = self.model(x, s, **extra)
        if not seen:
            raise ValueError(
                "this CFG++ sampler needs the unconditional prediction: the model must be a guided "
                "denoiser that runs post_cfg functions (sample through a KSampler node)"
            )
        return denoised, seen[-1]

    def noise(self, sigma: float, sigma_next: float) -> Tensor:
        if self._noise_sampler is None:
            self._noise_sampler = default_noise_sampler(self._x, self.seed)
        return self._noise_sampler(sigma, sigma_next)

    def report(
        self,
        i: int,
        x: Tensor,
        denoised: Tensor,
        sigma: float,
        sigma_next: float,
        sigma_hat: float | None = None,
    ) -> None:
        if self.callback is not None:
            self.callback(
                {
                    "i": i,
                    "x": x,
                    "denoised": denoised,
                    "sigma": sigma,
                    "sigma_hat": sigma if sigma_hat is None else sigma_hat,
                    "sigma_next": sigma_next,
                }
            )


def _to_d(x: Tensor, sigma: float, denoised: Tensor) -> Tensor:
    """dx/dsigma of the probability-flow ODE."""
    return (x - denoised) / sigma


def _churn(
    run: _Runner,
    x: Tensor,
    sigma: float,
    steps: int,
    s_churn: float,
    s_tmin: float,
    s_tmax: float,
    s_noise: float,
    sigma_next: float,
) -> tuple[Tensor, float]:
    """Karras' "churn": raise the noise level to sigma_hat = sigma * (1 + gamma) by adding noise."""
    gamma = min(s_churn / steps, 2**0.5 - 1) if s_churn > 0 and s_tmin <= sigma <= s_tmax else 0.0
    if gamma <= 0:
        return x, sigma
    sigma_hat = sigma * (gamma + 1)
    x = x + run.noise(sigma, sigma_next) * (s_noise * math.sqrt(sigma_hat**2 - sigma**2))
    return x, sigma_hat


# ---------------------------------------------------------------------------------- samplers
@torch.no_grad()
def sample_euler(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """Euler steps on the probability-flow ODE (Karras et al. 2022, Algorithm 2 with optional churn)."""
    sig = _as_floats(sigmas)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed)
    n = len(sig) - 1
    for i in range(n):
        x, sigma_hat = _churn(run, x, sig[i], n, s_churn, s_tmin, s_tmax, s_noise, sig[i + 1])
        denoised = run.denoise(x, sigma_hat)
        run.report(i, x, denoised, sig[i], sig[i + 1], sigma_hat)
        x = x + _to_d(x, sigma_hat, denoised) * (sig[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def sample_ddim(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
) -> Tensor:
    """DDIM (eta = 0). In the sigma parameterisation a deterministic DDIM step is exactly an Euler
    step, which is also how ComfyUI implements its "ddim" sampler."""
    return sample_euler(
        model, x, sigmas, extra_args=extra_args, callback=callback, noise_sampler=noise_sampler, seed=seed
    )


@torch.no_grad()
def sample_euler_ancestral(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """Euler step down to sigma_down, then fresh noise of size sigma_up."""
    sig = _as_floats(sigmas)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed)
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        denoised = run.denoise(x, s)
        sigma_down, sigma_up = get_ancestral_step(s, s_next, eta)
        run.report(i, x, denoised, s, s_next)
        if sigma_down == 0:
            x = denoised
        else:
            x = x + _to_d(x, s, denoised) * (sigma_down - s)
            x = x + run.noise(s, s_next) * (s_noise * sigma_up)
    return x


@torch.no_grad()
def sample_heun(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """Heun's second-order method (trapezoidal correction); the step to sigma = 0 is plain Euler."""
    sig = _as_floats(sigmas)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed)
    n = len(sig) - 1
    for i in range(n):
        x, sigma_hat = _churn(run, x, sig[i], n, s_churn, s_tmin, s_tmax, s_noise, sig[i + 1])
        s_next = sig[i + 1]
        denoised = run.denoise(x, sigma_hat)
        d = _to_d(x, sigma_hat, denoised)
        run.report(i, x, denoised, sig[i], s_next, sigma_hat)
        dt = s_next - sigma_hat
        if s_next == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = _to_d(x_2, s_next, run.denoise(x_2, s_next))
            x = x + (d + d_2) * (0.5 * dt)
    return x


def _log_midpoint(a: float, b: float) -> float:
    return math.exp(0.5 * (math.log(a) + math.log(b)))


@torch.no_grad()
def sample_dpm_2(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """DPM-Solver-2 in Karras' form: the slope taken at the log-space midpoint of each step."""
    sig = _as_floats(sigmas)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed)
    n = len(sig) - 1
    for i in range(n):
        x, sigma_hat = _churn(run, x, sig[i], n, s_churn, s_tmin, s_tmax, s_noise, sig[i + 1])
        s_next = sig[i + 1]
        denoised = run.denoise(x, sigma_hat)
        d = _to_d(x, sigma_hat, denoised)
        run.report(i, x, denoised, sig[i], s_next, sigma_hat)
        if s_next == 0:
            x = x + d * (s_next - sigma_hat)
        else:
            sigma_mid = _log_midpoint(sigma_hat, s_next)
            x_2 = x + d * (sigma_mid - sigma_hat)
            d_2 = _to_d(x_2, sigma_mid, run.denoise(x_2, sigma_mid))
            x = x + d_2 * (s_next - sigma_hat)
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """DPM-Solver-2 down to sigma_down, then fresh noise of size sigma_up."""
    sig = _as_floats(sigmas)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed)
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        denoised = run.denoise(x, s)
        sigma_down, sigma_up = get_ancestral_step(s, s_next, eta)
        run.report(i, x, denoised, s, s_next)
        d = _to_d(x, s, denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - s)
        else:
            sigma_mid = _log_midpoint(s, sigma_down)
            x_2 = x + d * (sigma_mid - s)
            d_2 = _to_d(x_2, sigma_mid, run.denoise(x_2, sigma_mid))
            x = x + d_2 * (sigma_down - s)
            x = x + run.noise(s, s_next) * (s_noise * sigma_up)
    return x


def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return nodes, weights


def lms_coefficient(order: int, t: Sequence[float], i: int, j: int) -> float:
    """Integral over [t[i], t[i+1]] of the Lagrange basis polynomial through t[i], t[i-1], ...,
    t[i-order+1] that is 1 at t[i-j]. The integrand has degree order - 1, so Gauss-Legendre with
    ``order`` nodes integrates it exactly."""
    if order - 1 > i:
        raise ValueError(f"order {order} needs {order - 1} earlier steps, step {i} has only {i}")
    a, b = t[i], t[i + 1]
    nodes, weights = _gauss_legendre(max(order, 1))
    total = 0.0
    for node, weight in zip(nodes.tolist(), weights.tolist(), strict=True):
        tau = 0.5 * (b - a) * node + 0.5 * (a + b)
        prod = 1.0
        for k in range(order):
            if k != j:
                prod *= (tau - t[i - k]) / (t[i - j] - t[i - k])
        total += weight * prod
    return 0.5 * (b - a) * total


@torch.no_grad()
def sample_lms(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    order: int = 4,
) -> Tensor:
    """Linear multistep (Adams-Bashforth in sigma with the schedule's uneven steps), up to ``order``;
    the step to sigma 0 returns the denoised prediction."""
    sig = _as_floats(sigmas)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed)
    ds: list[Tensor] = []
    for i in range(len(sig) - 1):
        denoised = run.denoise(x, sig[i])
        ds.append(_to_d(x, sig[i], denoised))
        if len(ds) > order:
            ds.pop(0)
        run.report(i, x, denoised, sig[i], sig[i + 1])
        if sig[i + 1] == 0:  # the last step lands on the denoised prediction, as in ComfyUI
            x = denoised
            continue
        cur_order = min(i + 1, order)
        coeffs = [lms_coefficient(cur_order, sig, i, j) for j in range(cur_order)]
        for coeff, d in zip(coeffs, reversed(ds), strict=True):
            x = x + d * coeff
    return x


def _lam(sigma: float) -> float:
    """The log signal-to-noise "time" of DPM-Solver: lambda = -log(sigma)."""
    return -math.log(sigma)


@torch.no_grad()
def sample_dpmpp_2m(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
) -> Tensor:
    """DPM-Solver++(2M): second-order multistep exponential integrator on the data prediction."""
    sig = _as_floats(sigmas)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed)
    old_denoised: Tensor | None = None
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        denoised = run.denoise(x, s)
        run.report(i, x, denoised, s, s_next)
        if s_next == 0:
            x = denoised
        else:
            h = _lam(s_next) - _lam(s)
            ratio = s_next / s
            mix = -math.expm1(-h)
            if old_denoised is None:
                x = x * ratio + denoised * mix
            else:
                r = (_lam(s) - _lam(sig[i - 1])) / h
                c_new = 1 + 1 / (2 * r)
                c_old = 1 / (2 * r)
                x = x * ratio + (denoised * c_new - old_denoised * c_old) * mix
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    solver_type: Literal["midpoint", "heun"] = "midpoint",
    brownian_cpu: bool = True,
) -> Tensor:
    """DPM-Solver++(2M) SDE, noise from one Brownian tree by default. ``solver_type`` "heun" is
    ComfyUI's dpmpp_2m_sde_heun."""
    if solver_type not in ("midpoint", "heun"):
        raise ValueError(f"solver_type must be 'midpoint' or 'heun', got {solver_type!r}")
    sig = _as_floats(sigmas)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed, sig, brownian_cpu)
    old_denoised: Tensor | None = None
    h_last: float | None = None
    h: float | None = None
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        denoised = run.denoise(x, s)
        run.report(i, x, denoised, s, s_next)
        if s_next == 0:
            x = denoised
        else:
            h = _lam(s_next) - _lam(s)
            eta_h = eta * h
            mix = -math.expm1(-h - eta_h)
            x = x * (s_next / s * math.exp(-eta_h)) + denoised * mix
            if old_denoised is not None and h_last is not None:
                r = h_last / h
                if solver_type == "heun":
                    coeff = (mix / (-h - eta_h) + 1) * (1 / r)
                else:
                    coeff = 0.5 * mix * (1 / r)
                x = x + (denoised - old_denoised) * coeff
            if eta:
                x = x + run.noise(s, s_next) * (s_next * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise)
        old_denoised = denoised
        h_last = h
    return x


@torch.no_grad()
def sample_dpmpp_sde(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    r: float = 0.5,
    brownian_cpu: bool = True,
) -> Tensor:
    """DPM-Solver++ (stochastic, second order, two model calls per step with an intermediate at
    lambda + r * h). The default noise is one Brownian tree, on the CPU unless ``brownian_cpu`` is
    False, so the two sub-steps share one path."""
    sig = _as_floats(sigmas)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed, sig, brownian_cpu)
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        denoised = run.denoise(x, s)
        run.report(i, x, denoised, s, s_next)
        if s_next == 0:
            x = x + _to_d(x, s, denoised) * (s_next - s)
            continue
        t, t_next = _lam(s), _lam(s_next)
        h = t_next - t
        s_mid = math.exp(-(t + h * r))
        fac = 1 / (2 * r)
        # first sub-step, to the intermediate noise level
        sd, su = get_ancestral_step(s, s_mid, eta)
        x_2 = x * (sd / s) + denoised * (-math.expm1(t - _lam(sd)) if sd > 0 else 1.0)
        x_2 = x_2 + run.noise(s, s_mid) * (s_noise * su)
        denoised_2 = run.denoise(x_2, s_mid)
        # second sub-step, the whole step with a blended data prediction
        sd, su = get_ancestral_step(s, s_next, eta)
        denoised_d = denoised * (1 - fac) + denoised_2 * fac
        x = x * (sd / s) + denoised_d * (-math.expm1(t - _lam(sd)) if sd > 0 else 1.0)
        x = x + run.noise(s, s_next) * (s_noise * su)
    return x


@torch.no_grad()
def sample_dpmpp_2s_ancestral(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """DPM-Solver++(2S) single-step second order down to sigma_down, then fresh noise."""
    sig = _as_floats(sigmas)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed)
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        denoised = run.denoise(x, s)
        sigma_down, sigma_up = get_ancestral_step(s, s_next, eta)
        run.report(i, x, denoised, s, s_next)
        if sigma_down == 0:
            x = x + _to_d(x, s, denoised) * (sigma_down - s)
        else:
            t, t_next = _lam(s), _lam(sigma_down)
            h = t_next - t
            s_mid = math.exp(-(t + 0.5 * h))
            x_2 = x * (s_mid / s) + denoised * (-math.expm1(-0.5 * h))
            denoised_2 = run.denoise(x_2, s_mid)
            x = x * (sigma_down / s) + denoised_2 * (-math.expm1(-h))
        if s_next > 0:
            x = x + run.noise(s, s_next) * (s_noise * sigma_up)
    return x


@torch.no_grad()
def sample_lcm(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    noise_scaling: Callable[[float, Tensor, Tensor], Tensor] | None = None,
    model_sampling: ModelSampling | None = None,
) -> Tensor:
    """Latent-consistency sampling: jump to the denoised prediction, re-noise to the next level.

    ``noise_scaling(sigma, noise, latent)`` (``model_sampling``'s when given) defaults to
    latent + sigma * noise.
    """
    if noise_scaling is None and model_sampling is not None:
        noise_scaling = model_sampling.noise_scaling
    sig = _as_floats(sigmas)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed)
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        denoised = run.denoise(x, s)
        run.report(i, x, denoised, s, s_next)
        x = denoised
        if s_next > 0:
            noise = run.noise(s, s_next)
            x = noise_scaling(s_next, noise, x) if noise_scaling is not None else x + noise * s_next
    return x


# ---------------------------------------------------------------------------------- UniPC
def _unipc_coefficients(
    h: float, rks: list[float], order: int, variant: Literal["bh1", "bh2"], corrector: bool
) -> tuple[float, list[float], list[float]]:
    """B(h) and the predictor / corrector weights of UniPC (data prediction) for one step.

    ``rks`` are the relative log-SNR offsets of the earlier points (negative) followed by 1.0.
    Returns (B_h, rhos_p, rhos_c); rhos_p has order - 1 entries, rhos_c has order entries (or none).
    """
    hh = -h
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1.0
    factorial = 1
    b_h = hh if variant == "bh1" else math.expm1(hh)
    rows: list[list[float]] = []
    b: list[float] = []
    for k in range(1, order + 1):
        rows.append([rk ** (k - 1) for rk in rks])
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    rhos_p: list[float] = []
    if order == 2:
        rhos_p = [0.5]
    elif order > 2:
        rm = np.array(rows, dtype=np.float64)
        rhos_p = np.linalg.solve(rm[:-1, :-1], np.array(b[:-1])).tolist()
    rhos_c: list[float] = []
    if corrector:
        if order == 1:
            rhos_c = [0.5]
        else:
            rhos_c = np.linalg.solve(np.array(rows, dtype=np.float64), np.array(b)).tolist()
    return b_h, rhos_p, rhos_c


@torch.no_grad()
def sample_uni_pc(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    variant: Literal["bh1", "bh2"] = "bh1",
    max_order: int = 3,
    final_sigma: float = 0.001,
) -> Tensor:
    """UniPC multistep predictor-corrector (Zhao et al. 2023) on the data prediction, written in
    k-diffusion's sigma form (lambda = -log sigma; identical to the VP form of the paper).

    As in ComfyUI: order min(3, steps - 1), lower orders for the first and last steps, the corrector on
    every step but the last, and the model output at each predicted point reused by the next step, so
    one model call per step. "uni_pc" is variant bh1, "uni_pc_bh2" is bh2. A final sigma of 0 is
    replaced by ``final_sigma`` (0.001, as in ComfyUI); ``final_sigma=0`` takes it exactly (the last
    step then returns the denoised prediction).
    """
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"variant must be 'bh1' or 'bh2', got {variant!r}")
    sig = _as_floats(sigmas)
    if final_sigma > 0 and sig[-1] == 0:
        sig[-1] = float(final_sigma)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed)
    n = len(sig) - 1
    order = max(1, min(max_order, n - 1))
    prev_d: list[Tensor] = [run.denoise(x, sig[0])]
    prev_lam: list[float] = [_lam(sig[0])]
    for i in range(n):
        k = i + 1  # index of the target sigma
        s_prev, s_t = sig[i], sig[k]
        d0 = prev_d[-1]
        run.report(i, x, d0, s_prev, s_t)
        if s_t == 0:
            x = d0  # the limit of the first-order step as lambda -> infinity
            continue
        step_order = min(k, order, n + 1 - k)
        use_corrector = k < n
        lam0, lam_t = prev_lam[-1], _lam(s_t)
        h = lam_t - lam0
        rks: list[float] = []
        d1s: list[Tensor] = []
        for j in range(1, step_order):
            rk = (prev_lam[-(j + 1)] - lam0) / h
            rks.append(rk)
            d1s.append((prev_d[-(j + 1)] - d0) / rk)
        rks.append(1.0)
        b_h, rhos_p, rhos_c = _unipc_coefficients(h, rks, step_order, variant, use_corrector)
        # first-order (DPM-Solver++ 1) part shared by predictor and corrector
        x_base = x * (s_t / s_prev) + d0 * (-math.expm1(-h))
        x_t = x_base
        for rho, d1 in zip(rhos_p, d1s, strict=True):
            x_t = x_t - d1 * (b_h * rho)
        d_t: Tensor | None = None
        if use_corrector:
            d_t = run.denoise(x_t, s_t)
            x_t = x_base - (d_t - d0) * (b_h * rhos_c[-1])
            for rho, d1 in zip(rhos_c[:-1], d1s, strict=True):
                x_t = x_t - d1 * (b_h * rho)
        x = x_t
        if d_t is not None:
            prev_d.append(d_t)
            prev_lam.append(lam_t)
            del prev_d[:-order], prev_lam[:-order]
    return x


@torch.no_grad()
def sample_uni_pc_bh2(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    max_order: int = 3,
    final_sigma: float = 0.001,
) -> Tensor:
    """UniPC with B(h) = e^h - 1 (ComfyUI's "uni_pc_bh2")."""
    return sample_uni_pc(
        model,
        x,
        sigmas,
        extra_args=extra_args,
        callback=callback,
        noise_sampler=noise_sampler,
        seed=seed,
        variant="bh2",
        max_order=max_order,
        final_sigma=final_sigma,
    )


# ---------------------------------------------------------------------------------- registry
from . import samplers_extra as _x  # noqa: E402  (it builds on the helpers above)

SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "euler": sample_euler,
    "euler_cfg_pp": _x.sample_euler_cfg_pp,
    "euler_ancestral": sample_euler_ancestral,
    "euler_ancestral_cfg_pp": _x.sample_euler_ancestral_cfg_pp,
    "heun": sample_heun,
    "heunpp2": _x.sample_heunpp2,
    "exp_heun_2_x0": _x.sample_exp_heun_2_x0,
    "exp_heun_2_x0_sde": _x.sample_exp_heun_2_x0_sde,
    "dpm_2": sample_dpm_2,
    "dpm_2_ancestral": sample_dpm_2_ancestral,
    "lms": sample_lms,
    "dpm_fast": _x.sample_dpm_fast,
    "dpm_adaptive": _x.sample_dpm_adaptive,
    "dpmpp_2s_ancestral": sample_dpmpp_2s_ancestral,
    "dpmpp_2s_ancestral_cfg_pp": _x.sample_dpmpp_2s_ancestral_cfg_pp,
    "dpmpp_sde": sample_dpmpp_sde,
    "dpmpp_sde_gpu": _x.sample_dpmpp_sde_gpu,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_2m_cfg_pp": _x.sample_dpmpp_2m_cfg_pp,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "dpmpp_2m_sde_gpu": _x.sample_dpmpp_2m_sde_gpu,
    "dpmpp_2m_sde_heun": _x.sample_dpmpp_2m_sde_heun,
    "dpmpp_2m_sde_heun_gpu": _x.sample_dpmpp_2m_sde_heun_gpu,
    "dpmpp_3m_sde": _x.sample_dpmpp_3m_sde,
    "dpmpp_3m_sde_gpu": _x.sample_dpmpp_3m_sde_gpu,
    "ddpm": _x.sample_ddpm,
    "lcm": sample_lcm,
    "ipndm": _x.sample_ipndm,
    "ipndm_v": _x.sample_ipndm_v,
    "deis": _x.sample_deis,
    "res_multistep": _x.sample_res_multistep,
    "res_multistep_cfg_pp": _x.sample_res_multistep_cfg_pp,
    "res_multistep_ancestral": _x.sample_res_multistep_ancestral,
    "res_multistep_ancestral_cfg_pp": _x.sample_res_multistep_ancestral_cfg_pp,
    "gradient_estimation": _x.sample_gradient_estimation,
    "gradient_estimation_cfg_pp": _x.sample_gradient_estimation_cfg_pp,
    "er_sde": _x.sample_er_sde,
    "seeds_2": _x.sample_seeds_2,
    "seeds_3": _x.sample_seeds_3,
    "sa_solver": _x.sample_sa_solver,
    "sa_solver_pece": _x.sample_sa_solver_pece,
    "ddim": sample_ddim,
    "uni_pc": sample_uni_pc,
    "uni_pc_bh2": sample_uni_pc_bh2,
}
"""Sampler name -> function: every sampler of ComfyUI's KSampler, in its order."""

SAMPLER_NAMES: list[str] = list(SAMPLERS)

#: samplers that read the model's noise schedule (``model_sampling=``): LCM re-noises with it, SA-Solver
#: takes its stochastic interval from it
MODEL_SAMPLING_SAMPLERS: frozenset[str] = frozenset({"lcm", "sa_solver", "sa_solver_pece"})

DISCARD_PENULTIMATE_SIGMA_SAMPLERS: frozenset[str] = frozenset(
    {"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"}
)
"""ComfyUI's KSampler computes the schedule for steps + 1 and drops the second-to-last sigma for these."""


def get_sampler(name: str) -> Callable[..., Tensor]:
    """The sampler function called ``name``; ValueError naming the valid ones otherwise."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; valid samplers: {', '.join(SAMPLER_NAMES)}") from None
