"""The KSampler step loop: noise, sigma schedule slicing (denoise, start/end steps), masks, guidance.

ComfyUI's conventions, so the same seed, checkpoint, sampler and scheduler give the same picture:
initial noise is ``torch.randn`` from ``torch.manual_seed(seed)`` drawn on the CPU in the latent's shape
(one draw per batch item up to the highest ``batch_index`` when the latent carries one, so an item picked
from a batch gets the noise it had there); ``denoise < 1`` computes ``int(steps / denoise)`` steps and keeps
the last ``steps``; a few samplers drop the penultimate sigma.

With a noise mask, every step blends the prediction with the input latent through the mask (and keeps the
unmasked part of its input at the noised input latent), as ComfyUI does; where the mask is 0 the result is
the input exactly. A model's denoise-mask function (Differential Diffusion) may change the mask per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .guidance import CFGDenoiser, Conditioning, DenoiseMaskArgs, DiffusionModel, SamplingInputs
from .model_sampling import ModelSampling
from .noise import SeedBatch
from .samplers import DISCARD_PENULTIMATE_SIGMA_SAMPLERS, MODEL_SAMPLING_SAMPLERS, Callback, get_sampler
from .schedulers import calculate_sigmas

#: ``callback(step, total, x, denoised)`` after every step (step counts from 1)
StepCallback = Callable[[int, int, Tensor, Tensor], None]


def prepare_noise(latent: Tensor, seed: int, batch_index: Sequence[int] | None = None) -> Tensor:
    """Gaussian noise in the latent's shape from ``seed``, drawn on the CPU (device independent).

    With ``batch_index`` (a latent taken from a batch: LatentFromBatch, RepeatLatentBatch), one item's
    noise is drawn after another up to the highest index, and item ``i`` gets draw ``batch_index[i]``."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed) & 0xFFFFFFFFFFFFFFFF)
    if batch_index is None:
        return torch.randn(latent.shape, generator=generator, dtype=torch.float32, device="cpu")
    if len(batch_index) != latent.shape[0] or min(batch_index, default=0) < 0:
        raise ValueError(f"batch_index {list(batch_index)} does not fit a latent batch of {latent.shape[0]}")
    item = (1, *latent.shape[1:])
    draws = [
        torch.randn(item, generator=generator, dtype=torch.float32, device="cpu")
        for _ in range(max(batch_index) + 1)
    ]
    return torch.cat([draws[i] for i in batch_index])


#: the longest schedule a partial denoise may ask for (``steps / denoise`` steps, of which the last
#: ``steps`` run): ten times the most steps a sampler takes. Beyond it a tiny denoise (1e-9, 1e-320) would
#: need a schedule of billions of steps, or an infinite one.
MAX_SCHEDULE_STEPS = 100_000


def denoise_problem(steps: int, denoise: float) -> str | None:
    """Why ``denoise`` cannot run with ``steps`` steps (the schedule it needs is too long), or None."""
    if 0.0 < denoise < 0.9999 and denoise * MAX_SCHEDULE_STEPS < steps:
        least = steps / MAX_SCHEDULE_STEPS
        return (
            f"denoise {denoise!r} with {steps} steps needs a schedule of more than {MAX_SCHEDULE_STEPS} "
            f"steps: use 0 (no sampling) or at least {least:.3g}"
        )
    return None


def schedule(
    model: DiffusionModel, scheduler: str, sampler_name: str, steps: int, denoise: float = 1.0
) -> Tensor:
    """The CPU sigma schedule for ``steps`` steps at ``denoise`` (empty when denoise is 0). At full
    denoise (above 0.9999) it is the whole schedule, which for ddim_uniform can be longer than
    ``steps + 1``; below, the last ``steps + 1`` sigmas of a ``int(steps / denoise)``-step schedule."""
    if denoise <= 0.0:
        return torch.zeros(0)
    problem = denoise_problem(steps, denoise)
    if problem is not None:
        raise ValueError(problem)
    full = denoise > 0.9999
    total = steps if full else int(steps / denoise)
    discard = sampler_name in DISCARD_PENULTIMATE_SIGMA_SAMPLERS
    sigmas = calculate_sigmas(model.sampling, scheduler, total + 1 if discard else total)
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas if full else sigmas[-(steps + 1) :]


