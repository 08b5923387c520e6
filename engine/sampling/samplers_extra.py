"""The rest of ComfyUI's samplers, in the same form as samplers.py: pure functions
``(model, x, sigmas, *, extra_args, callback, noise_sampler, seed, ...) -> x``.

Written from the papers, with the conventions (defaults, step-order ramps, where noise is drawn) of
ComfyUI's versions so that the same seed gives the same picture; the step coefficients are computed on
the host in float64. For the discrete SD schedule alpha_t = 1 and the half log-SNR is -log(sigma).

* CFG++ (Chung et al. 2024): re-noise with the unconditional prediction instead of the guided one.
* DPM-Solver++(3M) SDE, DPM-Solver fast / adaptive (Lu et al. 2022).
* DDPM ancestral steps (Ho et al. 2020), Heun++ (heunpp2), iPNDM and its variable-step form, DEIS
  (Zhang & Chen 2022, time-integrated Lagrange coefficients), RES multistep (Zhang et al. 2023),
  gradient estimation (Permenter & Yuan 2024), ER-SDE (Cui et al. 2023), SEEDS-2/3 (Gonzalez et al.
  2023) and the exponential Heun x0 solvers, SA-Solver (Xue et al. 2023).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from .model_sampling import ModelSampling
from .noise import NoiseSampler
from .samplers import (
    Callback,
    Denoiser,
    _as_floats,
    _lam,
    _Runner,
    _to_d,
    get_ancestral_step,
    sample_dpmpp_2m_sde,
    sample_dpmpp_sde,
)

Sigmas = Tensor | Sequence[float]


def _expm1_over(h: float) -> float:
    """(e^h - 1) / h, 1 at h = 0."""
    return math.expm1(h) / h if h != 0 else 1.0


# ------------------------------------------------------------------------ SDE variants
@torch.no_grad()
def sample_dpmpp_3m_sde(
    model: Denoiser,
    x: Tensor,
    sigmas: Sigmas,
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    brownian_cpu: bool = True,
) -> Tensor:
    """DPM-Solver++(3M) SDE: third-order multistep on the data prediction (second order on the second
    step, first on the first), Brownian-tree noise by default."""
    sig = _as_floats(sigmas)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed, sig, brownian_cpu)
    d_1: Tensor | None = None
    d_2: Tensor | None = None
    h: float | None = None
    h_1: float | None = None
    h_2: float | None = None
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        denoised = run.denoise(x, s)
        run.report(i, x, denoised, s, s_next)
        if s_next == 0:
            x = denoised
        else:
            h = _lam(s_next) - _lam(s)
            h_eta = h * (eta + 1)
            x = x * (s_next / s * math.exp(-h * eta)) + denoised * (-math.expm1(-h_eta))
            phi_2 = math.expm1(-h_eta) / h_eta + 1
            if h_2 is not None and h_1 is not None and d_1 is not None and d_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - d_1) / r0
                d1_1 = (d_1 - d_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + d1 * phi_2 - d2 * phi_3
            elif h_1 is not None and d_1 is not None:
                x = x + (denoised - d_1) * (phi_2 / (h_1 / h))
            if eta > 0 and s_noise > 0:
                x = x + run.noise(s, s_next) * (s_next * math.sqrt(-math.expm1(-2 * h * eta)) * s_noise)
        d_1, d_2 = denoised, d_1
        h_1, h_2 = h, h_1
    return x


def _gpu_variant(fn: Callable[..., Tensor], doc: str, **fixed: Any) -> Callable[..., Tensor]:
    def sampler(model: Denoiser, x: Tensor, sigmas: Sigmas, **kw: Any) -> Tensor:
        return fn(model, x, sigmas, **{"brownian_cpu": False, **fixed, **kw})

    sampler.__doc__ = doc
    sampler.__name__ = f"{fn.__name__}_gpu"
    return sampler


def _with(fn: Callable[..., Tensor], name: str, doc: str, **fixed: Any) -> Callable[..., Tensor]:
    def sampler(model: Denoiser, x: Tensor, sigmas: Sigmas, **kw: Any) -> Tensor:
        return fn(model, x, sigmas, **{**fixed, **kw})

    sampler.__doc__ = doc
    sampler.__name__ = name
    return sampler


sample_dpmpp_sde_gpu = _gpu_variant(sample_dpmpp_sde, "dpmpp_sde with its Brownian tree on x's device.")
sample_dpmpp_2m_sde_gpu = _gpu_variant(
    sample_dpmpp_2m_sde, "dpmpp_2m_sde with its Brownian tree on x's device."
)
sample_dpmpp_2m_sde_heun = _with(
    sample_dpmpp_2m_sde,
    "sample_dpmpp_2m_sde_heun",
    "DPM-Solver++(2M) SDE, Heun-type correction.",
    solver_type="heun",
)
sample_dpmpp_2m_sde_heun_gpu = _gpu_variant(
    sample_dpmpp_2m_sde, "dpmpp_2m_sde_heun with its Brownian tree on x's device.", solver_type="heun"
)
sample_dpmpp_3m_sde_gpu = _gpu_variant(
    sample_dpmpp_3m_sde, "dpmpp_3m_sde with its Brownian tree on x's device."
)


# ------------------------------------------------------------------------------ CFG++
@torch.no_grad()
def sample_euler_ancestral_cfg_pp(
    model: Denoiser,
    x: Tensor,
    sigmas: Sigmas,
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """Euler ancestral, CFG++: step from the guided prediction along the unconditional noise."""
    sig = _as_floats(sigmas)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed)
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        denoised, uncond = run.denoise_cfg_pp(x, s)
        run.report(i, x, denoised, s, s_next)
        if s_next == 0:
            x = denoised
            continue
        sigma_down, sigma_up = get_ancestral_step(s, s_next, eta)
        x = denoised + _to_d(x, s, uncond) * sigma_down
        if eta > 0 and s_noise > 0:
            x = x + run.noise(s, s_next) * (s_noise * sigma_up)
    return x


@torch.no_grad()
def sample_euler_cfg_pp(
    model: Denoiser,
    x: Tensor,
    sigmas: Sigmas,
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
) -> Tensor:
    """Euler, CFG++ (deterministic)."""
    return sample_euler_ancestral_cfg_pp(
        model,
        x,
        sigmas,
        extra_args=extra_args,
        callback=callback,
        noise_sampler=noise_sampler,
        seed=seed,
        eta=0.0,
        s_noise=0.0,
    )


@torch.no_grad()
def sample_dpmpp_2s_ancestral_cfg_pp(
    model: Denoiser,
    x: Tensor,
    sigmas: Sigmas,
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """DPM-Solver++(2S) ancestral, CFG++: the state is shifted by (guided - unconditional) prediction."""
    sig = _as_floats(sigmas)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed)
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        denoised, uncond = run.denoise_cfg_pp(x, s)
        sigma_down, sigma_up = get_ancestral_step(s, s_next, eta)
        run.report(i, x, denoised, s, s_next)
        if sigma_down == 0:
            x = denoised + _to_d(x, s, uncond) * sigma_down
        else:
            t, t_next = _lam(s), _lam(sigma_down)
            h = t_next - t
            s_mid = math.exp(-(t + 0.5 * h))
            shifted = x + (denoised - uncond)
            x_2 = shifted * (s_mid / s) - denoised * math.expm1(-0.5 * h)
            # the midpoint call's unconditional prediction shifts the full step (as in ComfyUI)
            denoised_2, uncond_2 = run.denoise_cfg_pp(x_2, s_mid)
            x = (x + (denoised - uncond_2)) * (sigma_down / s) - denoised_2 * math.expm1(-h)
        if s_next > 0:
            x = x + run.noise(s, s_next) * (s_noise * sigma_up)
    return x


@torch.no_grad()
def sample_dpmpp_2m_cfg_pp(
    model: Denoiser,
    x: Tensor,
    sigmas: Sigmas,
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
) -> Tensor:
    """DPM-Solver++(2M), CFG++."""
    sig = _as_floats(sigmas)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed)
    old_uncond: Tensor | None = None
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        denoised, uncond = run.denoise_cfg_pp(x, s)
        run.report(i, x, denoised, s, s_next)
        if s_next == 0:
            x = denoised
        else:
            h = _lam(s_next) - _lam(s)
            decay = math.exp(-h)
            if old_uncond is None:
                mix = uncond * -decay
            else:
                r = (_lam(s) - _lam(sig[i - 1])) / h
                mix = uncond * -decay - (denoised - old_uncond) * (math.expm1(-h) / (2 * r))
            x = denoised + mix + x * decay
        old_uncond = uncond
    return x


# ------------------------------------------------------------------------- RES multistep
@torch.no_grad()
def _res_multistep(
    model: Denoiser,
    x: Tensor,
    sigmas: Sigmas,
    *,
    extra_args: dict[str, Any] | None,
    callback: Callback | None,
    noise_sampler: NoiseSampler | None,
    seed: int | None,
    eta: float,
    s_noise: float,
    cfg_pp: bool,
) -> Tensor:
    sig = _as_floats(sigmas)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed)
    old_sigma_down: float | None = None
    old_denoised: Tensor | None = None
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        if cfg_pp:
            denoised, uncond = run.denoise_cfg_pp(x, s)
        else:
            denoised = uncond = run.denoise(x, s)
        sigma_down, sigma_up = get_ancestral_step(s, s_next, eta)
        run.report(i, x, denoised, s, s_next)
        if sigma_down == 0 or old_denoised is None or old_sigma_down is None:
            if cfg_pp:
                x = denoised + _to_d(x, s, uncond) * sigma_down
            else:
                x = x + _to_d(x, s, denoised) * (sigma_down - s)
        else:
            # second-order exponential multistep (RES, arXiv 2308.02157) in lambda = -log(sigma)
            t, t_old, t_next, t_prev = _lam(s), _lam(old_sigma_down), _lam(sigma_down), _lam(sig[i - 1])
            h = t_next - t
            c2 = (t_prev - t_old) / h
            phi1 = _expm1_over(-h)
            phi2 = (phi1 - 1.0) / -h
            b1 = phi1 - phi2 / c2 if c2 != 0 else 0.0
            b2 = phi2 / c2 if c2 != 0 else 0.0
            if cfg_pp:
                x = x + (denoised - uncond)
            x = x * math.exp(-h) + (uncond * b1 + old_denoised * b2) * h
        if s_next > 0 and sigma_up > 0:
            x = x + run.noise(s, s_next) * (s_noise * sigma_up)
        old_denoised = uncond
        old_sigma_down = sigma_down
    return x


def _res(name: str, doc: str, eta_default: float, cfg_pp: bool) -> Callable[..., Tensor]:
    @torch.no_grad()
    def sampler(
        model: Denoiser,
        x: Tensor,
        sigmas: Sigmas,
        *,
        extra_args: dict[str, Any] | None = None,
        callback: Callback | None = None,
        noise_sampler: NoiseSampler | None = None,
        seed: int | None = None,
        eta: float = eta_default,
        s_noise: float = 1.0,
    ) -> Tensor:
        return _res_multistep(
            model,
            x,
            sigmas,
            extra_args=extra_args,
            callback=callback,
            noise_sampler=noise_sampler,
            seed=seed,
            eta=eta,
            s_noise=s_noise,
            cfg_pp=cfg_pp,
        )

    sampler.__doc__ = doc
    sampler.__name__ = name
    return sampler


sample_res_multistep = _res("sample_res_multistep", "RES second-order multistep (deterministic).", 0.0, False)
sample_res_multistep_cfg_pp = _res("sample_res_multistep_cfg_pp", "RES multistep, CFG++.", 0.0, True)
sample_res_multistep_ancestral = _res(
    "sample_res_multistep_ancestral", "RES multistep, ancestral.", 1.0, False
)
sample_res_multistep_ancestral_cfg_pp = _res(
    "sample_res_multistep_ancestral_cfg_pp", "RES multistep, ancestral, CFG++.", 1.0, True
)


# ---------------------------------------------------------------------- gradient estimation
@torch.no_grad()
def sample_gradient_estimation(
    model: Denoiser,
    x: Tensor,
    sigmas: Sigmas,
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    ge_gamma: float = 2.0,
    cfg_pp: bool = False,
) -> Tensor:
    """Euler with the slope extrapolated from the previous one: d + (gamma - 1) * (d - d_prev)."""
    sig = _as_floats(sigmas)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed)
    old_d: Tensor | None = None
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        if cfg_pp:
            denoised, uncond = run.denoise_cfg_pp(x, s)
        else:
            denoised = uncond = run.denoise(x, s)
        d = _to_d(x, s, uncond)
        run.report(i, x, denoised, s, s_next)
        dt = s_next - s
        if s_next == 0:
            x = denoised
        else:
            x = denoised + d * s_next if cfg_pp else x + d * dt
            if old_d is not None:
                x = x + (d - old_d) * ((ge_gamma - 1) * dt)
        old_d = d
    return x


@torch.no_grad()
def sample_gradient_estimation_cfg_pp(
    model: Denoiser, x: Tensor, sigmas: Sigmas, *, ge_gamma: float = 2.0, **kw: Any
) -> Tensor:
    """Gradient estimation, CFG++."""
    return sample_gradient_estimation(model, x, sigmas, ge_gamma=ge_gamma, cfg_pp=True, **kw)


# ------------------------------------------------------------------------------- DDPM
@torch.no_grad()
def sample_ddpm(
    model: Denoiser,
    x: Tensor,
    sigmas: Sigmas,
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
) -> Tensor:
    """DDPM ancestral steps (the posterior mean plus its variance of fresh noise), taken in the
    variance-preserving space between the schedule's levels."""
    sig = _as_floats(sigmas)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed)
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        denoised = run.denoise(x, s)
        run.report(i, x, denoised, s, s_next)
        eps = _to_d(x, s, denoised)
        acp = 1.0 / (s * s + 1.0)
        acp_next = 1.0 / (s_next * s_next + 1.0)
        alpha = acp / acp_next
        x_vp = x / math.sqrt(1.0 + s * s)
        x = (x_vp - eps * ((1 - alpha) / math.sqrt(1 - acp))) * math.sqrt(1.0 / alpha)
        if s_next > 0:
            x = x + run.noise(s, s_next) * math.sqrt((1 - alpha) * (1.0 - acp_next) / (1.0 - acp))
            x = x * math.sqrt(1.0 + s_next * s_next)
    return x


