"""The face detail pass: each face's crop region re-denoised at a working size and pasted back.

For every face: the crop region is scaled to its working size (``guide_size`` on the face box's shorter
side, or on the crop region's; never below the crop's own pixels; at most ``max_size`` on the longer side;
a multiple of 8), VAE-encoded, denoised at ``denoise`` through :func:`run_sampler` with the noise limited
to the face's feathered mask, decoded, scaled back and pasted through that mask. Faces of one working size
go through the VAE and the sampler as one batch (up to :data:`MAX_BATCH`; batch ``i`` is seeded
``seed + i``). Pixels outside every face's crop region are never written; inside it, only where the
feathered mask is above zero.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from atelier.engine.models.handles import ModelHandle, VaeHandle
from atelier.engine.node import Context
from atelier.engine.sampling.conditioning import Conditioning
from atelier.engine.sampling.runner import run_sampler

from .compose import crop, paste_, resize_image
from .detections import FaceDetection, Faces
from .masks import border_sides, feather, radius_for, resize_mask

GuideFor = Literal["bbox", "crop_region"]
MULTIPLE = 8
#: at most this many faces of one working size go through the VAE and the sampler together (a crowd of
#: faces at 1024 px would not fit in memory as one batch)
MAX_BATCH = 8


@dataclass(frozen=True)
class DetailSettings:
    """How faces are re-denoised (the sampler's own options travel in ``sampler``)."""

    guide_size: int = 512
    guide_size_for: GuideFor = "bbox"
    max_size: int = 1024
    feather: int = 5
    noise_mask: bool = True
    seed: int = 0
    steps: int = 20
    cfg: float = 8.0
    sampler_name: str = "euler"
    scheduler: str = "normal"
    denoise: float = 0.5


def working_size(
    face: FaceDetection, guide_size: int, guide_size_for: GuideFor, max_size: int
) -> tuple[int, int]:
    """(width, height) a face's crop region is denoised at: scaled so that the face box's shorter side
    (``"bbox"``) or the crop region's (``"crop_region"``) becomes ``guide_size``, never scaled down below
    the crop's own pixels except to bring its longer side to ``max_size``; multiples of 8."""
    cw, ch = face.crop_size
    bw, bh = face.box_size
    ref = min(bw, bh) if guide_size_for == "bbox" else min(cw, ch)
    scale = max(1.0, guide_size / max(ref, 1e-6))
    scale = min(scale, max_size / max(cw, ch))
    cap = max(MULTIPLE, max_size // MULTIPLE * MULTIPLE)

    def side(v: int) -> int:
        return max(MULTIPLE, min(cap, round(v * scale / MULTIPLE) * MULTIPLE))

    return side(cw), side(ch)


def group_by_size(
    faces: Faces, guide_size: int, guide_size_for: GuideFor, max_size: int
) -> list[tuple[tuple[int, int], list[FaceDetection]]]:
    """The faces grouped by working size, groups in the order their first face comes."""
    groups: dict[tuple[int, int], list[FaceDetection]] = {}
    for d in faces:
        groups.setdefault(working_size(d, guide_size, guide_size_for, max_size), []).append(d)
    return list(groups.items())


def paste_mask(face: FaceDetection, faces: Faces, feather_px: int) -> Tensor:
    """The mask a face is pasted (and, with ``noise_mask``, denoised) through: its mask feathered by up to
    ``feather_px`` pixels, not fading where the crop region meets the image border."""
    r = radius_for(face.crop_size, feather_px)
    return feather(face.mask, r, replicate=border_sides(face.crop, faces.width, faces.height))


class FaceProgress:
    """Progress over all faces in whole sampler steps: each face counts the sampler's steps, so a batch of
    ``n`` faces advances ``n`` per step, and the total is faces x steps (known from the first step)."""

    def __init__(self, ctx: Context, total_faces: int) -> None:
        self.ctx = ctx
        self.total = total_faces
        self.steps = 1

    def for_batch(self, done_faces: int, batch: int) -> Context:
        """A context whose progress events report this batch's steps as part of the whole."""
        emit = self.ctx.emit
        if emit is None:
            return self.ctx

        def scaled(kind: str, data: dict[str, Any]) -> None:
            if kind == "progress" and data.get("max"):
                self.steps = int(data["max"])
                data = {
                    "value": done_faces * self.steps + batch * int(data["value"]),
                    "max": self.total * self.steps,
                }
            emit(kind, data)

        return dataclasses.replace(self.ctx, emit=scaled)

    def done(self, faces: int) -> None:
        """``faces`` are pasted back (honours an interrupt)."""
        self.ctx.progress(faces * self.steps, self.total * self.steps)


def detail_faces(
    ctx: Context,
    image: Tensor,
    faces: Faces,
    model: ModelHandle,
    vae: VaeHandle,
    positive: Conditioning,
    negative: Conditioning,
    settings: DetailSettings,
) -> Tensor:
    """``image`` [B, H, W, C] with every face of ``faces`` re-denoised and pasted back (a new tensor)."""
    faces.check_image(image)
    out = image.clone()
    progress = FaceProgress(ctx, len(faces))
    done = 0
    groups = group_by_size(faces, settings.guide_size, settings.guide_size_for, settings.max_size)
    batches = [
        (size, group[i : i + MAX_BATCH]) for size, group in groups for i in range(0, len(group), MAX_BATCH)
    ]
    for g, ((w, h), group) in enumerate(batches):
        ctx.check_interrupt()
        crops = torch.cat([resize_image(crop(image, d.image_index, d.crop), w, h) for d in group])
        masks = [paste_mask(d, faces, settings.feather) for d in group]
        latent: dict[str, Any] = {"samples": vae.encode(crops)}
        if settings.noise_mask:
            latent["noise_mask"] = torch.stack([resize_mask(m, w, h) for m in masks])[:, None]
        sampled = run_sampler(
            progress.for_batch(done, len(group)),
            model,
            latent,
            positive,
            negative,
            seed=settings.seed + g,
            steps=settings.steps,
            cfg=settings.cfg,
            sampler_name=settings.sampler_name,
            scheduler=settings.scheduler,
            denoise=settings.denoise,
        )
        decoded = vae.decode(sampled["samples"]).to(image.device)
        for k, (d, m) in enumerate(zip(group, masks, strict=True)):
            cw, ch = d.crop_size
            patch = resize_image(decoded[k : k + 1], cw, ch)
            paste_(out, d.image_index, d.crop, patch, m.to(image.device))
        done += len(group)
        progress.done(done)
    return out
