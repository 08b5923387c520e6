"""Samplers checked against denoisers whose answers are known in closed form.

* Point mass at mu: the exact denoiser returns mu for every input, every sampler must end on mu.
* Gaussian data N(mu, s^2): the exact denoiser is mu + s^2 / (s^2 + sigma^2) * (x - mu); the
  probability-flow ODE is solved by x(sigma) = mu + (x_T - mu) * sqrt((s^2 + sigma^2) / (s^2 + sigma_T^2)),
  so ODE samplers are measured against it (and their convergence order read off), and stochastic
  samplers must produce samples with mean mu and standard deviation s.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from atelier.engine.sampling import (
    DISCARD_PENULTIMATE_SIGMA_SAMPLERS,
    SAMPLER_NAMES,
    SAMPLERS,
    ModelSampling,
    brownian_tree_noise_sampler,
    calculate_sigmas,
    default_noise_sampler,
    get_ancestral_step,
    get_sampler,
    karras_sigmas,
    lms_coefficient,
)
from atelier.engine.sampling.guidance import CfgArgs

MU, S = 0.3, 0.5
MS = ModelSampling.discrete()
DETERMINISTIC = [
    "euler",
    "euler_cfg_pp",
    "heun",
    "heunpp2",
    "exp_heun_2_x0",
    "dpm_2",
    "lms",
    "dpm_fast",
    "dpm_adaptive",
    "dpmpp_2m",
    "dpmpp_2m_cfg_pp",
    "ipndm",
    "ipndm_v",
    "deis",
    "res_multistep",
    "res_multistep_cfg_pp",
    "gradient_estimation",
    "gradient_estimation_cfg_pp",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
]
STOCHASTIC = [
    "euler_ancestral",
    "euler_ancestral_cfg_pp",
    "exp_heun_2_x0_sde",
    "dpm_2_ancestral",
    "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde",
    "dpmpp_sde_gpu",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun",
    "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu",
    "ddpm",
    "lcm",
    "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp",
    "er_sde",
    "seeds_2",
    "seeds_3",
    "sa_solver",
    "sa_solver_pece",
]
#: these stop at the last non-zero sigma (ComfyUI hands DPM-Solver sigma_min, not 0)
STOP_AT_SIGMA_MIN = {"dpm_fast", "dpm_adaptive"}


def _guided(denoised: Tensor, x: Tensor, sigma: Tensor, post_cfg: tuple[Any, ...]) -> Tensor:
    """A guided denoiser's post-CFG hook with cond = uncond (what CFG++ samplers read)."""
    for fn in post_cfg:
        denoised = fn(CfgArgs(denoised, denoised, 1.0, x, sigma, denoised))
    return denoised


def gaussian_denoiser(x: Tensor, sigma: Tensor, *, post_cfg: tuple[Any, ...] = (), **_: Any) -> Tensor:
    sg = sigma.view(-1, *([1] * (x.ndim - 1)))
    return _guided(MU + S**2 / (S**2 + sg**2) * (x - MU), x, sigma, post_cfg)


def point_denoiser(x: Tensor, sigma: Tensor, *, post_cfg: tuple[Any, ...] = (), **_: Any) -> Tensor:
    return _guided(torch.full_like(x, MU), x, sigma, post_cfg)


class Counting:
    """Wraps a denoiser, counting calls and remembering the sigma batches it saw."""

    def __init__(self, inner: Callable[..., Tensor]) -> None:
        self.inner = inner
        self.calls = 0
        self.sigmas: list[Tensor] = []
        self.kwargs: list[dict[str, Any]] = []

    def __call__(self, x: Tensor, sigma: Tensor, **kwargs: Any) -> Tensor:
        self.calls += 1
        self.sigmas.append(sigma)
        self.kwargs.append(kwargs)
        return self.inner(x, sigma, **kwargs)


