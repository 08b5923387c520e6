"""Upscaling with models: load an upscale model, run it on images, and the tiled diffusion upscale.

UpscaleModelLoader and ImageUpscaleWithModel are ComfyUI's nodes (same names and inputs); UltimateSDUpscale
has the inputs of the ComfyUI_UltimateSDUpscale custom node (its ``upscale_model`` is optional here: without
one the image is resized with Lanczos).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from atelier.engine import folders as _F
from atelier.engine.hashing import file_fingerprint
from atelier.engine.imaging.redraw_plan import REDRAW_MODES, SEAM_FIX_MODES, RedrawSettings, plan_jobs
from atelier.engine.imaging.resample import lanczos_resize_image
from atelier.engine.imaging.tiles import TileCallback
from atelier.engine.limits import Estimate, Extent
from atelier.engine.models import estimates as X
from atelier.engine.models.handles import ModelHandle, VaeHandle
from atelier.engine.models.sockets import CONDITIONING, IMAGE, MODEL, UPSCALE_MODEL, VAE
from atelier.engine.models.upscale import UpscaleModelHandle, upscale_image, upscale_model_loader
from atelier.engine.node import Boolean, Choice, Context, Float, Int, Node, Output, Socket, model_files
from atelier.engine.sampling.conditioning import Conditioning
from atelier.engine.sampling.runner import SAMPLER_SETTINGS, SEED
from atelier.engine.sampling.tiled_redraw import SamplerSettings, redraw

MAX_RESOLUTION = 8192


class UpscaleModelLoader(Node):
    """Load an upscale model (ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT, Compact, ... via spandrel) from
    models/upscale_models: .safetensors, or .pth read with weights_only."""

    display_name = "Load Upscale Model"
    category = "loaders"
    inputs = (Choice("model_name", model_files("upscale_models")),)
    outputs = (Output(UPSCALE_MODEL),)

    @classmethod
    def fingerprint(cls, ctx: Context, model_name: str) -> str:
        return file_fingerprint(ctx.files.find_model("upscale_models", model_name))

    @classmethod
    def provenance(cls, ctx: Context, model_name: str) -> dict[str, Any]:
        return {"sha256": ctx.files.sha256(ctx.files.find_model("upscale_models", model_name))}

    @classmethod
    def estimate(cls, files: _F.Folders, upstream: Mapping[str, Extent], model_name: str) -> Estimate | None:
        scale = X.upscale_model_scale(model_name)
        return Estimate(outputs={0: Extent(scale, scale, 1, 0)})

    def run(self, ctx: Context, model_name: str) -> UpscaleModelHandle:
        path = ctx.files.find_model("upscale_models", model_name)
        return ctx.models.load(path, upscale_model_loader)


def _tile_progress(ctx: Context) -> TileCallback:
    """Tiles done as the node's progress (which also stops the node when the job is interrupted)."""

    def report(done: int, total: int) -> None:
        ctx.progress(done, total)

    return report


def _interrupt_only(ctx: Context) -> TileCallback:
    """Stop between tiles when the job is interrupted, without reporting (a step before the real work)."""

    def check(done: int, total: int) -> None:
        ctx.check_interrupt()

    return check


class ImageUpscaleWithModel(Node):
    """Upscale images with an upscale model, in overlapping tiles (smaller ones if memory runs out)."""

    display_name = "Upscale Image (using Model)"
    category = "image/upscaling"
    inputs = (Socket("upscale_model", UPSCALE_MODEL), Socket("image", IMAGE))
    outputs = (Output(IMAGE),)

    @classmethod
    def estimate(
        cls,
        files: _F.Folders,
        upstream: Mapping[str, Extent],
    ) -> Estimate | None:
        image, model = upstream.get("image"), upstream.get("upscale_model")
        if image is None:
            return None
        scale = model.width if model is not None else 4
        w, h = image.width * scale, image.height * scale
        return Estimate(
            X.picture(w, h, image.batch, "image", "image"), {0: X.image_extent(w, h, image.batch)}
        )

    def run(self, ctx: Context, upscale_model: UpscaleModelHandle, image: torch.Tensor) -> torch.Tensor:
        out = upscale_image(upscale_model, image, on_tile=_tile_progress(ctx))
        return out.to(ctx.device)


def upscale_to(
    ctx: Context, image: torch.Tensor, width: int, height: int, upscale_model: UpscaleModelHandle | None
) -> torch.Tensor:
    """``image`` at ``width`` x ``height``: through the model as many times as it takes to reach the size
    (then Lanczos to the exact size), or Lanczos alone without a model."""
    _, h, w, _ = image.shape
    x = image
    if upscale_model is not None and upscale_model.scale > 1 and (width > w or height > h):
        need = max(width / w, height / h)
        passes = max(1, math.ceil(math.log(need, upscale_model.scale) - 1e-9))
        for _ in range(passes):
            x = upscale_image(upscale_model, x, on_tile=_interrupt_only(ctx)).to(ctx.device)
    return lanczos_resize_image(x.to(ctx.device), width, height)


