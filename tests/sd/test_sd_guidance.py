"""Guidance and the KSampler loop against closed forms, with a model whose answer is known."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from atelier.engine.sampling import SAMPLER_NAMES, ModelSampling
from atelier.engine.sampling.conditioning import CondEntry
from atelier.engine.sampling.guidance import CFGDenoiser, ModelCall
from atelier.engine.sampling.ksampler import prepare_noise, sample, schedule


@dataclass
class PointModel:
    """An eps-prediction model whose denoised output is exactly the context's first value everywhere."""

    sampling: ModelSampling
    calls: list

    needs_pooled = False
    cfg_functions = ()

    def timestep(self, sigma):  # the exact sigma instead of the nearest table index
        return sigma

    def apply_model(self, call: ModelCall):
        self.calls.append(call.x.shape[0])
        sigma = call.timestep.reshape(-1, 1, 1, 1).float()
        x = call.x * (sigma**2 + 1) ** 0.5
        target = call.context[:, 0, 0].reshape(-1, 1, 1, 1)
        return (x - target) / sigma


def model(prediction: str = "eps") -> PointModel:
    base = ModelSampling.discrete(prediction)
    return PointModel(base, [])


def cond(value: float, tokens: int = 77, **fields) -> list[CondEntry]:
    return [CondEntry(torch.full((1, tokens, 8), value), **fields)]


def test_cfg_combines_cond_and_uncond_in_one_forward() -> None:
    m = model()
    d = CFGDenoiser(m, cond(2.0), cond(-1.0), cfg=3.0)
    x = torch.randn(2, 4, 8, 8)
    out = d(x, torch.tensor([5.0, 5.0]))
    assert torch.allclose(out, torch.full_like(x, -1.0 + 3.0 * (2.0 + 1.0)), atol=1e-4)
    assert m.calls == [4]  # one batched forward: 2 cond + 2 uncond


def test_cfg_one_skips_the_negative() -> None:
    m = model()
    out = CFGDenoiser(m, cond(2.0), cond(-1.0), cfg=1.0)(torch.randn(1, 4, 8, 8), torch.tensor([3.0]))
    assert torch.allclose(out, torch.full_like(out, 2.0), atol=1e-4) and m.calls == [1]


def test_different_prompt_lengths_still_batch() -> None:
    m = model()
    out = CFGDenoiser(m, cond(1.0, tokens=154), cond(0.0, tokens=77), cfg=2.0)(
        torch.randn(1, 4, 8, 8), torch.tensor([2.0])
    )
    assert m.calls == [2] and torch.allclose(out, torch.full_like(out, 2.0), atol=1e-4)


def test_area_conditioning_weights_by_strength_inside_the_area() -> None:
    m = model()
    pos = cond(1.0) + cond(5.0, area=(4, 8, 0, 0), strength=3.0)
    out = CFGDenoiser(m, pos, cond(0.0), cfg=1.0)(torch.randn(1, 4, 8, 8), torch.tensor([2.0]))
    top, bottom = out[:, :, :4], out[:, :, 4:]
    assert torch.allclose(top, torch.full_like(top, (1.0 + 5.0 * 3.0) / 4.0), atol=1e-4)
    assert torch.allclose(bottom, torch.full_like(bottom, 1.0), atol=1e-4)


def test_area_weight_is_feathered_over_its_inner_edges() -> None:
    """An area inside a 16x16 latent ramps its weight over min(8, size // 4) cells at each edge that
    lies inside the latent (not at the latent's border), as ComfyUI weighs areas."""
    m = model()
    pos = cond(1.0) + cond(5.0, area=(8, 12, 4, 0), strength=2.0)
    out = CFGDenoiser(m, pos, cond(0.0), cfg=1.0)(torch.randn(1, 4, 16, 16), torch.tensor([2.0]))
    rows = [1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 1.0]  # strength 2, ramp of 2 cells: 1/2, 1 at both ends
    cols = [1.0] * 9 + [1.0, 2 / 3, 1 / 3]  # the left edge is the latent's: no ramp; the right: 3 cells
    for r, wr in enumerate(rows):
        for c, wc in enumerate(cols):
            w = wr * wc
            expected = (1.0 + 5.0 * w) / (1.0 + w)
            assert float(out[0, 0, 4 + r, c]) == pytest.approx(expected, abs=1e-4), (r, c)
    assert torch.allclose(out[:, :, :4], torch.full_like(out[:, :, :4], 1.0), atol=1e-4)
    assert torch.allclose(out[:, :, :, 12:], torch.full_like(out[:, :, :, 12:], 1.0), atol=1e-4)