def noisy_start(sigma_max: float, shape: tuple[int, ...], seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return MU + torch.randn(shape, generator=g, dtype=torch.float64) * math.sqrt(S**2 + sigma_max**2)


def ode_solution(x_t: Tensor, sigma_max: float) -> Tensor:
    return MU + (x_t - MU) * (S / math.sqrt(S**2 + sigma_max**2))


# ------------------------------------------------------------------------------ registry
def test_registry_names_in_comfyui_order() -> None:
    assert SAMPLER_NAMES[:6] == [
        "euler",
        "euler_cfg_pp",
        "euler_ancestral",
        "euler_ancestral_cfg_pp",
        "heun",
        "heunpp2",
    ]
    assert SAMPLER_NAMES[-3:] == ["ddim", "uni_pc", "uni_pc_bh2"]
    assert len(SAMPLER_NAMES) == len(set(SAMPLER_NAMES)) == 44
    assert set(SAMPLERS) == set(SAMPLER_NAMES) == set(DETERMINISTIC + STOCHASTIC)
    assert DISCARD_PENULTIMATE_SIGMA_SAMPLERS == {"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"}
    assert get_sampler("heun") is SAMPLERS["heun"]
    with pytest.raises(ValueError) as err:
        get_sampler("plms")
    assert "plms" in str(err.value) and "uni_pc_bh2" in str(err.value)


# ------------------------------------------------------------------------------ point mass
@pytest.mark.parametrize("name", SAMPLER_NAMES)
@pytest.mark.parametrize("scheduler", ["karras", "normal", "simple"])
def test_point_mass_lands_on_mu(name: str, scheduler: str) -> None:
    sig = calculate_sigmas(MS, scheduler, 7)
    x = noisy_start(float(sig[0]), (3, 4, 2, 2))
    out = SAMPLERS[name](point_denoiser, x, sig, seed=5)
    expected = torch.full_like(out, MU)
    if name in STOP_AT_SIGMA_MIN:  # on the exact ODE path, at the last non-zero sigma
        expected = MU + (x - MU) * (float(sig[-2]) / float(sig[0]))
    elif name.startswith("uni_pc"):  # on the exact ODE path at sigma 0.001, where ComfyUI's UniPC stops
        expected = MU + (x - MU) * (0.001 / float(sig[0]))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-7)


# ------------------------------------------------------------------------------ ODE accuracy
def _ode_errors(name: str, steps: list[int], **opts: Any) -> list[float]:
    sigma_max = 14.6
    x = noisy_start(sigma_max, (32, 4))
    exact = ode_solution(x, sigma_max)
    errors = []
    for n in steps:
        # sigma_min tiny so that the final jump to 0 is negligible and every step shrinks with n
        sig = karras_sigmas(n, 1e-3, sigma_max).double()
        out = SAMPLERS[name](gaussian_denoiser, x, sig, **opts)
        errors.append(float((out - exact).abs().max()))
    return errors


# (name, lowest accepted error ratio when the steps double from 20 to 40, highest accepted error at 40)
ORDERS = [
    ("euler", 1.8, 0.1),
    ("ddim", 1.8, 0.1),
    ("heun", 3.5, 1e-2),
    ("dpm_2", 3.5, 1e-2),
    ("dpmpp_2m", 3.5, 1e-2),
    ("lms", 7.0, 5e-3),
    ("uni_pc", 7.0, 1e-3),
    ("uni_pc_bh2", 7.0, 1e-3),
]


@pytest.mark.parametrize("name,min_ratio,max_err", ORDERS)
def test_ode_samplers_converge_with_their_order(name: str, min_ratio: float, max_err: float) -> None:
    e10, e20, e40 = _ode_errors(name, [10, 20, 40])
    assert e40 < max_err
    assert e20 / e40 >= min_ratio, (e10, e20, e40)
    if name in ("euler", "ddim"):  # first order: the error halves, no better
        assert e20 / e40 < 2.3


@pytest.mark.parametrize(
    "name,max_err",
    [
        ("euler_ancestral", 0.1),  # first order, as euler
        ("dpm_2_ancestral", 1e-2),
        ("dpmpp_2s_ancestral", 1e-2),
        ("dpmpp_sde", 1e-2),
        ("dpmpp_2m_sde", 1e-2),
    ],
)
def test_eta_zero_follows_the_ode(name: str, max_err: float) -> None:
    (err,) = _ode_errors(name, [40], eta=0.0)
    assert err < max_err


