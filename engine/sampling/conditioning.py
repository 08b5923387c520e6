"""CONDITIONING: a list of typed entries, each one text embedding and how it applies.

An entry carries its embedding, SDXL's pooled output and size conditioning, where it applies (an area
and/or a mask, both in latent cells) and how strongly, plus room for what later node families attach:
control hints (ControlNet/T2I residuals), image prompts (IP-Adapter) and the picture an inpainting
model concatenates to its input (:class:`ConcatImage`, set by InpaintModelConditioning). Entries are
immutable: nodes derive new ones with :meth:`CondEntry.replace`, so a conditioning shared by two
branches is never changed under either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from torch import Tensor


@dataclass(frozen=True)
class SizeCond:
    """SDXL's size conditioning (pixels): original size, crop offset, target size; the refiner's takes
    an aesthetic score instead of the target size."""

    width: int
    height: int
    crop_w: int = 0
    crop_h: int = 0
    target_width: int | None = None
    target_height: int | None = None
    aesthetic_score: float | None = None

    def time_ids(self, latent_h: int, latent_w: int) -> list[float]:
        return [
            float(self.height),
            float(self.width),
            float(self.crop_h),
            float(self.crop_w),
            float(self.target_height if self.target_height is not None else latent_h * 8),
            float(self.target_width if self.target_width is not None else latent_w * 8),
        ]


@dataclass(frozen=True)
class ConcatImage:
    """What an inpainting model (9-channel UNet) concatenates to its input, carried by the conditioning
    (ComfyUI's ``concat_latent_image`` and ``concat_mask``): the raw VAE latent of the picture with the
    masked part greyed out, [B, C, h, w], and the mask, [B, 1, H, W] at any resolution (1 = repaint).
    Without a mask the latent's noise mask is used; see ``engine/models/inpaint.py``."""

    latent: Tensor
    mask: Tensor | None = None


@dataclass(frozen=True)
class CondEntry:
    """One conditioning entry. ``area`` is (height, width, y, x) in latent cells; ``mask`` [h, w] or
    [B, h, w] weighs the entry's prediction per cell; ``strength`` scales it overall."""

    embedding: Tensor  # [1 or B, tokens, channels]
    pooled: Tensor | None = None  # [1 or B, channels] (SDXL)
    size: SizeCond | None = None  # SDXL size conditioning
    area: tuple[int, int, int, int] | None = None
    mask: Tensor | None = None
    strength: float = 1.0
    #: control hints applied to the model call (ControlNet and friends), in order
    control: tuple[Any, ...] = ()
    #: image prompts (IP-Adapter and friends)
    image_prompts: tuple[Any, ...] = ()
    #: the masked picture and mask an inpainting model concatenates to its input
    concat: ConcatImage | None = None
    #: anything else a plugin needs to carry with the entry, read-only
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def replace(self, **changes: Any) -> CondEntry:
        return replace(self, **changes)

    def with_extra(self, **values: Any) -> CondEntry:
        return replace(self, extra=MappingProxyType({**self.extra, **values}))

    def time_ids(self, latent_h: int, latent_w: int) -> list[float]:
        size = self.size or SizeCond(width=latent_w * 8, height=latent_h * 8)
        return size.time_ids(latent_h, latent_w)


Conditioning = list[CondEntry]


def conditioning(embedding: Tensor, pooled: Tensor | None = None, **fields: Any) -> Conditioning:
    """A one-entry conditioning."""
    return [CondEntry(embedding, pooled, **fields)]
