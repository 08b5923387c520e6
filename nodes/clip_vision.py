"""CLIP vision: load an image encoder (``models/clip_vision``) and encode images with it; style models
(``models/style_models``) that turn an encoding into prompt tokens. unCLIP's nodes are in ``unclip.py``."""

from __future__ import annotations

import torch

from atelier.engine.models.clip_vision import ClipVisionHandle, ClipVisionOutput, clip_vision_loader
from atelier.engine.models.sockets import CLIP_VISION, CLIP_VISION_OUTPUT, CONDITIONING, IMAGE, STYLE_MODEL
from atelier.engine.models.style_model import StyleModel, style_model_loader
from atelier.engine.node import Choice, Context, Float, Node, Output, Socket, model_files
from atelier.engine.sampling.conditioning import Conditioning
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


class StyleModelLoader(_ModelFileNode):
    """Load a style model (T2I-Adapter style, ``models/style_models``)."""

    display_name = "Load Style Model"
    category = "loaders"
    file_input = ("style_models", "style_model_name")
    inputs = (Choice("style_model_name", model_files("style_models")),)
    outputs = (Output(STYLE_MODEL),)

    def run(self, ctx: Context, style_model_name: str) -> StyleModel:
        path = ctx.files.find_model("style_models", style_model_name)
        return ctx.models.load(path, style_model_loader)


class StyleModelApply(Node):
    """Append a style model's tokens for an image (its CLIP vision encoding) to every entry of a
    conditioning, multiplied by ``strength``."""

    display_name = "Apply Style Model"
    category = "conditioning/style_model"
    inputs = (
        Socket("conditioning", CONDITIONING),
        Socket("style_model", STYLE_MODEL),
        Socket("clip_vision_output", CLIP_VISION_OUTPUT),
        Float("strength", 1.0, min=0.0, max=10.0, step=0.001),
        Choice("strength_type", ["multiply"]),
    )
    outputs = (Output(CONDITIONING),)

    def run(
        self,
        ctx: Context,
        conditioning: Conditioning,
        style_model: StyleModel,
        clip_vision_output: ClipVisionOutput,
        strength: float,
        strength_type: str,
    ) -> Conditioning:
        try:
            tokens = style_model.get_cond(clip_vision_output.last_hidden_state)
        except ValueError as exc:
            raise ValueError(f"StyleModelApply: {exc}") from None
        tokens = tokens.flatten(0, 1).unsqueeze(0) * strength
        out = []
        for entry in conditioning:
            emb = entry.embedding
            if int(emb.shape[-1]) != int(tokens.shape[-1]):
                raise ValueError(
                    f"StyleModelApply: style model {style_model.name} makes tokens of width "
                    f"{int(tokens.shape[-1])}, the conditioning's are {int(emb.shape[-1])} wide (another model family)"
                )
            extra = tokens.to(emb.device, emb.dtype).expand(emb.shape[0], -1, -1)
            out.append(entry.replace(embedding=torch.cat([emb, extra], dim=1)))
        return out