def test_eta_zero_ancestral_equals_deterministic_counterpart() -> None:
    sig = calculate_sigmas(MS, "karras", 9).double()
    x = noisy_start(float(sig[0]), (4, 3))
    a = SAMPLERS["euler_ancestral"](gaussian_denoiser, x, sig, eta=0.0)
    torch.testing.assert_close(a, SAMPLERS["euler"](gaussian_denoiser, x, sig))
    b = SAMPLERS["dpm_2_ancestral"](gaussian_denoiser, x, sig, eta=0.0)
    torch.testing.assert_close(b, SAMPLERS["dpm_2"](gaussian_denoiser, x, sig))


def test_uni_pc_final_sigma_option_and_short_schedules() -> None:
    sig = calculate_sigmas(MS, "karras", 12).double()
    x = noisy_start(float(sig[0]), (8, 2))
    exact = ode_solution(x, float(sig[0]))
    exact_end = SAMPLERS["uni_pc"](gaussian_denoiser, x, sig, final_sigma=0.0)
    comfy_like = SAMPLERS["uni_pc"](gaussian_denoiser, x, sig)  # stops at 0.001, as ComfyUI
    assert 0 < float((exact_end - comfy_like).abs().max()) < 1e-2
    assert float((comfy_like - exact).abs().max()) < 5e-2
    # one and two steps still work; one step to exactly 0 is a single jump to the denoised prediction
    one = torch.tensor([float(sig[0]), 0.0], dtype=torch.float64)
    torch.testing.assert_close(
        SAMPLERS["uni_pc"](gaussian_denoiser, x, one, final_sigma=0.0), gaussian_denoiser(x, one[:1])
    )
    two = SAMPLERS["uni_pc_bh2"](gaussian_denoiser, x, [float(sig[0]), 1.0, 0.0])
    assert torch.isfinite(two).all()


# ------------------------------------------------------------------------------ stochastic samplers
@pytest.mark.parametrize(
    "name,opts",
    [
        ("euler_ancestral", {}),
        ("dpm_2_ancestral", {}),
        ("dpmpp_2s_ancestral", {}),
        ("dpmpp_sde", {}),
        ("dpmpp_2m_sde", {}),
        ("dpmpp_2m_sde", {"solver_type": "heun"}),
        ("heun", {"s_churn": 10.0}),
    ],
)
def test_stochastic_samplers_reach_the_data_distribution(name: str, opts: dict[str, Any]) -> None:
    n_samples = 20000
    results = {}
    for steps in (25, 100):
        sig = calculate_sigmas(MS, "karras", steps).double()
        x = noisy_start(float(sig[0]), (n_samples, 1), seed=11)
        out = SAMPLERS[name](gaussian_denoiser, x, sig, seed=3, **opts)
        results[steps] = (float(out.mean()), float(out.std()))
    mean, std = results[100]
    # standard error of the mean is S / sqrt(20000) = 0.0035, of the std about 0.0025
    assert abs(mean - MU) < 0.02
    assert abs(std - S) < 0.03, results
    # and the spread approaches S as the steps shrink (or is already there)
    assert abs(results[100][1] - S) <= abs(results[25][1] - S) + 0.01, results


def test_lcm_variance_follows_its_recursion() -> None:
    # x_i ~ N(mu, v_i); denoised = mu + k_i (x_i - mu), k_i = s^2 / (s^2 + sigma_i^2); x_{i+1} = denoised + sigma_{i+1} z
    sig = calculate_sigmas(MS, "karras", 6).double()
    sl = sig.tolist()
    v = S**2 + sl[0] ** 2
    for i in range(len(sl) - 1):
        k = S**2 / (S**2 + sl[i] ** 2)
        v = k * k * v + sl[i + 1] ** 2
    x = noisy_start(sl[0], (40000, 1), seed=2)
    out = SAMPLERS["lcm"](gaussian_denoiser, x, sig, seed=9)
    assert abs(float(out.mean()) - MU) < 0.01
    assert float(out.var()) == pytest.approx(v, rel=0.04)


