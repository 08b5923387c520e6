"""Sigma schedules checked against formulas recomputed here (numpy, mpmath) and known index lists."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from atelier.engine.sampling import (
    SCHEDULER_NAMES,
    ModelSampling,
    beta_ppf,
    betainc_regularized,
    calculate_sigmas,
)

mpmath = pytest.importorskip("mpmath")

MS = ModelSampling.discrete()
TABLE = MS.sigmas.double().numpy()
SMIN, SMAX = float(TABLE[0]), float(TABLE[-1])


def test_names() -> None:
    assert SCHEDULER_NAMES == [  # ComfyUI's, in its order (the first is the KSampler default)
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


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
@pytest.mark.parametrize("steps", [1, 2, 10, 25])
def test_common_shape(name: str, steps: int) -> None:
    sig = calculate_sigmas(MS, name, steps)
    assert sig.dtype == torch.float32 and sig.device.type == "cpu" and sig.ndim == 1
    assert float(sig[-1]) == 0.0
    assert bool((sig[1:] < sig[:-1]).all()), "strictly decreasing"
    assert float(sig[0]) <= SMAX * (1 + 1e-5)
    if name != "ddim_uniform":
        assert float(sig[0]) == pytest.approx(SMAX, rel=1e-5)
    if name != "beta" and (name != "ddim_uniform" or 1000 % steps == 0):
        assert len(sig) == steps + 1


def test_karras_formula() -> None:
    n = 12
    sig = calculate_sigmas(MS, "karras", n).double().numpy()
    rho = 7.0
    ramp = np.arange(n) / (n - 1)
    ref = (SMAX ** (1 / rho) + ramp * (SMIN ** (1 / rho) - SMAX ** (1 / rho))) ** rho
    np.testing.assert_allclose(sig[:-1], ref, rtol=1e-5)
    assert sig[0] == pytest.approx(SMAX, rel=1e-5)
    assert sig[-2] == pytest.approx(SMIN, rel=1e-5)
    # sigma^(1/rho) is evenly spaced
    np.testing.assert_allclose(np.diff(sig[:-1] ** (1 / rho)), np.diff(sig[:-1] ** (1 / rho))[0], rtol=1e-4)


def test_exponential_is_geometric() -> None:
    n = 9
    sig = calculate_sigmas(MS, "exponential", n).double().numpy()[:-1]
    ratios = sig[1:] / sig[:-1]
    np.testing.assert_allclose(ratios, (SMIN / SMAX) ** (1 / (n - 1)), rtol=1e-5)
    assert sig[-1] == pytest.approx(SMIN, rel=1e-5)


def _interp_sigma(ts: np.ndarray) -> np.ndarray:
    return np.exp(np.interp(ts, np.arange(1000), np.log(TABLE)))


@pytest.mark.parametrize("steps", [3, 10, 30])
def test_normal_and_sgm_uniform(steps: int) -> None:
    normal = calculate_sigmas(MS, "normal", steps).double().numpy()
    np.testing.assert_allclose(normal[:-1], _interp_sigma(np.linspace(999, 0, steps)), rtol=1e-5)
    assert normal[-2] == pytest.approx(SMIN, rel=1e-5)
    sgm = calculate_sigmas(MS, "sgm_uniform", steps).double().numpy()
    np.testing.assert_allclose(sgm[:-1], _interp_sigma(np.linspace(999, 0, steps + 1)[:-1]), rtol=1e-5)


def test_simple_known_indices() -> None:
    sig = calculate_sigmas(MS, "simple", 10).double().numpy()
    np.testing.assert_allclose(sig[:-1], TABLE[[999, 899, 799, 699, 599, 499, 399, 299, 199, 99]], rtol=1e-7)
    full = calculate_sigmas(MS, "simple", 1000).double().numpy()
    np.testing.assert_allclose(full[:-1], TABLE[::-1], rtol=1e-7)
    # 1000 / 3 is not whole: indices 999, 999 - 333, 999 - 666
    np.testing.assert_allclose(
        calculate_sigmas(MS, "simple", 3).double().numpy()[:-1], TABLE[[999, 666, 333]]
    )


def test_ddim_uniform_known_indices() -> None:
    sig = calculate_sigmas(MS, "ddim_uniform", 10).double().numpy()
    np.testing.assert_allclose(sig[:-1], TABLE[[901, 801, 701, 601, 501, 401, 301, 201, 101, 1]], rtol=1e-7)
    sig20 = calculate_sigmas(MS, "ddim_uniform", 20).double().numpy()
    np.testing.assert_allclose(sig20[:-1], TABLE[np.arange(951, 0, -50)], rtol=1e-7)
    # ComfyUI quirk kept: 1000 // 30 = 33 gives 31 timesteps
    assert len(calculate_sigmas(MS, "ddim_uniform", 30)) == 32


def _mp_ppf(q: float, a: float, b: float) -> float:
    lo, hi = mpmath.mpf(0), mpmath.mpf(1)
    for _ in range(60):
        mid = (lo + hi) / 2
        if mpmath.betainc(a, b, 0, mid, regularized=True) < q:
            lo = mid
        else:
            hi = mid
    return float((lo + hi) / 2)


@pytest.mark.parametrize("a,b", [(0.6, 0.6), (2.0, 5.0), (0.3, 1.7)])
def test_betainc_matches_mpmath(a: float, b: float) -> None:
    for x in [1e-6, 0.01, 0.2, 0.5, 0.77, 0.99, 1 - 1e-7]:
        ref = float(mpmath.betainc(a, b, 0, x, regularized=True))
        assert betainc_regularized(x, a, b) == pytest.approx(ref, rel=1e-10, abs=1e-14)


def test_beta_ppf_closed_forms() -> None:
    for q in [0.0, 1e-5, 0.1, 0.25, 0.5, 0.9, 0.99999, 1.0]:
        assert beta_ppf(q, 1.0, 1.0) == pytest.approx(q, abs=1e-12)
        assert beta_ppf(q, 2.0, 1.0) == pytest.approx(math.sqrt(q), abs=1e-12)
        assert beta_ppf(q, 1.0, 2.0) == pytest.approx(1 - math.sqrt(1 - q), abs=1e-12)
        assert beta_ppf(q, 0.5, 0.5) == pytest.approx(math.sin(math.pi * q / 2) ** 2, abs=1e-12)
    for q in [0.001, 0.3, 0.77]:
        assert beta_ppf(q, 0.6, 0.6) == pytest.approx(_mp_ppf(q, 0.6, 0.6), abs=1e-12)
    with pytest.raises(ValueError):
        beta_ppf(1.5, 0.6, 0.6)


def test_beta_scheduler_indices() -> None:
    steps = 10
    expected = [int(np.rint(_mp_ppf(1 - i / steps, 0.6, 0.6) * 999)) for i in range(steps)]
    sig = calculate_sigmas(MS, "beta", steps).double().numpy()
    np.testing.assert_allclose(sig[:-1], TABLE[expected], rtol=1e-7)
    # symmetric distribution: the middle quantile is the middle timestep
    assert expected[5] == 500  # rint(0.5 * 999) rounds half to even


def test_beta_drops_repeats_for_many_steps() -> None:
    sig = calculate_sigmas(MS, "beta", 1000)
    assert len(sig) < 1001
    assert bool((sig[1:] < sig[:-1]).all())


def test_unknown_scheduler_and_bad_steps() -> None:
    with pytest.raises(ValueError) as err:
        calculate_sigmas(MS, "warp", 10)
    assert "warp" in str(err.value)
    for name in SCHEDULER_NAMES:
        assert name in str(err.value)
    for bad in [0, -3, 2.5, True]:
        with pytest.raises(ValueError):
            calculate_sigmas(MS, "karras", bad)  # type: ignore[arg-type]
