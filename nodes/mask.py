"""Mask nodes: grow, invert, threshold, feather, solid masks, combining masks, masks to and from images.

MASK is ``[B, H, W]`` in 0..1 (1 = selected; LoadImage gives 1 where the picture is transparent). Node
names and inputs are ComfyUI's; the math lives in ``engine/imaging/masks.py``.
"""

from __future__ import annotations

import torch

from atelier.engine.imaging import checks
from atelier.engine.imaging import masks as M
from atelier.engine.models.sockets import IMAGE, MASK
from atelier.engine.node import Boolean, Choice, Context, Float, Int, Node, Output, Socket

MAX_RESOLUTION = 16384
CHANNELS = ("red", "green", "blue", "alpha")


class GrowMask(Node):
    """Grow the mask by ``expand`` pixels (shrink it when negative), one pixel per step; tapered corners
    grow diagonally slower (rounded corners)."""

    category = "mask"
    inputs = (
        Socket("mask", MASK),
        Int("expand", 0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION),
        Boolean("tapered_corners", True),
    )
    outputs = (Output(MASK),)

    def run(self, ctx: Context, mask: torch.Tensor, expand: int, tapered_corners: bool) -> torch.Tensor:
        return M.grow(checks.mask(mask, "GrowMask", "mask"), expand, tapered_corners)


class InvertMask(Node):
    """1 - mask."""

    category = "mask"
    inputs = (Socket("mask", MASK),)
    outputs = (Output(MASK),)

    def run(self, ctx: Context, mask: torch.Tensor) -> torch.Tensor:
        return M.invert(checks.mask(mask, "InvertMask", "mask"))


class ThresholdMask(Node):
    """1 where the mask is above ``value``, 0 elsewhere."""

    category = "mask"
    inputs = (Socket("mask", MASK), Float("value", 0.5, min=0.0, max=1.0, step=0.01))
    outputs = (Output(MASK),)

    def run(self, ctx: Context, mask: torch.Tensor, value: float) -> torch.Tensor:
        return M.threshold(checks.mask(mask, "ThresholdMask", "mask"), value)


class FeatherMask(Node):
    """Fade the mask linearly towards the picture's edges over the given widths (pixels)."""

    category = "mask"
    inputs = (
        Socket("mask", MASK),
        Int("left", 0, min=0, max=MAX_RESOLUTION),
        Int("top", 0, min=0, max=MAX_RESOLUTION),
        Int("right", 0, min=0, max=MAX_RESOLUTION),
        Int("bottom", 0, min=0, max=MAX_RESOLUTION),
    )
    outputs = (Output(MASK),)

    def run(
        self, ctx: Context, mask: torch.Tensor, left: int, top: int, right: int, bottom: int
    ) -> torch.Tensor:
        return M.feather_edges(checks.mask(mask, "FeatherMask", "mask"), left, top, right, bottom)


class SolidMask(Node):
    """A mask of one value."""

    category = "mask"
    inputs = (
        Float("value", 1.0, min=0.0, max=1.0, step=0.01),
        Int("width", 512, min=1, max=MAX_RESOLUTION),
        Int("height", 512, min=1, max=MAX_RESOLUTION),
    )
    outputs = (Output(MASK),)

    def run(self, ctx: Context, value: float, width: int, height: int) -> torch.Tensor:
        return M.solid(value, height, width, device=ctx.device)


class MaskComposite(Node):
    """Combine ``source`` into ``destination`` at (x, y): multiply, add, subtract, and, or, xor (the last
    three on the rounded masks); the result is clamped to 0..1."""

    category = "mask"
    inputs = (
        Socket("destination", MASK),
        Socket("source", MASK),
        Int("x", 0, min=0, max=MAX_RESOLUTION),
        Int("y", 0, min=0, max=MAX_RESOLUTION),
        Choice("operation", M.MASK_OPERATIONS),
    )
    outputs = (Output(MASK),)

    def run(
        self, ctx: Context, destination: torch.Tensor, source: torch.Tensor, x: int, y: int, operation: str
    ) -> torch.Tensor:
        dest = checks.mask(destination, "MaskComposite", "destination")
        src = checks.mask(source, "MaskComposite", "source")
        if 1 not in (src.shape[0], dest.shape[0]):
            checks.batch_fits(src.shape[0], dest.shape[0], "MaskComposite", "source", "destination")
        return M.composite(dest, src, x, y, operation)  # type: ignore[arg-type]


class ImageToMask(Node):
    """One channel of an image as a mask."""

    display_name = "Convert Image to Mask"
    category = "mask"
    inputs = (Socket("image", IMAGE), Choice("channel", CHANNELS))
    outputs = (Output(MASK),)

    def run(self, ctx: Context, image: torch.Tensor, channel: str) -> torch.Tensor:
        img = checks.image(image, "ImageToMask", "image", channels=(1, 2, 3, 4))
        index = CHANNELS.index(channel)
        if index >= img.shape[-1]:
            raise checks.InputError(
                "ImageToMask", "image", f"has {img.shape[-1]} channels: there is no {channel} channel"
            )
        return img[..., index].float()


class MaskToImage(Node):
    """A mask as a grey image."""

    display_name = "Convert Mask to Image"
    category = "mask"
    inputs = (Socket("mask", MASK),)
    outputs = (Output(IMAGE),)

    def run(self, ctx: Context, mask: torch.Tensor) -> torch.Tensor:
        m = checks.mask(mask, "MaskToImage", "mask").float()
        return m[..., None].expand(-1, -1, -1, 3).clone()