def effective_sigmas(
    model: DiffusionModel,
    scheduler: str,
    sampler_name: str,
    steps: int,
    denoise: float = 1.0,
    start_step: int | None = None,
    last_step: int | None = None,
    force_full_denoise: bool = False,
) -> Tensor:
    """The sigmas a run actually walks: the schedule cut by denoise and KSamplerAdvanced's step range.
    Fewer than two means nothing to do: the latent comes back as it is."""
    sigmas = schedule(model, scheduler, sampler_name, steps, denoise)
    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[: last_step + 1]
        if force_full_denoise:
            sigmas = sigmas.clone()
            sigmas[-1] = 0.0
    if start_step is not None and start_step > 0:
        sigmas = sigmas[start_step:] if start_step < len(sigmas) - 1 else sigmas[:0]
    return sigmas


def sample(
    model: DiffusionModel,
    latent_image: Tensor,
    *,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: Conditioning,
    negative: Conditioning,
    denoise: float = 1.0,
    add_noise: bool = True,
    start_step: int | None = None,
    last_step: int | None = None,
    force_full_denoise: bool = False,
    noise_mask: Tensor | None = None,
    batch_index: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    callback: StepCallback | None = None,
) -> Tensor:
    """Denoise ``latent_image`` (in the model's latent space). Returns a float32 latent on ``device``.
    ``callback(step, total, x, denoised)`` runs after every step."""
    sigmas = effective_sigmas(
        model, scheduler, sampler_name, steps, denoise, start_step, last_step, force_full_denoise
    )
    latent = latent_image.to(device, torch.float32)
    if len(sigmas) < 2:
        return latent
    if add_noise:
        noise = prepare_noise(latent_image, seed, batch_index).to(device)
    else:
        noise = torch.zeros_like(latent)
    return sample_sigmas(
        model,
        latent,
        noise,
        sigmas,
        lambda inputs: CFGDenoiser(model, positive, negative, cfg, inputs=inputs),
        sampler_name,
        seed=seed,
        noise_mask=noise_mask,
        device=device,
        callback=callback,
    )