# ------------------------------------------------------------------------------- Heun++
@torch.no_grad()
def sample_heunpp2(
    model: Denoiser,
    x: Tensor,
    sigmas: Sigmas,
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
) -> Tensor:
    """Heun++: the slope a weighted mean of the slopes at the next one or two levels (weights the
    levels over 2 or 3 * sigma_max); Heun on the second-to-last step, Euler on the last."""
    sig = _as_floats(sigmas)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed)
    s_end = sig[-1]
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        denoised = run.denoise(x, s)
        d = _to_d(x, s, denoised)
        run.report(i, x, denoised, s, s_next)
        dt = s_next - s
        if s_next == s_end:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        d_2 = _to_d(x_2, s_next, run.denoise(x_2, s_next))
        if sig[i + 2] == s_end:
            w2 = s_next / (2 * sig[0])
            x = x + (d * (1 - w2) + d_2 * w2) * dt
        else:
            s_2 = sig[i + 2]
            x_3 = x_2 + d_2 * (s_2 - s_next)
            d_3 = _to_d(x_3, s_2, run.denoise(x_3, s_2))
            w2, w3 = s_next / (3 * sig[0]), s_2 / (3 * sig[0])
            x = x + (d * (1 - w2 - w3) + d_2 * w2 + d_3 * w3) * dt
    return x