def test_lcm_uses_given_noise_scaling() -> None:
    seen: list[float] = []

    def scaling(sigma: float, noise: Tensor, latent: Tensor) -> Tensor:
        seen.append(sigma)
        return latent + 2 * sigma * noise

    sig = [10.0, 5.0, 1.0, 0.0]
    SAMPLERS["lcm"](gaussian_denoiser, noisy_start(10.0, (2, 2)), sig, noise_scaling=scaling)
    assert seen == [5.0, 1.0]


# ------------------------------------------------------------------------------ noise and seeds
@pytest.mark.parametrize("name", STOCHASTIC + ["euler_churn"])
def test_seed_reproducibility(name: str) -> None:
    fn = SAMPLERS["euler"] if name == "euler_churn" else SAMPLERS[name]
    opts: dict[str, Any] = {"s_churn": 5.0} if name == "euler_churn" else {}
    sig = calculate_sigmas(MS, "normal", 6)
    x = noisy_start(float(sig[0]), (2, 4, 3, 3)).float()
    a = fn(gaussian_denoiser, x, sig, seed=42, **opts)
    b = fn(gaussian_denoiser, x, sig, seed=42, **opts)
    c = fn(gaussian_denoiser, x, sig, seed=43, **opts)
    d = fn(gaussian_denoiser, x, sig, **opts)
    e = fn(gaussian_denoiser, x, sig, seed=0, **opts)
    assert a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(d, e), "seed None means seed 0"


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_samplers_draw_no_noise(name: str) -> None:
    def forbidden(sigma: float, sigma_next: float) -> Tensor:
        raise AssertionError("a deterministic sampler asked for noise")

    sig = calculate_sigmas(MS, "karras", 5)
    x = noisy_start(float(sig[0]), (2, 3))
    a = SAMPLERS[name](gaussian_denoiser, x, sig, noise_sampler=forbidden, seed=1)
    b = SAMPLERS[name](gaussian_denoiser, x, sig, seed=2)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_custom_noise_sampler_is_used(name: str) -> None:
    calls: list[tuple[float, float]] = []

    def zeros(sigma: float, sigma_next: float) -> Tensor:
        assert isinstance(sigma, float) and isinstance(sigma_next, float)
        assert sigma >= sigma_next >= 0  # equal: the exponential Heun SDE's empty second segment
        calls.append((sigma, sigma_next))
        return torch.zeros(2, 3, dtype=torch.float64)

    sig = calculate_sigmas(MS, "karras", 5)
    x = noisy_start(float(sig[0]), (2, 3))
    out = SAMPLERS[name](gaussian_denoiser, x, sig, noise_sampler=zeros)
    assert calls, "noise was never requested"
    assert not torch.equal(out, SAMPLERS[name](gaussian_denoiser, x, sig, seed=0))


def test_default_noise_sampler_is_seeded_randn_like_x() -> None:
    """Seeded as ComfyUI: seed + 1 on the CPU (the initial noise already used ``seed`` there)."""
    x = torch.zeros(3, 4, dtype=torch.float64)
    ns = default_noise_sampler(x, seed=7)
    g = torch.Generator().manual_seed(8)
    assert torch.equal(ns(1.0, 0.5), torch.randn(3, 4, generator=g, dtype=torch.float64))
    assert torch.equal(ns(0.5, 0.1), torch.randn(3, 4, generator=g, dtype=torch.float64))


