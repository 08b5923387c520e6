"""Stable unCLIP (ComfyUI's names and inputs): load an unCLIP checkpoint with its CLIP vision tower, and
condition on images through it. The model's call turns the images into its image-embedding input
(``engine/models/unclip.py``)."""

from __future__ import annotations

import torch

from atelier.engine.models.clip_vision import ClipVisionHandle, ClipVisionOutput
from atelier.engine.models.detect import detect_checkpoint
from atelier.engine.models.handles import (
    ClipHandle,
    ModelHandle,
    VaeHandle,
    checkpoint_loader,
    handles_from_checkpoint,
)
from atelier.engine.models.sockets import CLIP, CLIP_VISION, CLIP_VISION_OUTPUT, CONDITIONING, MODEL, VAE
from atelier.engine.models.unclip import UnclipImage, unclip_clip_vision_loader, with_unclip_image
from atelier.engine.node import Choice, Context, Float, Node, Output, Socket, model_files
from atelier.engine.sampling.conditioning import Conditioning
from atelier.nodes.loaders import _ModelFileNode


def _origin(ctx: Context) -> str:
    return f"node {ctx.node_id} ({ctx.node_type})"


class UnclipCheckpointLoader(_ModelFileNode):
    """Load a Stable unCLIP checkpoint (SD2.1 unCLIP H or L): the model, its text encoder and VAE, and the
    CLIP vision encoder stored in the same file, whose image encodings unCLIPConditioning takes."""

    type_name = "unCLIPCheckpointLoader"
    display_name = "unCLIP Checkpoint Loader"
    category = "loaders"
    file_input = ("checkpoints", "ckpt_name")
    inputs = (Choice("ckpt_name", model_files("checkpoints")),)
    outputs = (Output(MODEL), Output(CLIP), Output(VAE), Output(CLIP_VISION))

    def run(
        self, ctx: Context, ckpt_name: str
    ) -> tuple[ModelHandle, ClipHandle, VaeHandle, ClipVisionHandle]:
        path = ctx.files.find_model("checkpoints", ckpt_name)
        unclip = detect_checkpoint(path).unclip  # headers only: a plain model is refused before loading
        if unclip is None and path.is_dir():
            raise ValueError(
                f"{_origin(ctx)}: {ckpt_name!r} is a diffusers folder; unCLIP models load from their single-file "
                "checkpoint (sd21-unclip-h.ckpt / sd21-unclip-l.ckpt), which holds the CLIP vision tower"
            )
        if unclip is None:
            raise ValueError(
                f"{_origin(ctx)}: checkpoint {ckpt_name!r} is not a Stable unCLIP checkpoint (no image-embedding "
                "input on its UNet, no embedder.*/noise_augmentor.* weights); load it with CheckpointLoaderSimple"
            )
        if unclip.embedder_prefix is None:
            raise ValueError(
                f"{_origin(ctx)}: unCLIP checkpoint {ckpt_name!r} holds no CLIP vision tower "
                "(embedder.model.visual.*); it cannot encode images"
            )
        model, clip, vae = handles_from_checkpoint(ctx.models.load(path, checkpoint_loader), ckpt_name)
        if vae is None:
            raise ValueError(f"{_origin(ctx)}: checkpoint {ckpt_name!r} has no VAE weights")
        vision = ClipVisionHandle(ctx.models.load(path, unclip_clip_vision_loader), name=ckpt_name)
        return model, clip, vae, vision


class UnclipConditioning(Node):
    """Condition on images (their CLIP vision encoding) for a Stable unCLIP model: ``strength`` scales the
    image's pull, ``noise_augmentation`` (0..1) noises its embedding first (more freedom from the image).
    Applied again, the images add up. Strength 0 leaves the conditioning as it is."""

    type_name = "unCLIPConditioning"
    display_name = "unCLIPConditioning"
    category = "conditioning"
    inputs = (
        Socket("conditioning", CONDITIONING),
        Socket("clip_vision_output", CLIP_VISION_OUTPUT),
        Float("strength", 1.0, min=-10.0, max=10.0, step=0.01),
        Float("noise_augmentation", 0.0, min=0.0, max=1.0, step=0.01),
    )
    outputs = (Output(CONDITIONING),)

    def run(
        self,
        ctx: Context,
        conditioning: Conditioning,
        clip_vision_output: ClipVisionOutput,
        strength: float,
        noise_augmentation: float,
    ) -> Conditioning:
        if strength == 0:
            return conditioning
        embeds = clip_vision_output.image_embeds.detach().to("cpu", torch.float32)
        image = UnclipImage(embeds, float(strength), float(noise_augmentation), origin=_origin(ctx))
        return [with_unclip_image(entry, image) for entry in conditioning]
