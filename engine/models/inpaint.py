"""Inpainting models: what a 9-channel UNet gets concatenated to its input, and the conditioning that
carries it.

An inpainting UNet (SD1.x, SD2.x, SDXL; detected by its input channels, ``info.unet_input_kind``) takes
``[latent (C), mask (1), masked picture's latent (C)]``. Its MODEL handle carries :class:`InpaintConcat` as
a core wrapper (innermost: patches see the usual 4-channel call) that builds the extra channels for each
conditioning entry of the call, sized to the call's batch and cut to its area. Where they come from, in
ComfyUI's order of precedence:

* the entry's :class:`~atelier.engine.sampling.conditioning.ConcatImage` (InpaintModelConditioning):
  its latent, scaled into model space; its mask, or else the latent's noise mask;
* otherwise the run's own latent (a VAEEncodeForInpaint latent is the masked picture) and noise mask;
* without any mask, the model inpaints everything: mask 1 and a blank picture (ComfyUI's constants for
  the latent of black, in model space). So an inpainting model also draws from an empty latent.

The mask is resized to the latent (bilinear) and rounded; a latent of another size is resized (bilinear,
centre-cropped to the aspect ratio); batches are fitted to the sampling batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from atelier.engine.imaging.batch import resize_batch
from atelier.engine.imaging.resize import resize
from atelier.engine.sampling.conditioning import ConcatImage, CondEntry
from atelier.engine.sampling.guidance import ApplyModel, ModelCall

#: the latent of a black picture in model space, per channel: what an inpainting model sees as "nothing
#: there" when no masked picture is given (ComfyUI's values for SD latents)
BLANK_LATENT: tuple[float, ...] = (0.8223, -0.6876, 0.6364, 0.1380)


def blank_latent(batch: int, height: int, width: int, channels: int, device: torch.device) -> Tensor:
    values = torch.tensor(BLANK_LATENT[:channels], dtype=torch.float32, device=device)
    if values.numel() < channels:
        values = torch.cat([values, torch.zeros(channels - values.numel(), device=device)])
    return values.reshape(1, channels, 1, 1).expand(batch, channels, height, width)


def concat_channels(
    concat: ConcatImage | None,
    latent_image: Tensor | None,
    denoise_mask: Tensor | None,
    *,
    latent_scale: float,
    batch: int,
    size: tuple[int, int],
    channels: int,
    device: torch.device,
) -> Tensor:
    """The extra input channels [batch, 1 + channels, h, w] for one conditioning entry, full size.

    ``concat`` is the entry's (raw VAE latent, mask at any resolution); ``latent_image`` (model space) and
    ``denoise_mask`` ([B, 1, h, w]) are the run's; ``size`` is the latent's (h, w)."""
    h, w = size
    mask = concat.mask if concat is not None and concat.mask is not None else denoise_mask
    if mask is None:
        ones = torch.ones(batch, 1, h, w, device=device)
        return torch.cat([ones, blank_latent(batch, h, w, channels, device)], dim=1)
    if concat is not None:
        picture = concat.latent.to(device, torch.float32) * latent_scale
    elif latent_image is not None:
        picture = latent_image.to(device, torch.float32)
    else:
        raise ValueError("an inpainting model needs the masked picture's latent (InpaintModelConditioning)")
    if picture.shape[1] != channels:
        raise ValueError(
            f"the masked picture's latent has {picture.shape[1]} channels but this model's latent has "
            f"{channels} (encoded with another model family's VAE?)"
        )
    if tuple(picture.shape[-2:]) != (h, w):
        picture = resize(picture, h, w, mode="bilinear", crop="center")
    m = mask.to(device, torch.float32)
    m = m.reshape(-1, 1, m.shape[-2], m.shape[-1])
    if tuple(m.shape[-2:]) != (h, w):
        m = resize(m, h, w, mode="bilinear", crop="center")
    return torch.cat([resize_batch(m.round(), batch), resize_batch(picture, batch)], dim=1)


@dataclass(frozen=True)
class InpaintConcat:
    """Core wrapper of an inpainting model's handle: the call's input with each entry's mask and masked
    picture concatenated along channels (see the module's description). ``latent_scale`` brings a
    conditioning's raw VAE latent into model space."""

    latent_scale: float

    def __call__(self, call_next: ApplyModel, call: ModelCall) -> Tensor:
        ah, aw, y, x = call.area
        sampling = call.sampling
        if sampling is not None:
            size = (int(sampling.latent_image.shape[-2]), int(sampling.latent_image.shape[-1]))
        else:  # a call outside a sampling run covers its latent from the origin
            size = (y + ah, x + aw)
        chunks = [
            concat_channels(
                entry.concat,
                sampling.latent_image if sampling is not None else None,
                sampling.denoise_mask if sampling is not None else None,
                latent_scale=self.latent_scale,
                batch=call.batch,
                size=size,
                channels=call.x.shape[1],
                device=call.x.device,
            )[..., y : y + ah, x : x + aw]
            for entry in call.entries
        ]
        extra = torch.cat(chunks).to(call.x.dtype)
        return call_next(call.replace(x=torch.cat([call.x, extra], dim=1)))


def with_concat(conditioning: Sequence[CondEntry], concat: ConcatImage) -> list[CondEntry]:
    """Every entry of ``conditioning`` carrying ``concat`` (new entries; the given ones are unchanged)."""
    return [entry.replace(concat=concat) for entry in conditioning]


def masked_pixels(pixels: Tensor, mask: Tensor) -> Tensor:
    """The picture [B, H, W, C] with the rounded mask's part ([B or 1, H, W]) set to mid grey, as
    inpainting models were trained to see it."""
    keep = (1.0 - mask.round())[..., None]
    return (pixels[..., :3].float() - 0.5) * keep + 0.5


def crop_to_cells(pixels: Tensor, mask: Tensor, cell: int) -> tuple[Tensor, Tensor]:
    """Picture [B, H, W, C] and mask [B, H, W] cut around their centre to a multiple of ``cell``."""
    h, w = pixels.shape[1], pixels.shape[2]
    nh, nw = (h // cell) * cell, (w // cell) * cell
    if nh == 0 or nw == 0:
        raise ValueError(f"the picture ({w}x{h}) is smaller than the VAE's {cell}-pixel cell")
    y0, x0 = (h % cell) // 2, (w % cell) // 2
    return pixels[:, y0 : y0 + nh, x0 : x0 + nw], mask[..., y0 : y0 + nh, x0 : x0 + nw]


def inpaint_conditioning(
    vae: Any,
    pixels: Tensor,
    mask: Tensor,
    positive: Sequence[CondEntry],
    negative: Sequence[CondEntry],
    noise_mask: bool = True,
) -> tuple[list[CondEntry], list[CondEntry], dict[str, Tensor]]:
    """InpaintModelConditioning: the picture encoded as the latent to sample, the picture with the
    masked part greyed out encoded for the conditioning (with the mask), and the mask as the latent's
    noise mask when ``noise_mask``. ``mask`` is [B or 1, H, W] at the picture's size (already resized);
    both are cut to the VAE's cell around their centre. Results stay on the VAE's device."""
    picture, m = crop_to_cells(pixels, mask, int(vae.downscale))
    m = m.to(picture.device, torch.float32)
    concat_latent = vae.encode(masked_pixels(picture, m))
    latent: dict[str, Tensor] = {"samples": vae.encode(picture[..., :3])}
    mask_4d = m[:, None]
    if noise_mask:
        latent["noise_mask"] = mask_4d
    concat = ConcatImage(latent=concat_latent, mask=mask_4d)
    return with_concat(positive, concat), with_concat(negative, concat), latent