# ------------------------------------------------------------- iPNDM / DEIS (Adams-Bashforth family)
_IPNDM = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


def _adams_sampler(
    model: Denoiser,
    x: Tensor,
    sig: list[float],
    run: _Runner,
    max_order: int,
    weights: Callable[[int, int], Sequence[float]],
    euler_last: bool,
) -> Tensor:
    """x_next = x + sum_j w_j * d_{i-j} with the slopes d = (x - denoised) / sigma of this and earlier
    steps; ``weights(i, order)`` gives the w_j (already multiplied by the step). The step to sigma 0 is
    the denoised prediction (or an Euler step when ``euler_last``)."""
    ds: list[Tensor] = []
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        denoised = run.denoise(x, s)
        run.report(i, x, denoised, s, s_next)
        d = _to_d(x, s, denoised)
        ds = [d, *ds][:max_order]
        order = min(max_order, i + 1)
        if s_next <= 0:
            x = x + d * (s_next - s) if euler_last else denoised
        else:
            x_new = x
            for w, dj in zip(weights(i, order), ds, strict=False):
                x_new = x_new + dj * w
            x = x_new
    return x


@torch.no_grad()
def sample_ipndm(
    model: Denoiser,
    x: Tensor,
    sigmas: Sigmas,
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    max_order: int = 4,
) -> Tensor:
    """Improved PNDM: Adams-Bashforth with the fixed-step coefficients up to ``max_order`` (Zhang &
    Chen 2022), in sigma."""
    sig = _as_floats(sigmas)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed)
    return _adams_sampler(
        model,
        x,
        sig,
        run,
        max_order,
        lambda i, order: [c * (sig[i + 1] - sig[i]) for c in _IPNDM[order]],
        False,
    )