class UltimateSDUpscale(Node):
    """Upscale (with a model, or Lanczos without one), then re-denoise the result tile by tile with the
    model and prompts, pasting tiles back through feathered masks; optionally re-denoise the seams."""

    display_name = "Ultimate SD Upscale"
    category = "image/upscaling"
    inputs = (
        Socket("image", IMAGE),
        Socket("model", MODEL),
        Socket("positive", CONDITIONING),
        Socket("negative", CONDITIONING),
        Socket("vae", VAE),
        Float("upscale_by", 2.0, min=0.05, max=4.0, step=0.05),
        SEED,
        *SAMPLER_SETTINGS,
        Float("denoise", 0.2, min=0.0, max=1.0, step=0.01),
        Socket("upscale_model", UPSCALE_MODEL, optional=True, description="without one: Lanczos"),
        Choice("mode_type", REDRAW_MODES, description="tile order of the redraw; None skips it"),
        Int("tile_width", 512, min=64, max=MAX_RESOLUTION, step=8),
        Int("tile_height", 512, min=64, max=MAX_RESOLUTION, step=8),
        Int("mask_blur", 8, min=0, max=64, description="feathering of the pasted tiles (pixels)"),
        Int("tile_padding", 32, min=0, max=MAX_RESOLUTION, step=8, description="context around each tile"),
        Choice("seam_fix_mode", SEAM_FIX_MODES),
        Float("seam_fix_denoise", 1.0, min=0.0, max=1.0, step=0.01),
        Int("seam_fix_width", 64, min=0, max=MAX_RESOLUTION, step=8),
        Int("seam_fix_mask_blur", 8, min=0, max=64),
        Int("seam_fix_padding", 16, min=0, max=MAX_RESOLUTION, step=8),
        Boolean("force_uniform_tiles", True, description="every tile the same size (tile plus padding)"),
        Boolean("tiled_decode", False, description="decode each tile in VAE tiles (less memory)"),
    )
    outputs = (Output(IMAGE),)

    @classmethod
    def estimate(
        cls,
        files: _F.Folders,
        upstream: Mapping[str, Extent],
        upscale_by: float | None = None,
        steps: int | None = None,
        tile_width: int = 512,
        tile_height: int = 512,
        tile_padding: int = 32,
        **_: Any,
    ) -> Estimate | None:
        image = upstream.get("image")
        measures = X.steps_measures(steps)
        if image is None or upscale_by is None:  # unknown until the job runs
            return Estimate(measures)
        w, h = max(1, round(image.width * upscale_by)), max(1, round(image.height * upscale_by))
        measures += X.picture(w, h, image.batch, "upscale_by", "image")
        tile = X.latent_extent(tile_width + 2 * tile_padding, tile_height + 2 * tile_padding, image.batch)
        return Estimate(
            measures,
            {0: X.image_extent(w, h, image.batch)},
            work_bytes=X.sampler_work(tile) + X.vae_work(tile.width * 8, tile.height * 8, image.batch),
        )

    def run(
        self,
        ctx: Context,
        *,
        image: torch.Tensor,
        model: ModelHandle,
        positive: Conditioning,
        negative: Conditioning,
        vae: VaeHandle,
        upscale_by: float,
        seed: int,
        steps: int,
        cfg: float,
        sampler_name: str,
        scheduler: str,
        denoise: float,
        upscale_model: UpscaleModelHandle | None = None,
        mode_type: str,
        tile_width: int,
        tile_height: int,
        mask_blur: int,
        tile_padding: int,
        seam_fix_mode: str,
        seam_fix_denoise: float,
        seam_fix_width: int,
        seam_fix_mask_blur: int,
        seam_fix_padding: int,
        force_uniform_tiles: bool,
        tiled_decode: bool,
    ) -> torch.Tensor:
        _, h, w, _ = image.shape
        cell = vae.downscale
        width, height = math.ceil(w * upscale_by / cell) * cell, math.ceil(h * upscale_by / cell) * cell
        canvas = upscale_to(ctx, image, width, height, upscale_model)
        settings = RedrawSettings(
            tile_width=tile_width,
            tile_height=tile_height,
            padding=tile_padding,
            mask_blur=mask_blur,
            mode=mode_type,  # type: ignore[arg-type]
            denoise=denoise,
            seam_fix_mode=seam_fix_mode,  # type: ignore[arg-type]
            seam_fix_denoise=seam_fix_denoise,
            seam_fix_width=seam_fix_width,
            seam_fix_padding=seam_fix_padding,
            seam_fix_mask_blur=seam_fix_mask_blur,
            uniform=force_uniform_tiles,
            multiple=cell,
        )
        jobs = plan_jobs(width, height, settings)
        sampler = SamplerSettings(seed, steps, cfg, sampler_name, scheduler)
        return redraw(
            ctx,
            canvas,
            jobs,
            model=model,
            vae=vae,
            positive=positive,
            negative=negative,
            sampler=sampler,
            source_size=(h, w),
            tiled_decode=tiled_decode,
        )
