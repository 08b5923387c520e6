"""Parity with ComfyUI's own numbers, without ComfyUI installed.

tests/data/comfy_parity/reference.json was written by tests/data/comfy_parity/generate.py running
ComfyUI's sampling code (the commit is recorded in the file): model sampling, every scheduler's sigmas,
KSampler's schedule slicing, every sampler on the fixed toy denoiser of toy.py (with CFG and the
unconditional prediction that CFG++ samplers need), and the weight of an area conditioning. Here
Atelier's own implementations must reproduce them.
"""

from __future__ import annotations

import importlib.util
import json
import math
from functools import cache
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import torch
from torch import Tensor

from atelier.engine.sampling import (
    DISCARD_PENULTIMATE_SIGMA_SAMPLERS,
    SAMPLER_NAMES,
    SCHEDULER_NAMES,
    ModelSampling,
    calculate_sigmas,
    get_sampler,
)
from atelier.engine.sampling.guidance import CfgArgs, area_weight
from atelier.engine.sampling.ksampler import run_sampler, schedule

DATA = Path(__file__).resolve().parents[1] / "data" / "comfy_parity"


@cache
def reference() -> dict[str, Any]:
    return json.loads((DATA / "reference.json").read_text())


@cache
def toy() -> ModuleType:
    spec = importlib.util.spec_from_file_location("comfy_parity_toy", DATA / "toy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def close(actual: Tensor | list[float], expected: list[float], rtol: float, atol: float, what: str) -> None:
    a = torch.as_tensor(actual, dtype=torch.float64).reshape(-1)
    e = torch.tensor(expected, dtype=torch.float64).reshape(-1)
    assert a.shape == e.shape, (
        f"{what}: {a.numel()} values, ComfyUI has {e.numel()}: {a.tolist()} vs {expected}"
    )
    err = (a - e).abs()
    bound = atol + rtol * e.abs()
    worst = int(torch.argmax(err - bound))
    assert bool((err <= bound).all()), (
        f"{what}: value {worst} is {a[worst].item():.7g}, ComfyUI {e[worst].item():.7g} "
        f"(max abs err {err.max().item():.3g})"
    )


# ------------------------------------------------------------------------------------ names
def test_reference_was_made_by_a_pinned_comfyui() -> None:
    ref = reference()
    assert len(ref["comfyui_commit"]) == 40
    assert set(ref["ksampler_names"]) <= set(ref["sampler_names"])


def test_every_comfyui_sampler_and_scheduler_name_is_known() -> None:
    ref = reference()
    assert SAMPLER_NAMES == ref["sampler_names"]
    assert SCHEDULER_NAMES == ref["scheduler_names"]
    assert sorted(DISCARD_PENULTIMATE_SIGMA_SAMPLERS) == ref["discard_penultimate_sigma_samplers"]


# ----------------------------------------------------------------------------- model sampling
def model_sampling(variant: str) -> ModelSampling:
    zsnr = variant.endswith("_zsnr")
    prediction = variant.removesuffix("_zsnr")
    return ModelSampling.discrete(prediction, zsnr=zsnr)  # type: ignore[arg-type]


MS_VARIANTS = ["eps", "eps_zsnr", "v_prediction", "v_prediction_zsnr", "lcm", "lcm_zsnr", "x0", "x0_zsnr"]


@pytest.mark.parametrize("variant", MS_VARIANTS)
def test_model_sampling_matches_comfyui(variant: str) -> None:
    ref = reference()["model_sampling"][variant]
    ms = model_sampling(variant)
    table = ms.sigmas
    assert len(table) == ref["len"]
    close([ms.sigma_min, ms.sigma_max], [ref["sigma_min"], ref["sigma_max"]], 1e-6, 0, "sigma_min/max")
    close(table[:5], ref["table_head"], 1e-6, 0, "table head")
    close(table[-5:], ref["table_tail"], 1e-6, 0, "table tail")
    close(table[::50], ref["table_every_50"], 1e-6, 0, "table")
    probe = ref["timestep_of"]
    t = ms.timestep_discrete(torch.tensor(probe["sigma"], dtype=torch.float32))
    close(t, probe["t"], 0, 0, "timestep(sigma)")
    probe = ref["sigma_of"]
    close(ms.sigma(torch.tensor(probe["t"])), probe["sigma"], 1e-6, 0, "sigma(t)")
    for percent, sigma in ref["percent_to_sigma"].items():
        close([ms.percent_to_sigma(float(percent))], [sigma], 1e-6, 0, f"percent_to_sigma({percent})")

    gen = torch.Generator().manual_seed(3)
    model_output = torch.randn((2, 4, 2, 2), generator=gen)
    model_input = torch.randn((2, 4, 2, 2), generator=gen) * 5
    sig_pair = torch.tensor([float(table[-1]) * 0.999, 1.3])
    close(
        ms.calculate_input(sig_pair, model_input),
        _flat(ref["calculate_input"]),
        1e-5,
        1e-6,
        "calculate_input",
    )
    close(
        ms.calculate_denoised(sig_pair, model_output, model_input),
        _flat(ref["calculate_denoised"]),
        1e-5,
        1e-5,
        "calculate_denoised",
    )
    close(
        ms.noise_scaling(sig_pair[:1], model_output[:1], model_input[:1]),
        _flat(ref["noise_scaling"]),
        1e-5,
        1e-5,
        "noise_scaling",
    )
    close(
        ms.noise_scaling(sig_pair[:1], model_output[:1], model_input[:1], max_denoise=True),
        _flat(ref["noise_scaling_max_denoise"]),
        1e-5,
        1e-5,
        "noise_scaling(max_denoise)",
    )


def _flat(values: Any) -> list[float]:
    if isinstance(values, list):
        return [v for item in values for v in _flat(item)]
    return [float(values)]


# --------------------------------------------------------------------------------- schedulers
SCHED_VARIANTS = {"eps": ("eps", False), "eps_zsnr": ("eps", True), "lcm": ("lcm", False)}


@pytest.mark.parametrize("variant", list(SCHED_VARIANTS))
@pytest.mark.parametrize("scheduler", reference()["scheduler_names"])
def test_scheduler_sigmas_match_comfyui(variant: str, scheduler: str) -> None:
    prediction, zsnr = SCHED_VARIANTS[variant]
    ms = ModelSampling.discrete(prediction, zsnr=zsnr)  # type: ignore[arg-type]
    ref = reference()["schedulers"][variant]
    for steps, sigmas in ref["calculate_sigmas"][scheduler].items():
        got = calculate_sigmas(ms, scheduler, int(steps))
        if any(math.isnan(v) for v in sigmas):
            # ComfyUI's kl_optimal divides 0 by 0 for one step; Atelier steps from sigma_max instead
            assert (scheduler, steps) == ("kl_optimal", "1"), (scheduler, steps, sigmas)
            close(got, [ms.sigma_max, 0.0], 2e-6, 0, "kl_optimal 1 step")
            continue
        close(got, sigmas, 2e-6, 1e-6, f"{scheduler} {steps} steps")
    model = SimpleNamespace(sampling=ms)
    for case in ref["ksampler"][scheduler]:
        got = schedule(model, scheduler, case["sampler"], case["steps"], case["denoise"])  # type: ignore[arg-type]
        close(got, case["sigmas"], 2e-6, 1e-6, f"KSampler {case}")


# ----------------------------------------------------------------------------------- samplers
class ToyDenoiser:
    """toy.py's denoiser with Atelier's guided-denoiser protocol: CFG over the two predictions, then
    the caller's ``post_cfg`` functions (how CFG++ samplers read the unconditional prediction)."""

    def __init__(self, cfg: float) -> None:
        self.cfg = cfg
        self.calls = 0

    def __call__(self, x: Tensor, sigma: Tensor, *, post_cfg: tuple[Any, ...] = (), **_: Any) -> Tensor:
        self.calls += 1
        cond = toy().cond_denoised(x, sigma)
        uncond = toy().uncond_denoised(x, sigma)
        denoised = uncond + (cond - uncond) * self.cfg
        for fn in post_cfg:
            denoised = fn(CfgArgs(cond, uncond, self.cfg, x, sigma, denoised))
        return denoised


# Samplers whose step sizes adapt to error estimates amplify float32 rounding differences.
LOOSE = {"dpm_adaptive": 2e-3}


@pytest.mark.parametrize("name", reference()["sampler_names"])
def test_sampler_matches_comfyui_on_the_toy_denoiser(name: str) -> None:
    ref = reference()
    t = toy()
    ms = ModelSampling.discrete("eps")
    model = SimpleNamespace(sampling=ms)
    for run in ref["samplers"][name]:
        sigmas = schedule(model, run["scheduler"], name, run["steps"], run["denoise"])  # type: ignore[arg-type]
        close(sigmas, run["sigmas"], 2e-6, 1e-6, f"{name} schedule")
        denoiser = ToyDenoiser(ref["toy"]["cfg"])
        out = run_sampler(
            denoiser,
            ms,
            name,
            torch.tensor(run["sigmas"], dtype=torch.float32),
            noise=t.initial_noise(ref["toy"]["seed"]),
            latent=t.latent_image(),
            seed=ref["toy"]["seed"],
        )
        tol = LOOSE.get(name, 2e-4)
        close(
            out,
            run["out"],
            tol,
            tol,
            f"{name} ({run['scheduler']}, {run['steps']} steps, denoise {run['denoise']})",
        )
        assert denoiser.calls == run["calls"], (
            f"{name}: {denoiser.calls} model calls, ComfyUI made {run['calls']}"
        )


def test_samplers_that_draw_noise_depend_on_the_seed() -> None:
    """The toy runs above pin each sampler's noise to ComfyUI's; a different seed must change the
    result of every stochastic one (so the parity above is not a noise-free coincidence)."""
    t = toy()
    ms = ModelSampling.discrete("eps")
    sigmas = calculate_sigmas(ms, "karras", 5)
    for name in ("euler_ancestral", "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde", "er_sde", "lcm"):
        outs = [
            run_sampler(
                ToyDenoiser(2.0), ms, name, sigmas, noise=t.initial_noise(1), latent=t.latent_image(), seed=s
            )
            for s in (1, 2)
        ]
        assert not torch.allclose(outs[0], outs[1]), name
    assert callable(get_sampler("euler"))


# ------------------------------------------------------------------------------------- areas
@pytest.mark.parametrize("case", range(len(reference()["areas"])))
def test_area_weight_is_feathered_like_comfyui(case: int) -> None:
    ref = reference()["areas"][case]
    h, w = ref["latent"]
    weight, used = area_weight(tuple(ref["area"]), ref["strength"], h, w)
    assert list(used) == ref["used_area"]
    close(weight, _flat(ref["mult"]), 1e-6, 1e-7, f"area {ref['area']} on {h}x{w}")