def test_brownian_tree_noise_sampler_keeps_one_path() -> None:
    x = torch.zeros(100000, dtype=torch.float64)
    ns = brownian_tree_noise_sampler(x, 0.5, 4.0, seed=1)
    first = ns(4.0, 3.0)  # W(3) - W(4), normalised
    whole = ns(4.0, 1.0)  # W(1) - W(4) must contain the same increment
    rest = ns(3.0, 1.0)
    corr = float((first * whole).mean())
    assert corr == pytest.approx(math.sqrt(1.0 / 3.0), abs=0.02)
    assert float(whole.std()) == pytest.approx(1.0, abs=0.02)
    # the increments add up along the path: sqrt(1) * first + sqrt(2) * rest = sqrt(3) * whole
    torch.testing.assert_close(first + rest * math.sqrt(2.0), whole * math.sqrt(3.0), rtol=0, atol=1e-3)
    # the same seed gives the same path, whatever the order of the queries
    again = brownian_tree_noise_sampler(x, 0.5, 4.0, seed=1)
    torch.testing.assert_close(again(4.0, 1.0), whole, rtol=0, atol=1e-5)
    assert not torch.allclose(brownian_tree_noise_sampler(x, 0.5, 4.0, seed=2)(4.0, 1.0), whole)


def test_ancestral_step_split() -> None:
    for s_from, s_to, eta in [(10.0, 5.0, 1.0), (1.0, 0.9, 0.5), (2.0, 0.0, 1.0), (3.0, 1.0, 3.0)]:
        down, up = get_ancestral_step(s_from, s_to, eta)
        assert down**2 + up**2 == pytest.approx(s_to**2)
        assert 0 <= up <= s_to
    assert get_ancestral_step(10.0, 5.0, 0.0) == (5.0, 0.0)
    # eta = 1: the reverse of adding variance s_to^2 (s_from^2 - s_to^2) / s_from^2 (DDPM posterior)
    down, up = get_ancestral_step(10.0, 5.0)
    assert up == pytest.approx(math.sqrt(25 * 75 / 100))


def test_lms_coefficients_integrate_lagrange_basis() -> None:
    t = [14.0, 9.0, 5.5, 3.0, 1.2, 0.4, 0.0]
    for i in range(3, len(t) - 1):
        coeffs = [lms_coefficient(4, t, i, j) for j in range(4)]
        assert sum(coeffs) == pytest.approx(t[i + 1] - t[i])  # the basis sums to 1
        for j in range(4):
            others = [t[i - k] for k in range(4) if k != j]
            basis = np.polynomial.Polynomial.fromroots(others)
            basis = basis / basis(t[i - j])
            integral = basis.integ()
            assert coeffs[j] == pytest.approx(integral(t[i + 1]) - integral(t[i]), rel=1e-12, abs=1e-12)
    assert lms_coefficient(1, t, 0, 0) == pytest.approx(t[1] - t[0])
    with pytest.raises(ValueError):
        lms_coefficient(4, t, 1, 0)


