"""KSampler and KSamplerAdvanced: denoise latents with a model, guided by conditioning."""

from __future__ import annotations

import io
import time
from typing import Any

import torch

from atelier.engine.models.handles import ModelHandle
from atelier.engine.node import Choice, Context, Float, Int, Node, Output, Socket
from atelier.engine.sampling import SAMPLER_NAMES, SCHEDULER_NAMES
from atelier.engine.sampling.ksampler import effective_sigmas, sample

# Approximate linear maps from the 4 latent channels to RGB, for cheap previews (published fits).
LATENT_RGB = {
    "sd15": [[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]],
    "sdxl": [
        [0.3920, 0.4054, 0.4549],
        [-0.2634, -0.0196, 0.0653],
        [0.0568, 0.1687, -0.0755],
        [-0.3112, -0.2359, -0.2076],
    ],
}
PREVIEW_MAX_SIDE = 512
PREVIEW_INTERVAL_S = 0.25


def latent_preview(latent: torch.Tensor, family: str) -> tuple[bytes, int, int]:
    """JPEG bytes of the first latent of a batch through the latent-to-RGB map."""
    from PIL import Image

    factors = torch.tensor(LATENT_RGB.get(family, LATENT_RGB["sd15"]), dtype=torch.float32)
    z = latent[0, :4].detach().float().cpu()
    rgb = torch.einsum("chw,cr->hwr", z, factors)
    rgb = ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    im = Image.fromarray(rgb)
    im = im.resize((im.width * 8, im.height * 8), Image.BILINEAR)
    im.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=80)
    return buf.getvalue(), im.width, im.height


def run_sampler(
    ctx: Context,
    model: ModelHandle,
    latent: dict[str, Any],
    positive: list,
    negative: list,
    **kw: Any,
) -> dict[str, Any]:
    last_preview = [0.0]

    def on_step(step: int, total: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
        ctx.progress(step, total)
        now = time.monotonic()
        if ctx._emit is not None and (now - last_preview[0] >= PREVIEW_INTERVAL_S or step == total):
            last_preview[0] = now
            data, w, h = latent_preview(denoised, model.family)
            ctx.preview(data, format="JPEG", width=w, height=h)

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
            device=model.device,
            callback=on_step,
            **kw,
        )
    result = {k: v for k, v in latent.items()}
    result["samples"] = model.process_out(out).cpu()
    return result


class KSampler(Node):
    """Denoise a latent: the sampler's step loop, guided by positive and negative conditioning."""

    display_name = "KSampler"
    category = "sampling"
    inputs = (
        Socket("model", "MODEL"),
        Int("seed", 0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
        Int("steps", 20, min=1, max=10000),
        Float("cfg", 8.0, min=0.0, max=100.0, step=0.1),
        Choice("sampler_name", SAMPLER_NAMES),
        Choice("scheduler", SCHEDULER_NAMES),
        Socket("positive", "CONDITIONING"),
        Socket("negative", "CONDITIONING"),
        Socket("latent_image", "LATENT"),
        Float("denoise", 1.0, min=0.0, max=1.0, step=0.01),
    )
    outputs = (Output("LATENT"),)

    def run(
        self,
        ctx: Context,
        model: ModelHandle,
        seed: int,
        steps: int,
        cfg: float,
        sampler_name: str,
        scheduler: str,
        positive: list,
        negative: list,
        latent_image: dict,
        denoise: float,
    ) -> dict:
        return run_sampler(
            ctx,
            model,
            latent_image,
            positive,
            negative,
            seed=seed,
            steps=steps,
            cfg=cfg,
            sampler_name=sampler_name,
            scheduler=scheduler,
            denoise=denoise,
        )


class KSamplerAdvanced(Node):
    """KSampler with control over noise and the range of steps (for multi-stage sampling)."""

    display_name = "KSampler (Advanced)"
    category = "sampling"
    inputs = (
        Socket("model", "MODEL"),
        Choice("add_noise", ["enable", "disable"]),
        Int("noise_seed", 0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
        Int("steps", 20, min=1, max=10000),
        Float("cfg", 8.0, min=0.0, max=100.0, step=0.1),
        Choice("sampler_name", SAMPLER_NAMES),
        Choice("scheduler", SCHEDULER_NAMES),
        Socket("positive", "CONDITIONING"),
        Socket("negative", "CONDITIONING"),
        Socket("latent_image", "LATENT"),
        Int("start_at_step", 0, min=0, max=10000),
        Int("end_at_step", 10000, min=0, max=10000),
        Choice("return_with_leftover_noise", ["disable", "enable"]),
    )
    outputs = (Output("LATENT"),)

    def run(
        self,
        ctx: Context,
        model: ModelHandle,
        add_noise: str,
        noise_seed: int,
        steps: int,
        cfg: float,
        sampler_name: str,
        scheduler: str,
        positive: list,
        negative: list,
        latent_image: dict,
        start_at_step: int,
        end_at_step: int,
        return_with_leftover_noise: str,
    ) -> dict:
        return run_sampler(
            ctx,
            model,
            latent_image,
            positive,
            negative,
            seed=noise_seed,
            steps=steps,
            cfg=cfg,
            sampler_name=sampler_name,
            scheduler=scheduler,
            add_noise=add_noise == "enable",
            start_step=start_at_step,
            last_step=end_at_step,
            force_full_denoise=return_with_leftover_noise != "enable",
        )