def _ipndm_v_weights(sig: list[float], i: int, order: int) -> list[float]:
    """iPNDM-v's variable-step weights (Zhang & Chen's iPNDM with the step ratios of the schedule, as
    in the diff-solvers reference): the second order is variable-step Adams-Bashforth, orders 3 and 4
    add correction terms built from the ratios of the last steps."""
    h = sig[i + 1] - sig[i]
    if order == 1:
        return [h]
    h1 = sig[i] - sig[i - 1]
    c1, c2 = (2 + h / h1) / 2, -(h / h1) / 2
    if order == 2:
        return [h * c1, h * c2]
    h2 = sig[i - 1] - sig[i - 2]
    t1 = (1 - h / (3 * (h + h1)) * (h * (h + h1)) / (h1 * (h1 + h2))) / 2
    if order == 3:
        return [h * (c1 + t1), h * (c2 - (1 + h1 / h2) * t1), h * (t1 * h1 / h2)]
    h3 = sig[i - 2] - sig[i - 3]
    t2 = (
        ((1 - h / (3 * (h + h1))) / 2 + (1 - h / (2 * (h + h1))) * h / (6 * (h + h1 + h2)))
        * (h * (h + h1) * (h + h1 + h2))
        / (h1 * (h1 + h2) * (h1 + h2 + h3))
    )
    q = h1 * (h1 + h2) / (h2 * (h2 + h3))
    return [
        h * (c1 + t1 + t2),
        h * (c2 - (1 + h1 / h2) * t1 - (1 + h1 / h2 + q) * t2),
        h * (t1 * h1 / h2 + (h1 / h2 + q * (1 + h2 / h3)) * t2),
        h * (-t2 * q * h1 / h2),
    ]


@torch.no_grad()
def sample_ipndm_v(
    model: Denoiser,
    x: Tensor,
    sigmas: Sigmas,
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    max_order: int = 4,
) -> Tensor:
    """iPNDM with variable-step coefficients (for the schedule's uneven steps)."""
    sig = _as_floats(sigmas)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed)
    return _adams_sampler(
        model, x, sig, run, max_order, lambda i, order: _ipndm_v_weights(sig, i, order), False
    )


