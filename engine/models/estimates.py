"""What Stable Diffusion nodes need, for admission control (``engine/admission.py``): the extents that
flow between them and rough working-memory figures.

Extents: IMAGE ``width x height`` pixels x 3 float32 channels; MASK the same with 1 channel; LATENT in
latent cells (an eighth of the pixels each way) x 4 float32 channels; an UPSCALE_MODEL carries its
scale as its width and height and weighs nothing. Working memory is an order of magnitude, not a
measurement: the VAE decoder's last blocks hold a few 128-channel float maps at full resolution; the UNet
holds a few hundred channels per latent cell, twice over with classifier-free guidance.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from atelier.engine.limits import Estimate, Extent, Measure

LATENT_FACTOR = 8
LATENT_CHANNELS = 4
#: bytes the VAE decoder (or encoder) works in per image pixel: two 128-channel float32 maps
VAE_WORK_PER_PIXEL = 128 * 4 * 2
#: bytes the UNet works in per latent cell of one image: ~320 channels, a few maps, doubled by CFG
UNET_WORK_PER_CELL = 320 * 4 * 4 * 2


def image_extent(width: int, height: int, batch: int = 1) -> Extent:
    return Extent(max(1, width), max(1, height), max(1, batch), 3)


def mask_extent(width: int, height: int, batch: int = 1) -> Extent:
    return Extent(max(1, width), max(1, height), max(1, batch), 1)


def latent_extent(width_px: int, height_px: int, batch: int = 1) -> Extent:
    """The latent of a ``width_px`` x ``height_px`` picture."""
    return Extent(
        max(1, width_px // LATENT_FACTOR), max(1, height_px // LATENT_FACTOR), max(1, batch), LATENT_CHANNELS
    )


def latent_pixels(e: Extent) -> tuple[int, int]:
    """The picture size a latent extent decodes to."""
    return e.width * LATENT_FACTOR, e.height * LATENT_FACTOR


def picture(
    width: int, height: int, batch: int, input: str | None, what: str, batch_input: str | None = None
) -> list[Measure]:
    """The pixels of one picture (``what``: "image", "latent") and the batch, to hold against the limits."""
    out = [Measure("pixels", width * height, input, f"a {width}x{height} {what}")]
    if batch_input is not None or batch > 1:
        out.append(Measure("batch", batch, batch_input or input, f"a batch of {batch} {what}s"))
    return out


def larger_side(width: int, height: int, width_input: str = "width", height_input: str = "height") -> str:
    """The input that sets the larger side: the one a message names."""
    return width_input if width >= height else height_input


def scaled(width: int, height: int, to_width: int, to_height: int) -> tuple[int, int]:
    """ComfyUI's size rule: 0 for one side keeps the aspect ratio; both 0 keeps the size."""
    if to_width == 0 and to_height == 0:
        return width, height
    if to_width == 0:
        return max(1, round(width * to_height / height)), to_height
    if to_height == 0:
        return to_width, max(1, round(height * to_width / width))
    return to_width, to_height


def passthrough(upstream: Mapping[str, Extent], input: str) -> Estimate | None:
    """A node whose first output is the size of its ``input``."""
    e = upstream.get(input)
    return Estimate(outputs={0: e}) if e is not None else None


def text_measure(text: str, input: str) -> Measure:
    return Measure("text", len(text), input, f"a prompt of {len(text)} characters")


def steps_measures(steps: int | None, input: str = "steps") -> list[Measure]:
    """The step count when it is literal (None: it comes through a link, known when the job runs)."""
    return [] if steps is None else [Measure("steps", steps, input, f"{steps} steps")]


def sampler_work(latent: Extent | None) -> int:
    return 0 if latent is None else latent.width * latent.height * latent.batch * UNET_WORK_PER_CELL


def vae_work(width_px: int, height_px: int, batch: int) -> int:
    return width_px * height_px * batch * VAE_WORK_PER_PIXEL


_SCALE_IN_NAME = re.compile(r"(?:^|[^0-9])([1-8])x(?:[^0-9a-z]|$)|x([1-8])(?:[^0-9]|$)", re.IGNORECASE)


def upscale_model_scale(name: str, default: int = 4) -> int:
    """An upscale model's scale as its file name says (``4x-UltraSharp``, ``RealESRGAN_x2plus``), else
    ``default`` (most are 4x): the model itself is only read when the job runs."""
    m = _SCALE_IN_NAME.search(name.rsplit("/", 1)[-1])
    if m is None:
        return default
    return int(m.group(1) or m.group(2))