def sample_sigmas(
    model: DiffusionModel,
    latent_image: Tensor,
    noise: Tensor,
    sigmas: Tensor,
    make_denoiser: Callable[[SamplingInputs], Callable[..., Tensor]],
    sampler: str | Callable[..., Tensor],
    *,
    seed: int,
    noise_mask: Tensor | None = None,
    device: str | torch.device = "cpu",
    callback: StepCallback | None = None,
) -> Tensor:
    """The step loop every sampling path shares (KSampler, SamplerCustom, SamplerCustomAdvanced): walk
    ``sigmas`` from ``latent_image`` (model space) noised with ``noise`` (unit variance, the latent's
    shape), denoising with what ``make_denoiser`` builds for the run and stepping with ``sampler`` (a name
    of ``SAMPLER_NAMES``, or a callable ``sampler(denoiser, x, sigmas, callback=..., seed=...)`` with a
    ``name``, as custom sampling's SAMPLER values are).

    As in ComfyUI: no sigmas return the latent as it is; one sigma returns the noised latent without a
    model call. Returns a float32 latent on ``device``."""
    latent = latent_image.to(device, torch.float32)
    if len(sigmas) == 0:
        return latent
    noise = noise.to(device, torch.float32)
    ms = model.sampling
    name = sampler if isinstance(sampler, str) else getattr(sampler, "name", None)
    if isinstance(sampler, str):
        get_sampler(sampler)  # an unknown name fails before any work

    mask = _latent_mask(noise_mask, latent).to(device) if noise_mask is not None else None
    # the seed conditioning noise derives from (an unCLIP image's): a batch of jobs has its first job's, and
    # models whose wrappers draw such noise are not batched (engine/sampling/batch.py)
    run_seed = seed.parts[0][0] if isinstance(seed, SeedBatch) else int(seed)
    inputs = SamplingInputs(latent_image=latent, denoise_mask=mask, sigmas=sigmas, seed=run_seed)
    denoiser = make_denoiser(inputs)
    step_mask = [mask]  # the mask of the latest step: where it is 0 the result is the input latent
    if mask is not None:
        inner = denoiser
        mask_fn = getattr(model, "denoise_mask_function", None)
        # ComfyUI's "ddim" (euler with random inpaint noise) re-noises the kept region with a fresh draw
        # seeded seed + 1 instead of the run's initial noise
        keep_noise = noise
        if name == "ddim":
            generator = torch.Generator(device="cpu").manual_seed((int(seed) + 1) & 0xFFFFFFFFFFFFFFFF)
            keep_noise = torch.randn(latent.shape, generator=generator, dtype=torch.float32).to(device)

        def denoiser(xx: Tensor, sigma: Tensor, **kw: Any) -> Tensor:  # keep unmasked regions as they were
            assert mask is not None
            m = mask if mask_fn is None else mask_fn(DenoiseMaskArgs(sigma, mask, sigmas, ms)).to(xx)
            step_mask[0] = m
            s = sigma.reshape(-1, 1, 1, 1).to(xx.device)
            keep = latent + keep_noise * s
            xx = xx * m + keep * (1 - m)
            return inner(xx, sigma, **kw) * m + latent * (1 - m)

    total = len(sigmas) - 1

    def on_step(info: dict[str, Any]) -> None:
        if callback is not None:
            callback(int(info["i"]) + 1, total, info["x"], info["denoised"])

    out = run_sampler(denoiser, ms, sampler, sigmas, noise=noise, latent=latent, seed=seed, callback=on_step)
    last = step_mask[0]
    if last is not None:  # each step already blended; only untouched cells are pinned to the input exactly
        out = torch.where(last == 0, latent, out)
    return out


def run_sampler(
    denoiser: Callable[..., Tensor],
    sampling: ModelSampling,
    sampler: str | Callable[..., Tensor],
    sigmas: Tensor,
    *,
    noise: Tensor,
    latent: Tensor,
    seed: int,
    callback: Callback | None = None,
) -> Tensor:
    """One sampler run as ComfyUI's KSAMPLER does it: the start ``latent + sigma_0 * noise``
    (``sqrt(1 + sigma_0^2)`` at full denoise), the sampler (a name, or a callable with a ``name``; its own
    noise seeded with ``seed``), and the model's inverse noise scaling. One sigma: no step, the noised
    start comes back."""
    sigma_max = float(sigmas[0])
    max_denoise = math.isclose(sigma_max, sampling.sigma_max, rel_tol=1e-5) or sigma_max > sampling.sigma_max
    x = sampling.noise_scaling(sigma_max, noise, latent, max_denoise=max_denoise)
    if len(sigmas) < 2:
        return sampling.inverse_noise_scaling(sigmas[-1], x)
    name = sampler if isinstance(sampler, str) else getattr(sampler, "name", None)
    fn = get_sampler(sampler) if isinstance(sampler, str) else sampler
    options: dict[str, Any] = {}
    if name in MODEL_SAMPLING_SAMPLERS:
        options["model_sampling"] = sampling
    out = fn(denoiser, x, sigmas, callback=callback, seed=seed, **options)
    return sampling.inverse_noise_scaling(sigmas[-1], out)


def _latent_mask(mask: Tensor, latent: Tensor) -> Tensor:
    """A MASK [B,H,W] or [B,1,h,w] resized to the latent's cells, broadcast over its batch and channels."""
    m = mask.float()
    if m.dim() == 2:
        m = m[None, None]
    elif m.dim() == 3:
        m = m[:, None]
    m = torch.nn.functional.interpolate(m, size=latent.shape[-2:], mode="bilinear")
    if m.shape[0] != latent.shape[0]:
        m = m.repeat(latent.shape[0] // m.shape[0] + 1, 1, 1, 1)[: latent.shape[0]]
    return m.clamp(0, 1)