def test_cfg_pp_sampler_reads_the_unconditional_prediction_even_at_cfg_one() -> None:
    """CFG++ needs the negative's prediction: the guided denoiser evaluates it at cfg 1 too (one
    batched forward), and euler_cfg_pp then steps along it from the guided prediction."""
    from atelier.engine.sampling import get_sampler

    m = model()
    d = CFGDenoiser(m, cond(0.6), cond(0.2), cfg=1.0)
    x = torch.randn(1, 4, 8, 8) * 3.0
    sig = torch.tensor([3.0, 1.0])
    # one step: x1 = denoised + (x - uncond) / sigma * sigma_next, with denoised = 0.6 and uncond = 0.2
    out = get_sampler("euler_cfg_pp")(d, x, sig)
    torch.testing.assert_close(out, 0.6 + (x - 0.2) / 3.0, rtol=1e-4, atol=1e-4)
    assert m.calls == [2]
    # a plain call at cfg 1 still skips the negative
    d(x, torch.tensor([3.0]))
    assert m.calls == [2, 1]
    with pytest.raises(ValueError, match="negative"):
        get_sampler("euler_cfg_pp")(CFGDenoiser(m, cond(0.6), [], cfg=1.0), x, sig)


@pytest.mark.parametrize("sampler", [s for s in SAMPLER_NAMES])
def test_every_sampler_reaches_the_guided_target(sampler: str) -> None:
    m = model()
    latent = torch.zeros(1, 4, 8, 8)
    out = sample(
        m,
        latent,
        seed=1,
        steps=6,
        cfg=2.5,
        sampler_name=sampler,
        scheduler="karras",
        positive=cond(0.6),
        negative=cond(0.2),
    )
    expected = 0.2 + 2.5 * (0.6 - 0.2)
    if sampler in ("dpm_fast", "dpm_adaptive"):  # they stop at the last non-zero sigma (0.03), as ComfyUI's
        assert abs(float(out.mean()) - expected) < 0.01 and float((out - expected).abs().max()) < 0.2
        return
    atol = 5e-3 if sampler.startswith("uni_pc") else 2e-3  # UniPC stops at sigma 0.001, as ComfyUI's
    assert torch.allclose(out, torch.full_like(out, expected), atol=atol), (sampler, out.mean())


def test_v_prediction_model_reaches_the_target() -> None:
    base = ModelSampling.discrete("v_prediction")

    class VModel(PointModel):
        def apply_model(self, call: ModelCall):
            sigma = call.timestep.reshape(-1, 1, 1, 1).float()
            x = call.x * (sigma**2 + 1) ** 0.5
            target = call.context[:, 0, 0].reshape(-1, 1, 1, 1)
            # invert denoised = x/(s^2+1) - v*s/sqrt(s^2+1)
            return (x / (sigma**2 + 1) - target) * (sigma**2 + 1) ** 0.5 / sigma

    m = VModel(base, [])
    out = sample(
        m,
        torch.zeros(1, 4, 4, 4),
        seed=0,
        steps=5,
        cfg=1.0,
        sampler_name="dpmpp_2m",
        scheduler="normal",
        positive=cond(-0.4),
        negative=cond(0.0),
    )
    assert torch.allclose(out, torch.full_like(out, -0.4), atol=2e-3)


