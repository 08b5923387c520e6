"""VAE nodes: latents to images and back, whole or in tiles, and inpainting encode."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from atelier.engine import folders as _F
from atelier.engine.imaging import checks
from atelier.engine.imaging.masks import grow_for_inpaint_encode
from atelier.engine.imaging.resize import resize_mask
from atelier.engine.limits import Estimate, Extent
from atelier.engine.models import estimates as X
from atelier.engine.models.handles import VaeHandle
from atelier.engine.models.inpaint import crop_to_cells, masked_pixels
from atelier.engine.models.sockets import IMAGE, LATENT, MASK, VAE
from atelier.engine.node import Context, Int, Node, Output, Socket


def _crop_to_multiple(image: torch.Tensor, m: int) -> torch.Tensor:
    _, h, w, _ = image.shape
    nh, nw = (h // m) * m, (w // m) * m
    if nh == 0 or nw == 0:
        raise ValueError(f"image {w}x{h} is smaller than the VAE's {m}-pixel cell")
    y0, x0 = (h - nh) // 2, (w - nw) // 2
    return image[:, y0 : y0 + nh, x0 : x0 + nw]


class VAEDecode(Node):
    """Latents to images."""

    category = "latent"
    inputs = (Socket("samples", LATENT), Socket("vae", VAE))
    outputs = (Output(IMAGE),)

    @classmethod
    def estimate(
        cls,
        files: _F.Folders,
        upstream: Mapping[str, Extent],
    ) -> Estimate | None:
        latent = upstream.get("samples")
        if latent is None:
            return None
        w, h = X.latent_pixels(latent)
        return Estimate(
            X.picture(w, h, latent.batch, None, "image"),
            {0: X.image_extent(w, h, latent.batch)},
            work_bytes=X.vae_work(w, h, latent.batch),
        )

    def run(self, ctx: Context, samples: dict, vae: VaeHandle) -> torch.Tensor:
        return vae.decode(samples["samples"])


class VAEEncode(Node):
    """Images to latents (sides cropped to a multiple of 8)."""

    category = "latent"
    inputs = (Socket("pixels", IMAGE), Socket("vae", VAE))
    outputs = (Output(LATENT),)

    @classmethod
    def estimate(
        cls,
        files: _F.Folders,
        upstream: Mapping[str, Extent],
    ) -> Estimate | None:
        image = upstream.get("pixels")
        if image is None:
            return None
        return Estimate(
            outputs={0: X.latent_extent(image.width, image.height, image.batch)},
            work_bytes=X.vae_work(image.width, image.height, image.batch),
        )

    def run(self, ctx: Context, pixels: torch.Tensor, vae: VaeHandle) -> dict:
        return {"samples": vae.encode(_crop_to_multiple(pixels, vae.downscale))}


class VAEDecodeTiled(Node):
    """Decode in overlapping tiles: large images in little memory."""

    category = "_for_testing"
    inputs = (
        Socket("samples", LATENT),
        Socket("vae", VAE),
        Int("tile_size", 512, min=64, max=4096, step=32),
        Int("overlap", 64, min=0, max=4096, step=32),
    )
    outputs = (Output(IMAGE),)

    @classmethod
    def estimate(
        cls, files: _F.Folders, upstream: Mapping[str, Extent], tile_size: int, overlap: int
    ) -> Estimate | None:
        latent = upstream.get("samples")
        if latent is None:
            return None
        w, h = X.latent_pixels(latent)
        tile = min(tile_size + 2 * overlap, max(w, h))
        return Estimate(
            X.picture(w, h, latent.batch, None, "image"),
            {0: X.image_extent(w, h, latent.batch)},
            work_bytes=X.vae_work(tile, tile, latent.batch),
        )

    def run(self, ctx: Context, samples: dict, vae: VaeHandle, tile_size: int, overlap: int) -> torch.Tensor:
        f = vae.downscale
        return vae.decode_tiled(samples["samples"], tile=max(1, tile_size // f), overlap=overlap // f)


class VAEEncodeTiled(Node):
    category = "_for_testing"
    inputs = (
        Socket("pixels", IMAGE),
        Socket("vae", VAE),
        Int("tile_size", 512, min=64, max=4096, step=64),
        Int("overlap", 64, min=0, max=4096, step=32),
    )
    outputs = (Output(LATENT),)

    @classmethod
    def estimate(
        cls, files: _F.Folders, upstream: Mapping[str, Extent], tile_size: int, overlap: int
    ) -> Estimate | None:
        image = upstream.get("pixels")
        if image is None:
            return None
        tile = min(tile_size + 2 * overlap, max(image.width, image.height))
        return Estimate(
            outputs={0: X.latent_extent(image.width, image.height, image.batch)},
            work_bytes=X.vae_work(tile, tile, image.batch),
        )

    def run(self, ctx: Context, pixels: torch.Tensor, vae: VaeHandle, tile_size: int, overlap: int) -> dict:
        image = _crop_to_multiple(pixels, vae.downscale)
        return {"samples": vae.encode_tiled(image, tile=tile_size, overlap=overlap)}


class VAEEncodeForInpaint(Node):
    """Encode for inpainting: the masked area is greyed out before encoding and, grown by
    ``grow_mask_by`` pixels (about half on each side, as in ComfyUI), becomes the noise mask. With an
    inpainting model the greyed latent is also what it sees as the masked picture."""

    category = "latent/inpaint"
    inputs = (
        Socket("pixels", IMAGE),
        Socket("vae", VAE),
        Socket("mask", MASK),
        Int("grow_mask_by", 6, min=0, max=64),
    )
    outputs = (Output(LATENT),)

    @classmethod
    def estimate(cls, files: _F.Folders, upstream: Mapping[str, Extent], **_: Any) -> Estimate | None:
        image = upstream.get("pixels")
        if image is None:
            return None
        return Estimate(
            outputs={0: X.latent_extent(image.width, image.height, image.batch)},
            work_bytes=X.vae_work(image.width, image.height, image.batch),
        )

    def run(
        self, ctx: Context, pixels: torch.Tensor, vae: VaeHandle, mask: torch.Tensor, grow_mask_by: int
    ) -> dict:
        node = "VAEEncodeForInpaint"
        picture = checks.image(pixels, node, "pixels")
        m = checks.mask_for_image(mask, picture, node, "mask", "pixels").to(picture.device)
        m = resize_mask(m, picture.shape[1], picture.shape[2]).clamp(0, 1)
        picture, m = crop_to_cells(picture, m, vae.downscale)
        noise_mask = grow_for_inpaint_encode(m[:, None], grow_mask_by)
        return {"samples": vae.encode(masked_pixels(picture, m)), "noise_mask": noise_mask}
