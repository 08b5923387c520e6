"""Re-denoising an upscaled image tile by tile (what Ultimate SD Upscale does), through :func:`run_sampler`.

Each job of a plan (``engine/imaging/redraw_plan.py``) crops its window from the canvas, encodes it with
the VAE, samples it with the model and the conditioning (cut to the window: area and mask entries) at the
job's denoise, decodes it and pastes it back through the job's feathered mask. Jobs run in order on the
canvas as it changes, so later tiles see their neighbours' new pixels in their padding. Progress counts
jobs (a job's sampler steps are fractions of one) and every step honours an interrupt.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch.nn.functional as F
from torch import Tensor

from atelier.engine.imaging.paste_masks import render
from atelier.engine.imaging.redraw_plan import RedrawJob
from atelier.engine.imaging.tiles import Rect
from atelier.engine.node import Context

from .conditioning import CondEntry, Conditioning
from .ksampler import effective_sigmas
from .runner import run_sampler

if TYPE_CHECKING:
    from atelier.engine.models.handles import ModelHandle, VaeHandle


@dataclass(frozen=True)
class SamplerSettings:
    seed: int
    steps: int
    cfg: float
    sampler_name: str
    scheduler: str


def does_something(model: ModelHandle, s: SamplerSettings, denoise: float) -> bool:
    """Whether sampling at ``denoise`` changes anything (denoise 0 walks no sigmas: the job is skipped, so
    its window does not even go through the VAE)."""
    return denoise > 0 and len(effective_sigmas(model, s.scheduler, s.sampler_name, s.steps, denoise)) >= 2


def crop_conditioning(
    cond: Conditioning, window: Rect, canvas: tuple[int, int], source: tuple[int, int], cell: int = 8
) -> Conditioning:
    """``cond`` for a window of the canvas (``canvas`` and ``source`` are (height, width) in pixels).

    Areas are in latent cells of the source image (the picture before upscaling): they are scaled to the
    canvas, cut to the window and moved into its frame; an entry whose area misses the window is left out
    (if that leaves none, the entries apply to the whole window instead). Masks cover the whole picture:
    the window's part is cut out. Everything else passes through unchanged."""
    ch, cw = canvas
    sy, sx = ch / source[0], cw / source[1]
    kept: list[CondEntry] = []
    dropped: list[CondEntry] = []
    for e in cond:
        changes: dict[str, Any] = {}
        if e.area is not None:
            ah, aw, ay, ax = e.area
            y0, x0 = ay * cell * sy, ax * cell * sx
            y1, x1 = (ay + ah) * cell * sy, (ax + aw) * cell * sx
            y0, x0 = max(y0, window.y0), max(x0, window.x0)
            y1, x1 = min(y1, window.y1), min(x1, window.x1)
            if y1 - y0 < cell or x1 - x0 < cell:
                dropped.append(e.replace(area=None))
                continue
            top, left = int(y0 - window.y0) // cell, int(x0 - window.x0) // cell
            bottom, right = -(-int(y1 - window.y0) // cell), -(-int(x1 - window.x0) // cell)
            changes["area"] = (bottom - top, right - left, top, left)
        if e.mask is not None:
            changes["mask"] = _crop_mask(e.mask, window, canvas, cell)
        kept.append(e.replace(**changes) if changes else e)
    return kept or dropped


def _crop_mask(mask: Tensor, window: Rect, canvas: tuple[int, int], cell: int) -> Tensor:
    m = mask.float()
    squeeze = m.dim() == 2
    m = m[None, None] if squeeze else m[:, None]
    m = F.interpolate(m, size=(canvas[0] // cell, canvas[1] // cell), mode="bilinear")
    m = m[:, :, window.y0 // cell : window.y1 // cell, window.x0 // cell : window.x1 // cell]
    return m[0, 0] if squeeze else m[:, 0]


def _job_context(ctx: Context, done: int, total: int) -> Context:
    """``ctx`` for one job's sampler: its step progress becomes a fraction of the job, out of all jobs."""
    emit = ctx.emit
    if emit is None:
        return ctx

    def job_emit(kind: str, data: dict[str, Any]) -> None:
        if kind == "progress" and data.get("max"):
            data = {"value": done + float(data["value"]) / float(data["max"]), "max": total}
        emit(kind, data)

    return dataclasses.replace(ctx, emit=job_emit)


def redraw(
    ctx: Context,
    canvas: Tensor,
    jobs: Sequence[RedrawJob],
    *,
    model: ModelHandle,
    vae: VaeHandle,
    positive: Conditioning,
    negative: Conditioning,
    sampler: SamplerSettings,
    source_size: tuple[int, int],
    tiled_decode: bool = False,
) -> Tensor:
    """Run ``jobs`` on a copy of ``canvas`` (IMAGE ``[B, H, W, C]``) and return it (on the canvas's device)."""
    image = canvas[..., :3].float().clone()
    _, h, w, _ = image.shape
    active = [j for j in jobs if does_something(model, sampler, j.denoise)]
    total = len(active)
    for n, job in enumerate(active):
        ctx.check_interrupt()
        win = job.window
        crop = image[:, win.y0 : win.y1, win.x0 : win.x1]
        latent = {"samples": vae.encode(crop)}
        pos = crop_conditioning(positive, win, (h, w), source_size)
        neg = crop_conditioning(negative, win, (h, w), source_size)
        sampled = run_sampler(
            _job_context(ctx, n, total),
            model,
            latent,
            pos,
            neg,
            seed=sampler.seed,
            steps=sampler.steps,
            cfg=sampler.cfg,
            sampler_name=sampler.sampler_name,
            scheduler=sampler.scheduler,
            denoise=job.denoise,
        )
        samples = sampled["samples"]
        if tiled_decode:
            f = vae.downscale
            out = vae.decode_tiled(samples, tile=max(1, 512 // f), overlap=64 // f)
        else:
            out = vae.decode(samples)
        out = out.to(image.device, image.dtype)
        if tuple(out.shape[1:3]) != (win.height, win.width):
            raise ValueError(
                f"the VAE decoded a {win.width}x{win.height} window to {out.shape[2]}x{out.shape[1]} pixels"
            )
        m = render(job.mask, win, device=image.device)[None, :, :, None]
        image[:, win.y0 : win.y1, win.x0 : win.x1] = crop * (1.0 - m) + out * m
        ctx.progress(n + 1, total)
    return image