def _deis_coefficients(sig: list[float], max_order: int, n: int = 10000) -> list[list[float]]:
    """DEIS "tab" coefficients: the sigma schedule mapped to the time of a VP SDE fitted to EDM's
    range (sigma 0.002..80, eps 1e-3), and the exponential-integrator weight of each earlier slope,
    integral of -0.5 * dlog(alpha)/dt / sqrt(alpha (1 - alpha)) times its Lagrange basis polynomial over
    the step, by the same n-point left sum as the reference implementation."""
    eps_s, smin, smax = 1e-3, 0.002, 80.0
    beta_d = 2 * (math.log(smin**2 + 1) / eps_s - math.log(smax**2 + 1)) / (eps_s - 1)
    beta_min = math.log(smax**2 + 1) - 0.5 * beta_d
    beta_1 = beta_d + beta_min
    ts = [(math.sqrt(beta_min**2 + 2 * beta_d * math.log(s * s + 1)) - beta_min) / beta_d for s in sig]
    out: list[list[float]] = []
    for i in range(len(ts) - 1):
        order = min(i + 1, max_order)
        if order == 1 or sig[i + 1] <= 0:
            out.append([])
            continue
        taus = np.linspace(ts[i], ts[i + 1], n)
        dtau = (ts[i + 1] - ts[i]) / n
        alpha = np.exp(-0.5 * taus**2 * (beta_1 - beta_min) - taus * beta_min)
        integrand = 0.5 * (taus * (beta_1 - beta_min) + beta_min) / np.sqrt(alpha * (1 - alpha))
        prev = [ts[i - k] for k in range(order)]
        row = []
        for j in range(order):
            poly = np.ones_like(taus)
            for k in range(order):
                if k != j:
                    poly *= (taus - prev[k]) / (prev[j] - prev[k])
            row.append(float(np.sum(integrand * poly) * dtau))
        out.append(row)
    return out


@torch.no_grad()
def sample_deis(
    model: Denoiser,
    x: Tensor,
    sigmas: Sigmas,
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    max_order: int = 3,
) -> Tensor:
    """DEIS multistep (Zhang & Chen 2022), "tab" coefficients, up to ``max_order``; Euler on the
    first step and on the step to sigma 0."""
    sig = _as_floats(sigmas)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed)
    coeffs = _deis_coefficients(sig, max_order)

    def weights(i: int, order: int) -> Sequence[float]:
        return [sig[i + 1] - sig[i]] if order == 1 else coeffs[i]

    return _adams_sampler(model, x, sig, run, max_order, weights, True)


# ------------------------------------------------------------------------------- ER-SDE
def _er_noise_scaler(v: np.ndarray | float) -> Any:
    return v * (np.exp(np.power(v, 0.3)) + 10.0)


@torch.no_grad()
def sample_er_sde(
    model: Denoiser,
    x: Tensor,
    sigmas: Sigmas,
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    s_noise: float = 1.0,
    max_stage: int = 3,
) -> Tensor:
    """Extended reverse-time SDE solver (ER-SDE-Solver-3, VP, noise scale function
    lambda * (e^(lambda^0.3) + 10)), its stage integrals by a 200-point sum."""
    sig = _as_floats(sigmas)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed)
    lam = sig  # sigma / alpha with alpha = 1
    points = np.arange(200, dtype=np.float64)
    old_denoised: Tensor | None = None
    old_denoised_d: Tensor | None = None
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        denoised = run.denoise(x, s)
        run.report(i, x, denoised, s, s_next)
        stage = min(max_stage, i + 1)
        if s_next == 0:
            x = denoised
        else:
            l_s, l_t = lam[i], lam[i + 1]
            r = float(_er_noise_scaler(l_t) / _er_noise_scaler(l_s))
            x = x * r + denoised * (1 - r)
            if stage >= 2 and old_denoised is not None:
                dt = l_t - l_s
                step = -dt / 200.0
                pos = l_t + points * step
                scaled = _er_noise_scaler(pos)
                integral = float(np.sum(1.0 / scaled) * step)
                denoised_d = (denoised - old_denoised) / (l_s - lam[i - 1])
                x = x + denoised_d * (dt + integral * float(_er_noise_scaler(l_t)))
                if stage >= 3 and old_denoised_d is not None:
                    integral_u = float(np.sum((pos - l_s) / scaled) * step)
                    denoised_u = (denoised_d - old_denoised_d) / ((l_s - lam[i - 2]) / 2)
                    x = x + denoised_u * (dt**2 / 2 + integral_u * float(_er_noise_scaler(l_t)))
                old_denoised_d = denoised_d
            if s_noise > 0:
                var = l_t**2 - l_s**2 * r**2
                scale = math.sqrt(var) if var > 0 else 0.0
                x = x + run.noise(s, s_next) * (s_noise * scale)
        old_denoised = denoised
    return x


