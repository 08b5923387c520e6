"""The sampler loop's inpainting hooks against closed forms, with a model whose answer is known: the
noise mask blend (ComfyUI's), the run's inputs on every model call, and the per-step mask of
Differential Diffusion against thresholds computed by hand from the schedule."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from atelier.engine.sampling import ModelSampling
from atelier.engine.sampling.conditioning import CondEntry
from atelier.engine.sampling.denoise_masks import differential_diffusion
from atelier.engine.sampling.guidance import DenoiseMaskArgs, DenoiseMaskFunction, ModelCall
from atelier.engine.sampling.ksampler import effective_sigmas, sample

TARGET = 0.9


@dataclass
class PointModel:
    """eps-prediction model whose denoised output is TARGET everywhere; records its calls."""

    sampling: ModelSampling = field(default_factory=lambda: ModelSampling.discrete("eps"))
    denoise_mask_function: DenoiseMaskFunction | None = None
    calls: list[ModelCall] = field(default_factory=list)
    needs_pooled = False
    cfg_functions = ()

    def timestep(self, sigma):
        return sigma

    def apply_model(self, call: ModelCall):
        self.calls.append(call)
        sigma = call.timestep.reshape(-1, 1, 1, 1).float()
        x = call.x * (sigma**2 + 1) ** 0.5
        return (x - TARGET) / sigma


def _cond() -> list[CondEntry]:
    return [CondEntry(torch.zeros(1, 77, 8))]


def _run(model: PointModel, latent: torch.Tensor, mask: torch.Tensor, steps: int = 10) -> torch.Tensor:
    return sample(
        model,
        latent,
        seed=3,
        steps=steps,
        cfg=1.0,
        sampler_name="euler",
        scheduler="normal",
        positive=_cond(),
        negative=_cond(),
        noise_mask=mask,
    )


def _columns(values: list[float], h: int = 4) -> torch.Tensor:
    return torch.tensor(values).reshape(1, 1, -1).expand(1, h, -1).clone()


def test_soft_noise_mask_blends_once_as_comfyui_does() -> None:
    latent = torch.zeros(1, 4, 4, 4)
    out = _run(PointModel(), latent, _columns([0.0, 0.3, 0.7, 1.0]))
    # the last step's prediction blended through the mask: TARGET * m (the latent is 0)
    expected = TARGET * torch.tensor([0.0, 0.3, 0.7, 1.0])
    assert torch.allclose(out[0, 0, 0], expected, atol=1e-4)
    assert torch.equal(out[..., 0], latent[..., 0])  # where the mask is 0: the input, exactly


def test_every_model_call_sees_the_runs_inputs() -> None:
    model = PointModel()
    latent = torch.randn(2, 4, 4, 4)
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, :16] = 1.0
    _run(model, latent, mask, steps=3)
    assert len(model.calls) == 3
    for call in model.calls:
        assert call.sampling is not None and torch.equal(call.sampling.latent_image, latent)
        expected = torch.zeros(2, 1, 4, 4)
        expected[:, :, :2] = 1.0
        assert torch.equal(call.sampling.denoise_mask, expected)  # the noise mask at latent resolution
        assert len(call.sampling.sigmas) == 4


def _thresholds(sigmas: torch.Tensor, ms: ModelSampling) -> list[float]:
    """(t(sigma_i) - t_end) / (t_start - t_end) with t the nearest table index, by hand."""
    log_table = ms.sigmas.double().log()

    def t(s: float) -> float:
        return float((log_table - torch.tensor(s).double().log()).abs().argmin())

    end = max(float(sigmas[-1]), ms.sigma_min)
    return [(t(float(s)) - t(end)) / (t(float(sigmas[0])) - t(end)) for s in sigmas[:-1]]


def test_differential_diffusion_repaints_by_threshold() -> None:
    seen: list[torch.Tensor] = []
    dd = differential_diffusion(1.0)

    def spy(args: DenoiseMaskArgs) -> torch.Tensor:
        m = dd(args)
        seen.append(m)
        return m

    model = PointModel(denoise_mask_function=spy)
    values = [0.0, 0.3, 0.7, 1.0]
    mask = _columns(values)
    out = _run(model, torch.zeros(1, 4, 4, 4), mask)
    sigmas = effective_sigmas(model, "normal", "euler", 10)
    thresholds = _thresholds(sigmas, model.sampling)
    # from 1 at the first step to 0 at the last (the schedule's smallest sigma)
    assert thresholds[0] == 1.0 and thresholds[-1] == 0.0 and thresholds == sorted(thresholds, reverse=True)
    assert len(seen) == 10
    for m, th in zip(seen, thresholds, strict=True):
        expected = torch.tensor([float(v >= th and v > 0) for v in values])  # 0 is never repainted
        assert torch.equal(m[0, 0, 0], expected), (th, m[0, 0, 0])
    # every masked column is repainted by the end (late for small values), the unmasked one kept
    assert torch.allclose(out[0, 0, 0], torch.tensor([0.0, TARGET, TARGET, TARGET]), atol=1e-4)


def test_differential_diffusion_strength_mixes_the_soft_mask() -> None:
    ms = ModelSampling.discrete("eps")
    sigmas = torch.tensor([14.6, 5.0, 1.0, 0.0])
    mask = _columns([0.5, 0.9])[:, None]
    args = DenoiseMaskArgs(sigma=torch.tensor([5.0]), mask=mask, sigmas=sigmas, sampling=ms)
    th = _thresholds(sigmas, ms)[1]
    assert 0.5 < th < 0.9
    binary = (mask >= th).float()
    assert torch.equal(differential_diffusion(1.0)(args), binary)
    assert torch.allclose(differential_diffusion(0.25)(args), 0.25 * binary + 0.75 * mask)
