"""CLIP vision: load an image encoder (``models/clip_vision``) and encode images with it."""

from __future__ import annotations

import torch

from atelier.engine.models.clip_vision import ClipVisionHandle, ClipVisionOutput, clip_vision_loader
from atelier.engine.models.sockets import CLIP_VISION, CLIP_VISION_OUTPUT, IMAGE
from atelier.engine.node import Choice, Context, Node, Output, Socket, model_files
from atelier.nodes.loaders import _ModelFileNode


class CLIPVisionLoader(_ModelFileNode):
    """Load a CLIP vision encoder (ViT-H, ViT-bigG, ViT-L; Hugging Face layout), for IP-Adapters."""

    display_name = "Load CLIP Vision"
    category = "loaders"
    file_input = ("clip_vision", "clip_name")
    inputs = (Choice("clip_name", model_files("clip_vision")),)
    outputs = (Output(CLIP_VISION),)

    def run(self, ctx: Context, clip_name: str) -> ClipVisionHandle:
        path = ctx.files.find_model("clip_vision", clip_name)
        return ClipVisionHandle(ctx.models.load(path, clip_vision_loader), name=clip_name)


class CLIPVisionEncode(Node):
    """Encode images with a CLIP vision model: the centre square (``center``) or the whole image squashed
    to the encoder's size (``none``)."""

    display_name = "CLIP Vision Encode"
    category = "conditioning"
    inputs = (Socket("clip_vision", CLIP_VISION), Socket("image", IMAGE), Choice("crop", ["center", "none"]))
    outputs = (Output(CLIP_VISION_OUTPUT),)

    def run(
        self, ctx: Context, clip_vision: ClipVisionHandle, image: torch.Tensor, crop: str
    ) -> ClipVisionOutput:
        return clip_vision.encode(image, "none" if crop == "none" else "center")