# ---------------------------------------------------------------------- SEEDS, exp. Heun
@torch.no_grad()
def sample_seeds_2(
    model: Denoiser,
    x: Tensor,
    sigmas: Sigmas,
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    r: float = 0.5,
    solver_type: Literal["phi_1", "phi_2"] = "phi_1",
) -> Tensor:
    """SEEDS-2: two-stage stochastic exponential solver on the data prediction, the intermediate at
    fraction ``r`` of the step in lambda; its noise is one path split at the intermediate."""
    if solver_type not in ("phi_1", "phi_2"):
        raise ValueError(f"solver_type must be 'phi_1' or 'phi_2', got {solver_type!r}")
    sig = _as_floats(sigmas)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed)
    inject = eta > 0 and s_noise > 0
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        denoised = run.denoise(x, s)
        run.report(i, x, denoised, s, s_next)
        if s_next == 0:
            x = denoised
            continue
        lam_s, lam_t = _lam(s), _lam(s_next)
        h = lam_t - lam_s
        h_eta = h * (eta + 1)
        s_1 = s_next if r == 1 else math.exp(-(lam_s + r * h))
        x_2 = x * (s_1 / s * math.exp(-r * h * eta)) - denoised * math.expm1(-r * h_eta)
        sde_noise: Tensor | None = None
        if inject:
            sde_noise = run.noise(s, s_1) * math.sqrt(-math.expm1(-2 * r * h * eta))
            x_2 = x_2 + sde_noise * (s_1 * s_noise)
        denoised_2 = run.denoise(x_2, s_1)
        decay = s_next / s * math.exp(-h * eta)
        if solver_type == "phi_1":
            fac = 1 / (2 * r)
            x = x * decay - (denoised + (denoised_2 - denoised) * fac) * math.expm1(-h_eta)
        else:
            b2 = (math.expm1(-h_eta) + h_eta) / -h_eta / r
            b1 = math.expm1(-h_eta) - b2
            x = x * decay - (denoised * b1 + denoised_2 * b2)
        if inject and sde_noise is not None:
            seg = (r - 1) * h * eta
            sde_noise = sde_noise * math.exp(seg) + run.noise(s_1, s_next) * math.sqrt(-math.expm1(2 * seg))
            x = x + sde_noise * (s_next * s_noise)
    return x


@torch.no_grad()
def sample_exp_heun_2_x0(model: Denoiser, x: Tensor, sigmas: Sigmas, **kw: Any) -> Tensor:
    """Deterministic exponential Heun (second order) on the data prediction in log-SNR time."""
    kw = {"eta": 0.0, "s_noise": 0.0, "r": 1.0, "solver_type": "phi_2", **kw}
    return sample_seeds_2(model, x, sigmas, **kw)


@torch.no_grad()
def sample_exp_heun_2_x0_sde(model: Denoiser, x: Tensor, sigmas: Sigmas, **kw: Any) -> Tensor:
    """Stochastic exponential Heun (second order) on the data prediction in log-SNR time."""
    kw = {"r": 1.0, "solver_type": "phi_2", **kw}
    return sample_seeds_2(model, x, sigmas, **kw)


@torch.no_grad()
def sample_seeds_3(
    model: Denoiser,
    x: Tensor,
    sigmas: Sigmas,
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    r_1: float = 1.0 / 3,
    r_2: float = 2.0 / 3,
) -> Tensor:
    """SEEDS-3: three-stage stochastic exponential solver, intermediates at r_1 and r_2 of the step."""
    sig = _as_floats(sigmas)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed)
    inject = eta > 0 and s_noise > 0

    def phi2(v: float) -> float:  # h * phi_2(h)
        return (math.expm1(v) - v) / v

    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        denoised = run.denoise(x, s)
        run.report(i, x, denoised, s, s_next)
        if s_next == 0:
            x = denoised
            continue
        lam_s, lam_t = _lam(s), _lam(s_next)
        h = lam_t - lam_s
        h_eta = h * (eta + 1)
        s_1, s_2 = math.exp(-(lam_s + r_1 * h)), math.exp(-(lam_s + r_2 * h))
        x_2 = x * (s_1 / s * math.exp(-r_1 * h * eta)) - denoised * math.expm1(-r_1 * h_eta)
        sde_noise: Tensor | None = None
        if inject:
            sde_noise = run.noise(s, s_1) * math.sqrt(-math.expm1(-2 * r_1 * h * eta))
            x_2 = x_2 + sde_noise * (s_1 * s_noise)
        denoised_2 = run.denoise(x_2, s_1)
        a3_2 = r_2 / r_1 * phi2(-r_2 * h_eta)
        a3_1 = math.expm1(-r_2 * h_eta) - a3_2
        x_3 = x * (s_2 / s * math.exp(-r_2 * h * eta)) - (denoised * a3_1 + denoised_2 * a3_2)
        if inject and sde_noise is not None:
            seg = (r_1 - r_2) * h * eta
            sde_noise = sde_noise * math.exp(seg) + run.noise(s_1, s_2) * math.sqrt(-math.expm1(2 * seg))
            x_3 = x_3 + sde_noise * (s_2 * s_noise)
        denoised_3 = run.denoise(x_3, s_2)
        b3 = phi2(-h_eta) / r_2
        b1 = math.expm1(-h_eta) - b3
        x = x * (s_next / s * math.exp(-h * eta)) - (denoised * b1 + denoised_3 * b3)
        if inject and sde_noise is not None:
            seg = (r_2 - 1) * h * eta
            sde_noise = sde_noise * math.exp(seg) + run.noise(s_2, s_next) * math.sqrt(-math.expm1(2 * seg))
            x = x + sde_noise * (s_next * s_noise)
    return x


