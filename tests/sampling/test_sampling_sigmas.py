"""SIGMAS arithmetic of the custom-sampling nodes against hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from atelier.engine.sampling.ksampler import schedule
from atelier.engine.sampling.model_sampling import ModelSampling
from atelier.engine.sampling.schedulers import exponential_sigmas
from atelier.engine.sampling.sigmas import (
    basic_scheduler_sigmas,
    flip_sigmas,
    laplace_sigmas,
    parse_sigmas,
    polyexponential_sigmas,
    sd_turbo_sigmas,
    split_sigmas,
    split_sigmas_denoise,
    vp_sigmas,
)

SIGMAS = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.0])


def values(t: torch.Tensor) -> list[float]:
    return [round(float(v), 6) for v in t]


@pytest.mark.parametrize(
    ("step", "high", "low"),
    [
        (0, [10.0], [10.0, 5.0, 2.0, 1.0, 0.0]),
        (2, [10.0, 5.0, 2.0], [2.0, 1.0, 0.0]),
        (4, [10.0, 5.0, 2.0, 1.0, 0.0], [0.0]),
        (9, [10.0, 5.0, 2.0, 1.0, 0.0], []),
    ],
)
def test_split_sigmas_share_the_split_step(step: int, high: list[float], low: list[float]) -> None:
    a, b = split_sigmas(SIGMAS, step)
    assert values(a) == high and values(b) == low


@pytest.mark.parametrize(
    ("denoise", "high", "low"),
    [
        (1.0, [10.0], [10.0, 5.0, 2.0, 1.0, 0.0]),
        (0.5, [10.0, 5.0, 2.0], [2.0, 1.0, 0.0]),
        (0.3, [10.0, 5.0, 2.0, 1.0], [1.0, 0.0]),  # round(4 * 0.3) = 1 step
        (0.0, [], [0.0]),  # ComfyUI's edge: no steps leaves the high part empty
    ],
)
def test_split_sigmas_denoise(denoise: float, high: list[float], low: list[float]) -> None:
    a, b = split_sigmas_denoise(SIGMAS, denoise)
    assert values(a) == high and values(b) == low


def test_split_outputs_do_not_share_memory_with_the_input() -> None:
    s = SIGMAS.clone()
    a, b = split_sigmas(s, 2)
    a[0] = 99.0
    b[0] = 99.0
    assert torch.equal(s, SIGMAS)


def test_flip_sigmas_lifts_the_leading_zero_and_leaves_the_input() -> None:
    s = SIGMAS.clone()
    assert values(flip_sigmas(s)) == [0.0001, 1.0, 2.0, 5.0, 10.0]
    assert torch.equal(s, SIGMAS)
    assert values(flip_sigmas(torch.tensor([3.0, 1.0]))) == [1.0, 3.0]
    assert len(flip_sigmas(torch.zeros(0))) == 0


def test_polyexponential_by_hand_and_rho_one_is_exponential() -> None:
    got = polyexponential_sigmas(3, 0.1, 10.0, rho=2.0)
    lo, hi = math.log(0.1), math.log(10.0)
    want = [math.exp(r**2 * (hi - lo) + lo) for r in (1.0, 0.5, 0.0)] + [0.0]
    assert torch.allclose(got, torch.tensor(want), rtol=1e-6)
    assert torch.allclose(polyexponential_sigmas(5, 0.03, 14.6), exponential_sigmas(5, 0.03, 14.6), rtol=1e-5)


def test_vp_sigmas_by_hand() -> None:
    got = vp_sigmas(3, beta_d=19.9, beta_min=0.1, eps_s=0.001)
    ts = [1.0, (1.0 + 0.001) / 2, 0.001]
    want = [math.sqrt(math.exp(19.9 * t * t / 2 + 0.1 * t) - 1) for t in ts] + [0.0]
    assert torch.allclose(got, torch.tensor(want), rtol=1e-5)


def test_sd_turbo_takes_every_hundredth_timestep_from_the_top() -> None:
    ms = ModelSampling.discrete()
    got = sd_turbo_sigmas(ms, 2, 1.0)
    assert torch.allclose(got, torch.tensor([float(ms.sigmas[999]), float(ms.sigmas[899]), 0.0]), rtol=1e-5)
    half = sd_turbo_sigmas(ms, 3, 0.5)  # starts 10 - int(5) = 5 entries in: timestep 499
    want = [float(ms.sigmas[t]) for t in (499, 399, 299)] + [0.0]
    assert torch.allclose(half, torch.tensor(want), rtol=1e-5)


@pytest.mark.parametrize("scheduler", ["normal", "karras", "simple"])
@pytest.mark.parametrize("denoise", [1.0, 0.5])
def test_basic_scheduler_is_ksamplers_schedule(scheduler: str, denoise: float) -> None:
    ms = ModelSampling.discrete()

    class M:
        sampling = ms

    got = basic_scheduler_sigmas(ms, scheduler, 6, denoise)
    assert len(got) == 7
    assert torch.equal(got, schedule(M(), scheduler, "euler", 6, denoise))  # type: ignore[arg-type]
    assert len(basic_scheduler_sigmas(ms, scheduler, 6, 0.0)) == 0


def test_laplace_sigmas_by_hand() -> None:
    got = laplace_sigmas(3, 0.03, 14.6, mu=0.0, beta=0.5)
    # quantiles 0, 0.5, 1: log(sigma) = -0.5 * sign(0.5 - x) * log(1 - 2|0.5 - x| + 1e-5), then clamped
    ends = 0.5 * math.log(1e-5)
    want = [min(max(math.exp(v), 0.03), 14.6) for v in (-ends, 0.0, ends)]
    assert len(got) == 3  # no final 0, as ComfyUI's
    assert torch.allclose(got, torch.tensor(want), rtol=1e-5)
    assert values(laplace_sigmas(3, 0.03, 14.6, mu=1.0)) == values(torch.tensor(want[:1] + [math.e, 0.03]))


def test_parse_sigmas_reads_the_numbers() -> None:
    assert values(parse_sigmas("14.6, 7 ,0.5;.25 1e-2 -0")) == [14.6, 7.0, 0.5, 0.25, 0.01, 0.0]
    assert len(parse_sigmas("none here")) == 0