# ------------------------------------------------------------------------------ calling convention
TWO_CALLS_PER_STEP = {
    "heun",
    "dpm_2",
    "dpm_2_ancestral",
    "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde",
    "dpmpp_sde_gpu",
    "exp_heun_2_x0",
    "exp_heun_2_x0_sde",
    "seeds_2",
    "sa_solver_pece",
}
#: model calls for n steps (the second call is skipped on the step to sigma 0); dpm_adaptive's count
#: depends on its error estimates
EXPECTED_CALLS: dict[str, Callable[[int], int]] = {
    **{name: (lambda n: n) for name in SAMPLER_NAMES},
    **{name: (lambda n: 2 * n - 1) for name in TWO_CALLS_PER_STEP},
    "heunpp2": lambda n: 3 * n - 3,
    "seeds_3": lambda n: 3 * n - 2,
}


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_calling_convention(name: str) -> None:
    n = 6
    sig = calculate_sigmas(MS, "karras", n)
    sig_before = sig.clone()
    x = noisy_start(float(sig[0]), (3, 2, 2)).float()
    x_before = x.clone()
    model = Counting(gaussian_denoiser)
    events: list[dict[str, Any]] = []
    out = SAMPLERS[name](model, x, sig, extra_args={"cond": "c"}, callback=events.append, seed=1)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.equal(x, x_before) and torch.equal(sig, sig_before)
    if name == "dpm_adaptive":
        assert model.calls >= 3
    else:
        assert model.calls == EXPECTED_CALLS[name](n)
    # CFG++ samplers add their post-CFG hook; everything else passes extra_args through untouched
    assert all({k: v for k, v in kw.items() if k != "post_cfg"} == {"cond": "c"} for kw in model.kwargs)
    assert all(("post_cfg" in kw) == name.endswith("cfg_pp") for kw in model.kwargs)
    for s in model.sigmas:
        assert s.shape == (3,) and s.dtype == torch.float32 and s.device == x.device
        assert float(s.min()) == float(s.max()) > 0
    if name in STOP_AT_SIGMA_MIN:  # they walk their own steps in log-sigma
        assert [e["i"] for e in events] == list(range(len(events))) and events
        return
    # callback: once per step, in order, with this step's sigma and a denoised prediction
    assert [e["i"] for e in events] == list(range(n))
    for e in events:
        i = e["i"]
        assert e["sigma"] == pytest.approx(float(sig[i]))
        last_uni_pc = name.startswith("uni_pc") and i == n - 1  # it stops at 0.001
        assert e["sigma_next"] == pytest.approx(0.001 if last_uni_pc else float(sig[i + 1]))
        assert e["sigma_hat"] >= e["sigma"]
        assert e["x"].shape == x.shape and e["denoised"].shape == x.shape
    first = events[0]
    torch.testing.assert_close(
        first["denoised"], gaussian_denoiser(first["x"], torch.tensor([first["sigma"]])), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_callback_exception_interrupts(name: str) -> None:
    class Stop(Exception):
        pass

    model = Counting(gaussian_denoiser)
    calls_at_stop: list[int] = []

    def callback(info: dict[str, Any]) -> None:
        if info["i"] == 2:
            calls_at_stop.append(model.calls)
            raise Stop

    sig = calculate_sigmas(MS, "karras", 10)
    with pytest.raises(Stop):
        SAMPLERS[name](model, noisy_start(float(sig[0]), (2, 2)), sig, callback=callback)
    assert calls_at_stop and model.calls == calls_at_stop[0], "no model call after the interrupt"


def test_sigmas_as_list_or_tensor_give_the_same_result() -> None:
    sig = calculate_sigmas(MS, "exponential", 8)
    x = noisy_start(float(sig[0]), (2, 3))
    for name in ("dpmpp_2m", "uni_pc", "euler_ancestral"):
        a = SAMPLERS[name](gaussian_denoiser, x, sig, seed=4)
        b = SAMPLERS[name](gaussian_denoiser, x, sig.tolist(), seed=4)
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError):
        SAMPLERS["euler"](gaussian_denoiser, x, [1.0])


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_no_host_sync_on_the_latent(name: str) -> None:
    """Run on the meta device, where any read of tensor values (.item(), .tolist(), bool()) fails:
    step control must come from the CPU schedule only, never from device data."""
    if name == "dpm_adaptive":
        pytest.skip("its step sizes come from an error norm of the latent: a host read per step by design")
    x = torch.empty(2, 4, 8, 8, device="meta")
    seen: list[torch.device] = []

    def model(x: Tensor, sigma: Tensor, *, post_cfg: tuple[Any, ...] = ()) -> Tensor:
        seen.append(sigma.device)
        return _guided(x * 0.5, x, sigma, post_cfg)

    def noise(sigma: float, sigma_next: float) -> Tensor:
        return torch.empty(2, 4, 8, 8, device="meta")

    out = SAMPLERS[name](model, x, calculate_sigmas(MS, "karras", 6), noise_sampler=noise)
    assert out.device.type == "meta" and out.shape == x.shape
    assert all(d.type == "meta" for d in seen)


def test_model_sampling_lookups_stay_on_the_device() -> None:
    s = torch.ones(3, device="meta")
    assert MS.timestep(s).device.type == "meta"
    assert MS.timestep_discrete(s).device.type == "meta"
    assert MS.sigma(s).device.type == "meta"