# ------------------------------------------------------------------------------ SA-Solver
def _sa_coefficients(lambdas: Sequence[float], lam_s: float, lam_t: float, tau: float) -> list[float]:
    """Stochastic Adams weights: (1 + tau^2) * integral over [lam_s, lam_t] of
    exp(-(1 + tau^2) (lam_t - l)) times each Lagrange basis polynomial through ``lambdas`` (Gauss-Legendre,
    exact to rounding for these smooth integrands)."""
    k = 1 + tau * tau
    nodes, weights = np.polynomial.legendre.leggauss(24)
    ls = 0.5 * (lam_t - lam_s) * nodes + 0.5 * (lam_t + lam_s)
    kernel = k * np.exp(-k * (lam_t - ls)) * weights * 0.5 * (lam_t - lam_s)
    out = []
    for j, lj in enumerate(lambdas):
        basis = np.ones_like(ls)
        for m, lm in enumerate(lambdas):
            if m != j:
                basis *= (ls - lm) / (lj - lm)
        out.append(float(np.sum(kernel * basis)))
    return out


@torch.no_grad()
def sample_sa_solver(
    model: Denoiser,
    x: Tensor,
    sigmas: Sigmas,
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    s_noise: float = 1.0,
    predictor_order: int = 3,
    corrector_order: int = 4,
    use_pece: bool = False,
    tau_interval: tuple[float, float] | None = None,
    model_sampling: ModelSampling | None = None,
) -> Tensor:
    """SA-Solver: stochastic Adams predictor-corrector on the data prediction. Stochastic (tau = 1)
    only while the next sigma lies in ``tau_interval`` (default: the model's sigmas at 20 % and 80 % of
    the schedule); orders ramp up at the start and down towards sigma 0. ``use_pece`` re-evaluates
    the model on the corrected state (sa_solver_pece)."""
    sig = _as_floats(sigmas)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed)
    if tau_interval is None:
        ms = model_sampling if model_sampling is not None else ModelSampling.discrete()
        tau_interval = (ms.percent_to_sigma(0.2), ms.percent_to_sigma(0.8))
    hi, lo = tau_interval
    lams = [_lam(s) if s > 0 else math.inf for s in sig]
    max_order = max(predictor_order, corrector_order)
    x_pred = x
    h, tau = 0.0, 0.0
    noise: Tensor | None = None
    preds: list[Tensor] = []
    to_end = sig[-1] == 0
    n = len(sig)
    for i in range(n - 1):
        s, s_next = sig[i], sig[i + 1]
        denoised = run.denoise(x_pred, s)
        run.report(i, x_pred, denoised, s, s_next)
        preds = [*preds, denoised][-max_order:]
        p_order = min(predictor_order, len(preds))
        c_order = 0 if i == 0 or (s_next == 0 and not use_pece) else min(corrector_order, len(preds))
        if to_end:
            p_order = min(p_order, n - 2 - i)
            c_order = min(c_order, n - 1 - i)
        if c_order == 0:
            x = x_pred
        else:
            b = _sa_coefficients(lams[i - c_order + 1 : i + 1], lams[i - 1], lams[i], tau)
            corr = sum((p * w for p, w in zip(preds[-c_order:], b, strict=True)), torch.zeros_like(x))
            x = x * (s / sig[i - 1] * math.exp(-(tau**2) * h)) + corr
            if tau > 0 and s_noise > 0 and noise is not None:
                x = x + noise
            if use_pece:
                denoised = run.denoise(x, s)
                preds[-1] = denoised
        if s_next == 0:
            x_pred = denoised
        else:
            tau = 1.0 if hi >= s_next >= lo else 0.0
            b = _sa_coefficients(lams[i - p_order + 1 : i + 1], lams[i], lams[i + 1], tau)
            pred = sum((p * w for p, w in zip(preds[-p_order:], b, strict=True)), torch.zeros_like(x))
            h = lams[i + 1] - lams[i]
            x_pred = x * (s_next / s * math.exp(-(tau**2) * h)) + pred
            if tau > 0 and s_noise > 0:
                noise = run.noise(s, s_next) * (s_next * math.sqrt(-math.expm1(-2 * tau**2 * h)) * s_noise)
                x_pred = x_pred + noise
    return x_pred


@torch.no_grad()
def sample_sa_solver_pece(model: Denoiser, x: Tensor, sigmas: Sigmas, **kw: Any) -> Tensor:
    """SA-Solver in PECE mode (predict, evaluate, correct, evaluate)."""
    return sample_sa_solver(model, x, sigmas, **{**kw, "use_pece": True})


