"""More of ComfyUI's image nodes: a mask from one channel of an input image (LoadImageMask), two image
batches joined (ImageBatch), and images sent to the client over the websocket instead of saved
(SaveImageWebsocket)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from atelier.engine.hashing import file_fingerprint
from atelier.engine.imaging.resize import resize
from atelier.engine.models.sockets import IMAGE, MASK
from atelier.engine.node import Choice, Context, Node, NodeResult, Output, Socket, input_files
from atelier.nodes.image import to_pil

CHANNELS = ("alpha", "red", "green", "blue")


def mask_from_channel(im: Image.Image, channel: str) -> torch.Tensor:
    """MASK ``[1, H, W]`` from one channel of a picture, as ComfyUI reads it: the picture as RGBA (16-bit
    "I" pictures scaled to 8 bits first), the channel in 0..1, alpha inverted (transparent = 1, masked)."""
    if im.getbands() != ("R", "G", "B", "A"):
        if im.mode == "I":
            im = im.point(lambda v: v * (1 / 255))
        im = im.convert("RGBA")
    band = channel[0].upper()
    mask = torch.from_numpy(np.asarray(im.getchannel(band), dtype=np.float32).copy()) / 255.0
    if band == "A":
        mask = 1.0 - mask
    return mask[None]


class LoadImageMask(Node):
    """A mask from one channel of an image in the input folder (alpha: transparent parts are masked)."""

    display_name = "Load Image (as Mask)"
    category = "mask"
    inputs = (Choice("image", input_files), Choice("channel", CHANNELS))
    outputs = (Output(MASK),)

    @classmethod
    def fingerprint(cls, ctx: Context, **literals: Any) -> str:
        return file_fingerprint(ctx.files.input_path(literals["image"]))

    @classmethod
    def provenance(cls, ctx: Context, **literals: Any) -> dict[str, Any]:
        return {"sha256": ctx.files.sha256(ctx.files.input_path(literals["image"]))}

    def run(self, ctx: Context, image: str, channel: str) -> torch.Tensor:
        path = ctx.files.input_path(image)
        try:
            with Image.open(path) as opened:
                im = ImageOps.exif_transpose(opened)
                mask = mask_from_channel(im, channel)
        except Exception as exc:
            raise ValueError(f"LoadImageMask: cannot read image {image!r}: {exc}") from exc
        return mask.to(ctx.device)


def batch_images(image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
    """``image2`` appended to ``image1``'s batch, as ComfyUI's ImageBatch: an RGB batch joined to an RGBA
    one gets an opaque alpha, and ``image2`` is cropped to ``image1``'s aspect ratio around its centre and
    resized bilinearly to its size."""
    if image1.shape[-1] != image2.shape[-1]:
        if image1.shape[-1] > image2.shape[-1]:
            image2 = torch.nn.functional.pad(image2, (0, 1), value=1.0)
        else:
            image1 = torch.nn.functional.pad(image1, (0, 1), value=1.0)
    if image1.shape[1:3] != image2.shape[1:3]:
        x = resize(image2.movedim(-1, 1), image1.shape[1], image1.shape[2], "bilinear", crop="center")
        image2 = x.movedim(1, -1)
    return torch.cat((image1, image2.to(image1.device, image1.dtype)), dim=0)


class ImageBatch(Node):
    """Both images in one batch (the second resized to the first's size)."""

    category = "image"
    inputs = (Socket("image1", IMAGE), Socket("image2", IMAGE))
    outputs = (Output(IMAGE),)

    def run(self, ctx: Context, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        return batch_images(image1, image2)


class SaveImageWebsocket(Node):
    """Send the images to the client that queued the job, as PNGs over its websocket (ComfyUI's binary
    image message); nothing is written to disk."""

    category = "image"
    output_node = True
    cacheable = False  # it sends to whoever is listening now: it runs on every job
    inputs = (Socket("images", IMAGE),)
    outputs = ()

    def run(self, ctx: Context, images: torch.Tensor) -> NodeResult:
        pictures = to_pil(images)
        for n, picture in enumerate(pictures):
            ctx.progress(n, len(pictures))
            buffer = io.BytesIO()
            picture.save(buffer, format="PNG", compress_level=1)
            ctx.send_image(buffer.getvalue(), format="PNG", width=picture.width, height=picture.height)
        return NodeResult()
