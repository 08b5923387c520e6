"""ModelSampling checked against the LDM formulas recomputed here with numpy in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from atelier.engine.sampling import ModelSampling, make_betas, sigmas_from_betas

MS = ModelSampling.discrete()


def reference_sigmas() -> np.ndarray:
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    acp = np.cumprod(1.0 - betas)
    return np.sqrt((1.0 - acp) / acp)


def test_table_matches_ldm_formula() -> None:
    ref = reference_sigmas()
    assert MS.sigmas.dtype == torch.float32
    assert MS.sigmas.device.type == "cpu"
    assert MS.sigmas.shape == (1000,)
    np.testing.assert_allclose(MS.sigmas.numpy(), ref, rtol=1e-6)
    assert bool((MS.sigmas[1:] > MS.sigmas[:-1]).all())


def test_known_sd_extremes() -> None:
    assert MS.sigma_max == pytest.approx(14.6146, abs=1e-4)
    assert MS.sigma_min == pytest.approx(0.0292, abs=1e-4)
    assert MS.num_timesteps == 1000
    np.testing.assert_allclose(MS.alphas_cumprod.numpy(), 1 / (1 + reference_sigmas() ** 2), rtol=1e-6)


def test_beta_helpers() -> None:
    lin = make_betas("linear", 10, 0.1, 0.2)
    np.testing.assert_allclose(lin.numpy(), np.linspace(0.1, 0.2, 10))
    sig = sigmas_from_betas(torch.tensor([0.5, 0.5], dtype=torch.float64))
    np.testing.assert_allclose(sig.numpy(), [1.0, math.sqrt(3.0)])  # acp = 1/2, 1/4
    with pytest.raises(ValueError):
        make_betas("cosine", 10)  # type: ignore[arg-type]


def test_sigma_of_integer_and_fractional_t() -> None:
    ref = reference_sigmas()
    t = torch.tensor([0.0, 1.0, 500.0, 999.0])
    np.testing.assert_allclose(MS.sigma(t).numpy(), ref[[0, 1, 500, 999]], rtol=1e-5)
    # halfway between table entries is the geometric mean (interpolation in log sigma)
    np.testing.assert_allclose(float(MS.sigma(torch.tensor(10.5))), math.sqrt(ref[10] * ref[11]), rtol=1e-5)
    # clamped outside [0, 999]
    assert float(MS.sigma(torch.tensor(-5.0))) == pytest.approx(ref[0], rel=1e-5)
    assert float(MS.sigma(2000.0)) == pytest.approx(ref[999], rel=1e-5)


def test_timestep_inverts_table_and_clamps() -> None:
    idx = torch.tensor([0, 1, 37, 500, 998, 999])
    np.testing.assert_allclose(MS.timestep(MS.sigmas[idx]).numpy(), idx.numpy(), atol=1e-3)
    assert float(MS.timestep(MS.sigma_max)) == pytest.approx(999.0, abs=1e-4)
    assert float(MS.timestep(MS.sigma_min)) == pytest.approx(0.0, abs=1e-4)
    assert float(MS.timestep(1e-6)) == 0.0
    assert float(MS.timestep(1e6)) == 999.0
    # geometric mean of neighbours sits halfway
    ref = reference_sigmas()
    assert float(MS.timestep(math.sqrt(ref[200] * ref[201]))) == pytest.approx(200.5, abs=1e-3)
    # shapes are kept
    assert MS.timestep(torch.ones(2, 3)).shape == (2, 3)


def test_timestep_discrete_is_nearest_in_log_space() -> None:
    ref = reference_sigmas()
    a, b = ref[300], ref[301]
    just_below_mid = math.exp(0.5 * (math.log(a) + math.log(b))) * 0.9999
    just_above_mid = math.exp(0.5 * (math.log(a) + math.log(b))) * 1.0001
    out = MS.timestep_discrete(torch.tensor([just_below_mid, just_above_mid, 1e-9, 1e9]))
    assert out.tolist() == [300, 301, 0, 999]


@settings(max_examples=60, deadline=None)
@given(st.floats(min_value=0.0, max_value=999.0, allow_nan=False))
def test_timestep_sigma_round_trip(t: float) -> None:
    assert float(MS.timestep(MS.sigma(t))) == pytest.approx(t, abs=2e-3)


def _vp_pair(sigma: float) -> tuple[float, float]:
    alpha = 1.0 / math.sqrt(1.0 + sigma**2)
    return alpha, sigma * alpha


@pytest.mark.parametrize("sigma", [0.03, 0.7, 14.6])
def test_eps_and_v_prediction_recover_x0(sigma: float) -> None:
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64)
    x = x0 + sigma * eps  # k-diffusion (VE) noisy latent
    alpha, sig_vp = _vp_pair(sigma)
    # the network sees the VP-scaled latent
    eps_model = ModelSampling.discrete("eps")
    torch.testing.assert_close(eps_model.calculate_input(sigma, x), alpha * x0 + sig_vp * eps)
    torch.testing.assert_close(eps_model.calculate_denoised(sigma, eps, x), x0)
    # v = alpha * eps - sigma_vp * x0 (Salimans & Ho), with sigma as a batch tensor
    v = alpha * eps - sig_vp * x0
    v_model = ModelSampling.discrete("v_prediction")
    sig_batch = torch.full((2,), sigma, dtype=torch.float64)
    torch.testing.assert_close(v_model.calculate_denoised(sig_batch, v, x), x0)
    torch.testing.assert_close(v_model.calculate_input(sig_batch, x), alpha * x)


def test_noise_scaling_conventions() -> None:
    noise = torch.ones(2, 1, 2, 2)
    latent = torch.full((2, 1, 2, 2), 0.5)
    assert torch.allclose(MS.noise_scaling(3.0, noise, latent), torch.full_like(noise, 3.5))
    assert torch.allclose(
        MS.noise_scaling(torch.tensor(3.0), noise, latent, max_denoise=True),
        torch.full_like(noise, math.sqrt(10.0) + 0.5),
    )
    per_sample = MS.noise_scaling(torch.tensor([1.0, 2.0]), noise, latent)
    assert per_sample[:, 0, 0, 0].tolist() == [1.5, 2.5]
    assert MS.inverse_noise_scaling(1.0, latent) is latent


def test_percent_to_sigma() -> None:
    ref = reference_sigmas()
    assert MS.percent_to_sigma(0.0) > 1e8
    assert MS.percent_to_sigma(1.0) == 0.0
    assert MS.percent_to_sigma(0.5) == pytest.approx(math.sqrt(ref[499] * ref[500]), rel=1e-5)
    assert MS.percent_to_sigma(0.25) > MS.percent_to_sigma(0.75)


def test_validation() -> None:
    with pytest.raises(ValueError, match="prediction"):
        ModelSampling(sigmas=MS.sigmas, prediction="flow")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ascending"):
        ModelSampling(sigmas=MS.sigmas.flip(0))
