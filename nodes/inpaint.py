"""Inpainting nodes: conditioning for inpainting models, Differential Diffusion, and crop-and-stitch.

InpaintModelConditioning and DifferentialDiffusion are ComfyUI's (same names, inputs and semantics).
InpaintCropAndStitch is one node doing what the ComfyUI-Inpaint-CropAndStitch pair does around a
sampler: inpaint only the mask's neighbourhood at a working resolution and paste it back through a
feathered mask, leaving every pixel outside that neighbourhood untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from atelier.engine import folders as _F
from atelier.engine.imaging import checks
from atelier.engine.imaging.crop_stitch import crop_for_inpaint, plan_crop, stitch
from atelier.engine.imaging.resize import resize_mask
from atelier.engine.limits import Estimate, Extent
from atelier.engine.models import estimates as X
from atelier.engine.models.handles import ModelHandle, VaeHandle
from atelier.engine.models.inpaint import inpaint_conditioning
from atelier.engine.models.sockets import CONDITIONING, IMAGE, LATENT, MASK, MODEL, VAE
from atelier.engine.node import Boolean, Context, Float, Int, Node, Output, Socket
from atelier.engine.sampling.conditioning import Conditioning
from atelier.engine.sampling.denoise_masks import differential_diffusion
from atelier.engine.sampling.runner import SAMPLER_SETTINGS, SEED, run_sampler


def _mask_at_picture(mask: Any, picture: torch.Tensor, node: str, other: str) -> torch.Tensor:
    """The MASK checked against its picture and resized to it (bilinear, as ComfyUI), [B or 1, H, W]."""
    m = checks.mask_for_image(mask, picture, node, "mask", other)
    return resize_mask(m.to(picture.device), picture.shape[1], picture.shape[2]).clamp(0.0, 1.0)


class InpaintModelConditioning(Node):
    """Prepare an inpainting run: the picture encoded as the latent to sample (with the mask as its noise
    mask when ``noise_mask``), and the conditioning carrying the picture with the masked part greyed out
    and the mask, which inpainting models (9-channel UNets) take as extra input. Other models ignore that
    part and inpaint through the noise mask."""

    category = "conditioning/inpaint"
    inputs = (
        Socket("positive", CONDITIONING),
        Socket("negative", CONDITIONING),
        Socket("vae", VAE),
        Socket("pixels", IMAGE),
        Socket("mask", MASK),
        Boolean(
            "noise_mask",
            True,
            description="add the mask to the latent so that sampling only changes the masked part",
        ),
    )
    outputs = (Output(CONDITIONING, "positive"), Output(CONDITIONING, "negative"), Output(LATENT, "latent"))

    @classmethod
    def estimate(cls, files: _F.Folders, upstream: Mapping[str, Extent], **_: Any) -> Estimate | None:
        image = upstream.get("pixels")
        if image is None:
            return None
        return Estimate(
            outputs={2: X.latent_extent(image.width, image.height, image.batch)},
            work_bytes=X.vae_work(image.width, image.height, image.batch),
        )

    def run(
        self,
        ctx: Context,
        positive: Conditioning,
        negative: Conditioning,
        vae: VaeHandle,
        pixels: torch.Tensor,
        mask: torch.Tensor,
        noise_mask: bool,
    ) -> tuple[Conditioning, Conditioning, dict[str, torch.Tensor]]:
        node = "InpaintModelConditioning"
        picture = checks.image(pixels, node, "pixels")
        m = _mask_at_picture(mask, picture, node, "pixels")
        return inpaint_conditioning(vae, picture, m, positive, negative, noise_mask)


class DifferentialDiffusion(Node):
    """Soft inpainting masks: each step repaints only where the mask reaches that step's threshold, so the
    edit fades into the picture along the mask's gradient. Needs a latent with a soft noise mask
    (InpaintModelConditioning, SetLatentNoiseMask). ``strength`` < 1 mixes in the soft mask itself."""

    category = "_for_testing"
    inputs = (
        Socket("model", MODEL),
        Float("strength", 1.0, min=0.0, max=1.0, step=0.0001, optional=True),
    )
    outputs = (Output(MODEL),)

    def run(self, ctx: Context, model: ModelHandle, strength: float = 1.0) -> ModelHandle:
        return model.with_denoise_mask_function(differential_diffusion(strength))


class InpaintCropAndStitch(Node):
    """Inpaint the masked part of a large picture at a working resolution: cut the mask's box, grown by
    ``blend_pixels`` and ``context_expand_pixels``, scale it so its longer side is ``working_size`` (0:
    as it is), sample it as InpaintModelConditioning + KSampler would, and paste the result back through
    the mask feathered by ``blend_pixels``. Pixels outside that box stay exactly as they were."""

    category = "inpaint"
    inputs = (
        Socket("model", MODEL),
        Socket("positive", CONDITIONING),
        Socket("negative", CONDITIONING),
        Socket("vae", VAE),
        Socket("image", IMAGE),
        Socket("mask", MASK),
        SEED,
        *SAMPLER_SETTINGS,
        Float("denoise", 1.0, min=0.0, max=1.0, step=0.01),
        Int("context_expand_pixels", 32, min=0, max=16384, description="context around the mask, pixels"),
        Int("blend_pixels", 16, min=0, max=256, description="feather of the paste-back, pixels"),
        Int("working_size", 512, min=0, max=16384, step=8, description="longer side sampled (0: native)"),
    )
    outputs = (Output(IMAGE),)

    @classmethod
    def estimate(
        cls, files: _F.Folders, upstream: Mapping[str, Extent], steps: int | None = None, **_: Any
    ) -> Estimate | None:
        image = upstream.get("image")
        return Estimate(X.steps_measures(steps), {0: image} if image is not None else {})

    def run(
        self,
        ctx: Context,
        model: ModelHandle,
        positive: Conditioning,
        negative: Conditioning,
        vae: VaeHandle,
        image: torch.Tensor,
        mask: torch.Tensor,
        seed: int,
        steps: int,
        cfg: float,
        sampler_name: str,
        scheduler: str,
        denoise: float,
        context_expand_pixels: int,
        blend_pixels: int,
        working_size: int,
    ) -> torch.Tensor:
        node = "InpaintCropAndStitch"
        picture = checks.image(image, node, "image")
        m = _mask_at_picture(mask, picture, node, "image")
        plan = plan_crop(m, context_expand_pixels, blend_pixels, working_size, int(vae.downscale))
        if plan is None:  # an empty mask: nothing to paint
            return picture.float()
        crop, crop_mask = crop_for_inpaint(picture, m, plan)
        pos, neg, latent = inpaint_conditioning(vae, crop, crop_mask, positive, negative, noise_mask=True)
        sampled = run_sampler(
            ctx,
            model,
            latent,
            pos,
            neg,
            seed=seed,
            steps=steps,
            cfg=cfg,
            sampler_name=sampler_name,
            scheduler=scheduler,
            denoise=denoise,
        )
        return stitch(picture, vae.decode(sampled["samples"]), plan)