def test_same_seed_same_result_other_seed_differs() -> None:
    m = model()
    kw = dict(
        steps=4,
        cfg=2.0,
        sampler_name="euler_ancestral",
        scheduler="normal",
        positive=cond(0.5),
        negative=cond(0.0),
        denoise=0.6,
    )
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    a = sample(m, latent, seed=7, **kw)
    b = sample(m, latent, seed=7, **kw)
    c = sample(m, latent, seed=8, **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_noise_is_comfyui_convention() -> None:
    torch.manual_seed(42)
    expected = torch.randn((2, 4, 8, 8), dtype=torch.float32, device="cpu")
    assert torch.equal(prepare_noise(torch.zeros(2, 4, 8, 8), 42), expected)


def test_denoise_zero_returns_the_input_and_partial_denoise_keeps_the_tail() -> None:
    m = model()
    latent = torch.randn(1, 4, 8, 8)
    out = sample(
        m,
        latent,
        seed=1,
        steps=10,
        cfg=7,
        sampler_name="euler",
        scheduler="normal",
        positive=cond(1.0),
        negative=cond(0.0),
        denoise=0.0,
    )
    assert torch.equal(out, latent)
    full = schedule(m, "normal", "euler", 20)
    half = schedule(m, "normal", "euler", 10, denoise=0.5)
    assert len(half) == 11 and torch.allclose(half, full[-11:])


def test_advanced_start_end_steps_and_leftover_noise() -> None:
    m = model()
    latent = torch.zeros(1, 4, 8, 8)
    kw = dict(
        seed=3,
        steps=8,
        cfg=1.0,
        sampler_name="euler",
        scheduler="normal",
        positive=cond(0.5),
        negative=cond(0.0),
    )
    first = sample(m, latent, last_step=4, force_full_denoise=False, **kw)
    assert first.std() > 0.1  # leftover noise kept
    second = sample(m, first, start_step=4, add_noise=False, **kw)
    assert torch.allclose(second, torch.full_like(second, 0.5), atol=1e-3)
    forced = sample(m, latent, last_step=4, force_full_denoise=True, **kw)
    assert torch.allclose(forced, torch.full_like(forced, 0.5), atol=1e-3)
    assert torch.equal(sample(m, latent, start_step=8, **kw), latent)


def test_noise_mask_keeps_unmasked_latent() -> None:
    m = model()
    latent = torch.randn(1, 4, 8, 8)
    mask = torch.zeros(1, 8, 8)
    mask[:, :, 4:] = 1.0
    out = sample(
        m,
        latent,
        seed=1,
        steps=5,
        cfg=1.0,
        sampler_name="euler",
        scheduler="normal",
        positive=cond(0.9),
        negative=cond(0.0),
        noise_mask=mask,
    )
    assert torch.allclose(out[..., :4], latent[..., :4], atol=1e-5)
    assert torch.allclose(out[..., 5:], torch.full_like(out[..., 5:], 0.9), atol=1e-3)


def test_step_callback_counts_steps() -> None:
    seen = []
    m = model()
    sample(
        m,
        torch.zeros(1, 4, 4, 4),
        seed=0,
        steps=5,
        cfg=1.0,
        sampler_name="heun",
        scheduler="normal",
        positive=cond(0.1),
        negative=cond(0.0),
        callback=lambda i, n, x, d: seen.append((i, n)),
    )
    assert seen == [(i, 5) for i in range(1, 6)]


@pytest.mark.parametrize("sampler", ["euler", "ddim"])
def test_masked_run_renoises_the_kept_region_like_comfyui(sampler: str) -> None:
    """Where the noise mask is 0 the model sees the input latent noised to the step's sigma: with the
    run's initial noise, except for "ddim", which ComfyUI gives a fresh draw seeded seed + 1."""
    seen: list[torch.Tensor] = []

    class Recording(PointModel):
        def apply_model(self, call: ModelCall):
            seen.append(call.x.clone())
            return super().apply_model(call)

    m = Recording(ModelSampling.discrete("eps"), [])
    latent = torch.full((1, 4, 8, 8), 0.25)
    mask = torch.zeros(1, 8, 8)
    mask[:, :, :4] = 1.0
    seed = 7
    out = sample(
        m,
        latent,
        seed=seed,
        steps=3,
        cfg=1.0,
        sampler_name=sampler,
        scheduler="karras",
        positive=cond(0.6),
        negative=cond(0.2),
        noise_mask=mask,
    )
    sigma0 = float(schedule(m, "karras", sampler, 3)[0])
    kept = seen[0][:, :, :, 4:] * (sigma0**2 + 1) ** 0.5 - 0.25  # undo the input scaling, remove the latent
    if sampler == "ddim":
        expected = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(seed + 1))
    else:
        expected = prepare_noise(latent, seed)
    torch.testing.assert_close(kept, expected[:, :, :, 4:] * sigma0, rtol=1e-4, atol=1e-4)
    assert torch.equal(out[:, :, :, 4:], latent[:, :, :, 4:])