# --------------------------------------------------------------------- DPM-Solver fast / adaptive
class _DPMSolver:
    """DPM-Solver-1/2/3 single steps in t = -log(sigma) on the noise prediction (Lu et al. 2022)."""

    def __init__(self, run: _Runner) -> None:
        self.run = run

    def eps(self, cache: dict[str, Tensor], key: str, x: Tensor, t: float) -> Tensor:
        if key not in cache:
            sigma = math.exp(-t)
            cache[key] = (x - self.run.denoise(x, sigma)) / sigma
        return cache[key]

    def step1(self, x: Tensor, t: float, t_next: float, cache: dict[str, Tensor]) -> Tensor:
        h = t_next - t
        return x - self.eps(cache, "eps", x, t) * (math.exp(-t_next) * math.expm1(h))

    def step2(self, x: Tensor, t: float, t_next: float, cache: dict[str, Tensor], r1: float = 0.5) -> Tensor:
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - eps * (math.exp(-s1) * math.expm1(r1 * h))
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        sn = math.exp(-t_next)
        return x - eps * (sn * math.expm1(h)) - (eps_r1 - eps) * (sn / (2 * r1) * math.expm1(h))

    def step3(
        self,
        x: Tensor,
        t: float,
        t_next: float,
        cache: dict[str, Tensor],
        r1: float = 1 / 3,
        r2: float = 2 / 3,
    ) -> Tensor:
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - eps * (math.exp(-s1) * math.expm1(r1 * h))
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        u2 = (
            x
            - eps * (math.exp(-s2) * math.expm1(r2 * h))
            - (eps_r1 - eps) * (math.exp(-s2) * (r2 / r1) * (_expm1_over(r2 * h) - 1))
        )
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        sn = math.exp(-t_next)
        return x - eps * (sn * math.expm1(h)) - (eps_r2 - eps) * (sn / r2 * (_expm1_over(h) - 1))


def _sigma_range(sig: list[float]) -> tuple[float, float]:
    """What ComfyUI hands DPM-Solver: (sigma_min, sigma_max) with a final 0 replaced by the level before."""
    sigma_min = sig[-1] if sig[-1] != 0 else sig[-2]
    return sigma_min, sig[0]


@torch.no_grad()
def sample_dpm_fast(
    model: Denoiser,
    x: Tensor,
    sigmas: Sigmas,
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
) -> Tensor:
    """DPM-Solver-fast: as many model calls as steps, spent on third-order steps evenly spaced in
    t = -log(sigma) from sigma_max to the last non-zero sigma (where it stops: no final denoise)."""
    sig = _as_floats(sigmas)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed)
    nfe = len(sig) - 1
    sigma_min, sigma_max = _sigma_range(sig)
    t_start, t_end = -math.log(sigma_max), -math.log(sigma_min)
    m = nfe // 3 + 1
    ts = torch.linspace(t_start, t_end, m + 1, dtype=torch.float32).double().tolist()
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    solver = _DPMSolver(run)
    for i, order in enumerate(orders):
        cache: dict[str, Tensor] = {}
        t, t_next = ts[i], ts[i + 1]
        eps = solver.eps(cache, "eps", x, t)
        run.report(i, x, x - eps * math.exp(-t), math.exp(-t), math.exp(-t_next))
        step = {1: solver.step1, 2: solver.step2, 3: solver.step3}[order]
        x = step(x, t, t_next, cache)
    return x


class _PIDController:
    """Step size control for DPM-Solver-adaptive (integral control by default)."""

    def __init__(
        self, h: float, pcoeff: float, icoeff: float, dcoeff: float, order: float, safety: float
    ) -> None:
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.safety = safety
        self.errs: list[float] = []

    def propose(self, error: float) -> bool:
        inv = 1 / (error + 1e-8)
        if not self.errs:
            self.errs = [inv, inv, inv]
        self.errs[0] = inv
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.safety
        if accept:
            self.errs[2], self.errs[1] = self.errs[1], self.errs[0]
        self.h *= factor
        return accept


@torch.no_grad()
def sample_dpm_adaptive(
    model: Denoiser,
    x: Tensor,
    sigmas: Sigmas,
    *,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    order: int = 3,
    rtol: float = 0.05,
    atol: float = 0.0078,
    h_init: float = 0.05,
    pcoeff: float = 0.0,
    icoeff: float = 1.0,
    dcoeff: float = 0.0,
    accept_safety: float = 0.81,
) -> Tensor:
    """DPM-Solver-12/23 with adaptive steps from sigma_max to the last non-zero sigma: each step compares
    an order-2 and an order-3 (or 1 and 2) solution and a PID controller picks the next step size.
    The schedule only sets the range; the number of model calls depends on the error."""
    if order not in (2, 3):
        raise ValueError(f"order must be 2 or 3, got {order}")
    sig = _as_floats(sigmas)
    run = _Runner(model, x, extra_args, callback, noise_sampler, seed)
    sigma_min, sigma_max = _sigma_range(sig)
    s, t_end = -math.log(sigma_max), -math.log(sigma_min)
    solver = _DPMSolver(run)
    pid = _PIDController(abs(h_init), pcoeff, icoeff, dcoeff, order, accept_safety)
    x_prev = x
    steps = 0
    while s < t_end - 1e-5:
        cache: dict[str, Tensor] = {}
        t = min(t_end, s + pid.h)
        eps = solver.eps(cache, "eps", x, s)
        denoised = x - eps * math.exp(-s)
        if order == 2:
            x_low = solver.step1(x, s, t, cache)
            x_high = solver.step2(x, s, t, cache)
        else:
            x_low = solver.step2(x, s, t, cache, r1=1 / 3)
            x_high = solver.step3(x, s, t, cache)
        delta = torch.clamp(rtol * torch.maximum(x_low.abs(), x_prev.abs()), min=atol)
        error = float(torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5)
        if pid.propose(error):
            x_prev = x_low
            x = x_high
            s = t
        run.report(steps, x, denoised, math.exp(-s), math.exp(-t))
        steps += 1
    return x
