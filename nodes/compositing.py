"""Compositing nodes: paste images and latents through masks, pad for outpainting, crop, add alpha,
blend latents, pick and repeat latent batch items.

Node names and inputs are ComfyUI's; the math lives in ``engine/imaging`` (``compositing.py``,
``latents.py``). Positions of latents are given in pixels (multiples of 8), as in ComfyUI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from atelier.engine import folders as _F
from atelier.engine.imaging import checks
from atelier.engine.imaging import compositing as C
from atelier.engine.imaging import latents as L
from atelier.engine.limits import Estimate, Extent, Measure
from atelier.engine.models import estimates as X
from atelier.engine.models.sockets import IMAGE, LATENT, MASK
from atelier.engine.node import Boolean, Context, Float, Int, Node, Output, Socket

MAX_RESOLUTION = 16384


def _optional_mask(mask: torch.Tensor | None, node: str) -> torch.Tensor | None:
    return None if mask is None else checks.mask(mask, node, "mask")


class ImageCompositeMasked(Node):
    """Paste ``source`` into ``destination`` at (x, y), through ``mask`` where given (resized to the
    source; 1 = source), or resized to the destination first with ``resize_source``."""

    category = "image"
    inputs = (
        Socket("destination", IMAGE),
        Socket("source", IMAGE),
        Int("x", 0, min=0, max=MAX_RESOLUTION),
        Int("y", 0, min=0, max=MAX_RESOLUTION),
        Boolean("resize_source", False),
        Socket("mask", MASK, optional=True),
    )
    outputs = (Output(IMAGE),)

    @classmethod
    def estimate(cls, files: _F.Folders, upstream: Mapping[str, Extent], **_: Any) -> Estimate | None:
        return X.passthrough(upstream, "destination")

    def run(
        self,
        ctx: Context,
        destination: torch.Tensor,
        source: torch.Tensor,
        x: int,
        y: int,
        resize_source: bool,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        node = "ImageCompositeMasked"
        dest = checks.image(destination, node, "destination")
        src = checks.image(source, node, "source")
        m = _optional_mask(mask, node)
        if m is not None:
            checks.batch_fits(m.shape[0], dest.shape[0], node, "mask", "destination")
        return C.composite_images(dest, src, x, y, m, resize_source)


class JoinImageWithAlpha(Node):
    """An RGBA image: the image's colours with alpha = 1 - ``alpha`` (a MASK marks what is transparent)."""

    category = "mask/compositing"
    inputs = (Socket("image", IMAGE), Socket("alpha", MASK))
    outputs = (Output(IMAGE),)

    def run(self, ctx: Context, image: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        img = checks.image(image, "JoinImageWithAlpha", "image")
        return C.join_alpha(img, checks.mask(alpha, "JoinImageWithAlpha", "alpha"))


class ImagePadForOutpaint(Node):
    """Put the image on a bigger grey canvas and mask the new border for an inpainting sampler; the mask
    fades into the picture along the padded sides over ``feathering`` pixels."""

    display_name = "Pad Image for Outpainting"
    category = "image"
    inputs = (
        Socket("image", IMAGE),
        Int("left", 0, min=0, max=MAX_RESOLUTION, step=8),
        Int("top", 0, min=0, max=MAX_RESOLUTION, step=8),
        Int("right", 0, min=0, max=MAX_RESOLUTION, step=8),
        Int("bottom", 0, min=0, max=MAX_RESOLUTION, step=8),
        Int("feathering", 40, min=0, max=MAX_RESOLUTION),
    )
    outputs = (Output(IMAGE), Output(MASK))

    @classmethod
    def estimate(
        cls,
        files: _F.Folders,
        upstream: Mapping[str, Extent],
        left: int,
        top: int,
        right: int,
        bottom: int,
        **_: Any,
    ) -> Estimate | None:
        src = upstream.get("image")
        if src is None:
            return None
        w, h = src.width + left + right, src.height + top + bottom
        return Estimate(
            X.picture(w, h, src.batch, X.larger_side(left + right, top + bottom, "right", "bottom"), "image"),
            {0: X.image_extent(w, h, src.batch), 1: X.mask_extent(w, h, src.batch)},
        )

    def run(
        self, ctx: Context, image: torch.Tensor, left: int, top: int, right: int, bottom: int, feathering: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        img = checks.image(image, "ImagePadForOutpaint", "image")
        return C.pad_for_outpaint(img, left, top, right, bottom, feathering)


class ImageCrop(Node):
    """The ``width`` x ``height`` region at (x, y), cut at the image's edges."""

    category = "image/transform"
    inputs = (
        Socket("image", IMAGE),
        Int("width", 512, min=1, max=MAX_RESOLUTION),
        Int("height", 512, min=1, max=MAX_RESOLUTION),
        Int("x", 0, min=0, max=MAX_RESOLUTION),
        Int("y", 0, min=0, max=MAX_RESOLUTION),
    )
    outputs = (Output(IMAGE),)

    @classmethod
    def estimate(
        cls, files: _F.Folders, upstream: Mapping[str, Extent], width: int, height: int, **_: Any
    ) -> Estimate | None:
        src = upstream.get("image")
        batch = src.batch if src is not None else 1
        w, h = (min(width, src.width), min(height, src.height)) if src is not None else (width, height)
        return Estimate(outputs={0: X.image_extent(w, h, batch)})

    def run(self, ctx: Context, image: torch.Tensor, width: int, height: int, x: int, y: int) -> torch.Tensor:
        return C.crop(checks.image(image, "ImageCrop", "image"), width, height, x, y)


class LatentComposite(Node):
    """Place ``samples_from`` into ``samples_to`` at (x, y) pixels; ``feather`` fades its inner sides."""

    category = "latent"
    inputs = (
        Socket("samples_to", LATENT),
        Socket("samples_from", LATENT),
        Int("x", 0, min=0, max=MAX_RESOLUTION, step=8),
        Int("y", 0, min=0, max=MAX_RESOLUTION, step=8),
        Int("feather", 0, min=0, max=MAX_RESOLUTION, step=8),
    )
    outputs = (Output(LATENT),)

    @classmethod
    def estimate(cls, files: _F.Folders, upstream: Mapping[str, Extent], **_: Any) -> Estimate | None:
        return X.passthrough(upstream, "samples_to")

    def run(
        self, ctx: Context, samples_to: dict, samples_from: dict, x: int, y: int, feather: int
    ) -> dict[str, Any]:
        to = checks.latent(samples_to, "LatentComposite", "samples_to")
        src = checks.latent(samples_from, "LatentComposite", "samples_from")
        _same_channels(to, src, "LatentComposite", "samples_from", "samples_to")
        out = dict(samples_to)
        out["samples"] = L.composite_feathered(to, src, x // 8, y // 8, feather // 8)
        return out


class LatentCompositeMasked(Node):
    """Paste ``source`` into ``destination`` at (x, y) pixels through ``mask`` where given (resized to the
    source), or resized to the destination first with ``resize_source``."""

    category = "latent"
    inputs = (
        Socket("destination", LATENT),
        Socket("source", LATENT),
        Int("x", 0, min=0, max=MAX_RESOLUTION, step=8),
        Int("y", 0, min=0, max=MAX_RESOLUTION, step=8),
        Boolean("resize_source", False),
        Socket("mask", MASK, optional=True),
    )
    outputs = (Output(LATENT),)

    @classmethod
    def estimate(cls, files: _F.Folders, upstream: Mapping[str, Extent], **_: Any) -> Estimate | None:
        return X.passthrough(upstream, "destination")

    def run(
        self,
        ctx: Context,
        destination: dict,
        source: dict,
        x: int,
        y: int,
        resize_source: bool,
        mask: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        node = "LatentCompositeMasked"
        dest = checks.latent(destination, node, "destination")
        src = checks.latent(source, node, "source")
        _same_channels(dest, src, node, "source", "destination")
        out = dict(destination)
        out["samples"] = C.paste(dest, src, x, y, _optional_mask(mask, node), 8, resize_source)
        return out


class LatentBlend(Node):
    """``samples1 * blend_factor + samples2 * (1 - blend_factor)`` (samples2 resized to samples1)."""

    category = "latent"
    inputs = (
        Socket("samples1", LATENT),
        Socket("samples2", LATENT),
        Float("blend_factor", 0.5, min=0.0, max=1.0, step=0.01),
    )
    outputs = (Output(LATENT),)

    @classmethod
    def estimate(cls, files: _F.Folders, upstream: Mapping[str, Extent], **_: Any) -> Estimate | None:
        return X.passthrough(upstream, "samples1")

    def run(self, ctx: Context, samples1: dict, samples2: dict, blend_factor: float) -> dict[str, Any]:
        s1 = checks.latent(samples1, "LatentBlend", "samples1")
        s2 = checks.latent(samples2, "LatentBlend", "samples2")
        _same_channels(s1, s2, "LatentBlend", "samples2", "samples1")
        out = dict(samples1)
        out["samples"] = L.blend(s1, s2, blend_factor)
        return out


class RepeatLatentBatch(Node):
    """The latent batch repeated ``amount`` times."""

    category = "latent/batch"
    inputs = (Socket("samples", LATENT), Int("amount", 1, min=1, max=64))
    outputs = (Output(LATENT),)

    @classmethod
    def estimate(cls, files: _F.Folders, upstream: Mapping[str, Extent], amount: int) -> Estimate | None:
        src = upstream.get("samples")
        batch = (src.batch if src is not None else 1) * amount
        measures = [Measure("batch", batch, "amount", f"a batch of {batch} latents")]
        if src is None:
            return Estimate(measures)
        return Estimate(measures, {0: Extent(src.width, src.height, batch, src.channels, src.element_bytes)})

    def run(self, ctx: Context, samples: dict, amount: int) -> dict[str, Any]:
        checks.latent(samples, "RepeatLatentBatch", "samples")
        return L.repeat_batch(samples, amount)


class LatentFromBatch(Node):
    """``length`` items of the latent batch from ``batch_index`` on; each keeps the noise it had in the
    batch when sampled."""

    display_name = "Get Latent From Batch"
    category = "latent/batch"
    inputs = (
        Socket("samples", LATENT),
        Int("batch_index", 0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION),
        Int("length", 1, min=1, max=64),
    )
    outputs = (Output(LATENT),)

    @classmethod
    def estimate(
        cls, files: _F.Folders, upstream: Mapping[str, Extent], length: int, **_: Any
    ) -> Estimate | None:
        src = upstream.get("samples")
        if src is None:
            return None
        return Estimate(outputs={0: Extent(src.width, src.height, min(length, src.batch), src.channels)})

    def run(self, ctx: Context, samples: dict, batch_index: int, length: int) -> dict[str, Any]:
        checks.latent(samples, "LatentFromBatch", "samples")
        return L.from_batch(samples, batch_index, length)


def _same_channels(a: torch.Tensor, b: torch.Tensor, node: str, name: str, other: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise checks.InputError(
            node,
            name,
            f"has {b.shape[1]} latent channels but {other!r} has {a.shape[1]} (another model family?)",
        )
