"""Running the sampler for a node: the step loop with progress, throttled latent previews and interrupt.

Any node that samples (KSampler, KSamplerAdvanced, a detailer, a tiled upscaler) calls
:func:`run_sampler` with its context; nothing here is specific to one node.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from atelier.engine.node import Choice, Context, Float, InputSpec, Int

from .conditioning import Conditioning
from .ksampler import StepCallback, effective_sigmas, sample, sample_sigmas
from .preview import latent_preview
from .samplers import SAMPLER_NAMES
from .schedulers import SCHEDULER_NAMES

if TYPE_CHECKING:
    from atelier.engine.models.handles import ModelHandle

    from .custom import Guider, Noise, Sampler

PREVIEW_INTERVAL_S = 0.25

#: The sampler settings every sampling node takes, declared once (ComfyUI's names, limits and order):
#: ``inputs = (Socket("model", MODEL), SEED, *SAMPLER_SETTINGS, ...)``; KSamplerAdvanced names its seed
#: ``noise_seed``.
SEED: InputSpec = Int("seed", 0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True)
SAMPLER_SETTINGS: tuple[InputSpec, ...] = (
    Int("steps", 20, min=1, max=10000),
    Float("cfg", 8.0, min=0.0, max=100.0, step=0.1),
    Choice("sampler_name", SAMPLER_NAMES),
    Choice("scheduler", SCHEDULER_NAMES),
)


def run_sampler(
    ctx: Context,
    model: ModelHandle,
    latent: dict[str, Any],
    positive: Conditioning,
    negative: Conditioning,
    **kw: Any,
) -> dict[str, Any]:
    """Denoise ``latent`` (a LATENT dict) with ``model``; ``kw`` are :func:`sample`'s options (seed, steps,
    cfg, sampler_name, scheduler, denoise, add_noise, start_step, last_step, force_full_denoise).
    Reports every step as progress (which honours an interrupt) and publishes a preview at most every
    quarter second. The result stays on the model's device."""
    on_step = step_reporter(ctx, model.family)
    samples = latent["samples"]
    walk = effective_sigmas(
        model,
        kw["scheduler"],
        kw["sampler_name"],
        kw["steps"],
        kw.get("denoise", 1.0),
        kw.get("start_step"),
        kw.get("last_step"),
        kw.get("force_full_denoise", False),
    )
    if len(walk) < 2:  # denoise 0, or a step range that is empty: the latent passes through untouched
        return dict(latent)
    with model.session():
        out = sample(
            model,
            model.process_in(samples.to(torch.float32)),
            positive=positive,
            negative=negative,
            noise_mask=latent.get("noise_mask"),
            batch_index=latent.get("batch_index"),
            device=model.device,
            callback=on_step,
            **kw,
        )
    result = dict(latent)
    result["samples"] = model.process_out(out)
    return result


def step_reporter(ctx: Context, family: str, x0: list[torch.Tensor] | None = None) -> StepCallback:
    """The step callback of a sampling node: progress every step (which honours an interrupt), a latent
    preview at most every quarter second (and after the last step) when anybody listens. With ``x0``,
    the latest denoised prediction is kept in it (SamplerCustom's ``denoised_output``)."""
    last_preview = [0.0]
    previews = ctx.wants_previews

    def on_step(step: int, total: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
        if x0 is not None:
            x0[:] = [denoised]
        ctx.progress(step, total)
        now = time.monotonic()
        if previews and (now - last_preview[0] >= PREVIEW_INTERVAL_S or step == total):
            last_preview[0] = now
            data, w, h = latent_preview(denoised, family)
            ctx.preview(data, format="JPEG", width=w, height=h)

    return on_step


def run_custom_sampler(
    ctx: Context,
    guider: Guider,
    sampler: Sampler,
    sigmas: torch.Tensor,
    noise: Noise,
    latent: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """SamplerCustom(Advanced): denoise ``latent`` along ``sigmas`` with ``guider``'s model, ``sampler``
    and ``noise``, through KSampler's step loop (same progress, previews and interrupt). Returns
    (output, denoised_output): the final latent and the last step's denoised prediction (the output
    again when no step ran)."""
    model = guider.model
    if not isinstance(sigmas, torch.Tensor) or sigmas.dim() != 1:
        raise ValueError(f"sigmas must be a 1-D tensor, got {getattr(sigmas, 'shape', type(sigmas))}")
    samples = latent["samples"]
    if len(sigmas) == 0:  # nothing to walk: the latent passes through untouched
        return dict(latent), dict(latent)
    x0: list[torch.Tensor] = []
    with model.session():
        out = sample_sigmas(
            model,
            model.process_in(samples.to(torch.float32)),
            noise.generate(latent),
            sigmas.to(torch.float32),
            guider.denoiser,
            sampler,
            seed=noise.seed,
            noise_mask=latent.get("noise_mask"),
            device=model.device,
            callback=step_reporter(ctx, model.family, x0),
        )
    result = dict(latent)
    result["samples"] = model.process_out(out)
    if not x0:
        return result, result
    denoised = dict(latent)
    denoised["samples"] = model.process_out(x0[0])
    return result, denoised
