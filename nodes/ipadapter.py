"""IP-Adapter: load an adapter (``models/ipadapter``) and apply it to a MODEL with a reference image.

Names and inputs follow ComfyUI_IPAdapter_plus (ComfyUI core has no IP-Adapter nodes): IPAdapterModelLoader
and IPAdapterAdvanced with ``weight``, ``start_at`` / ``end_at`` (fractions of the sampling run) and an
optional ``attn_mask`` that limits the adapter to a region (a face reference for one face). The model is
not changed: the result is a new MODEL handle with a call wrapper (``engine/models/ipadapter_attention.py``).
"""

from __future__ import annotations

import torch

from atelier.engine.models.clip_vision import ClipVisionHandle
from atelier.engine.models.handles import ModelHandle
from atelier.engine.models.ipadapter import IPAdapterModel, check_fits, image_tokens, ipadapter_loader
from atelier.engine.models.ipadapter_attention import IPAdapterPatch
from atelier.engine.models.sockets import CLIP_VISION, IMAGE, IPADAPTER, MASK, MODEL
from atelier.engine.node import Choice, Context, Float, Node, Output, Socket, model_files
from atelier.nodes.loaders import _ModelFileNode


class IPAdapterModelLoader(_ModelFileNode):
    """Load an IP-Adapter (original ``.bin`` / ``.safetensors`` layout: plain, Plus, Plus-Face, Full-Face;
    SD1.x and SDXL)."""

    display_name = "IPAdapter Model Loader"
    category = "ipadapter"
    file_input = ("ipadapter", "ipadapter_file")
    inputs = (Choice("ipadapter_file", model_files("ipadapter")),)
    outputs = (Output(IPADAPTER),)

    def run(self, ctx: Context, ipadapter_file: str) -> IPAdapterModel:
        path = ctx.files.find_model("ipadapter", ipadapter_file)
        return ctx.models.load(path, ipadapter_loader)


class IPAdapterAdvanced(Node):
    """A model that also attends to a reference image: ``weight`` scales the image's attention, which acts
    from ``start_at`` to ``end_at`` of the run, inside ``attn_mask`` (white) when one is given."""

    display_name = "IPAdapter Advanced"
    category = "ipadapter"
    inputs = (
        Socket("model", MODEL),
        Socket("ipadapter", IPADAPTER),
        Socket("image", IMAGE),
        Float("weight", 1.0, min=-1.0, max=5.0, step=0.05),
        Float("start_at", 0.0, min=0.0, max=1.0, step=0.001),
        Float("end_at", 1.0, min=0.0, max=1.0, step=0.001),
        Socket("attn_mask", MASK, optional=True),
        Socket("clip_vision", CLIP_VISION, optional=True),
    )
    outputs = (Output(MODEL),)

    def run(
        self,
        ctx: Context,
        model: ModelHandle,
        ipadapter: IPAdapterModel,
        image: torch.Tensor,
        weight: float,
        start_at: float,
        end_at: float,
        attn_mask: torch.Tensor | None = None,
        clip_vision: ClipVisionHandle | None = None,
    ) -> ModelHandle:
        if clip_vision is None:
            raise ValueError(
                f"IPAdapterAdvanced: input clip_vision is not connected; IP-Adapter {ipadapter.name} reads "
                "CLIP vision features: load its encoder with CLIPVisionLoader (models/clip_vision)"
            )
        problem = check_fits(ipadapter, model.unet, model.family, clip_vision)
        if problem is not None:
            raise ValueError(f"IPAdapterAdvanced: {problem}")
        if start_at > end_at:
            raise ValueError(f"IPAdapterAdvanced: start_at {start_at} is after end_at {end_at}")
        if weight == 0.0:
            return model
        cond, uncond = image_tokens(ipadapter, clip_vision, image)
        patch = IPAdapterPatch(
            adapter=ipadapter,
            unet=model.unet,
            cond=cond,
            uncond=uncond,
            weight=weight,
            sigma_start=model.sampling.percent_to_sigma(start_at),
            sigma_end=model.sampling.percent_to_sigma(end_at),
            mask=attn_mask,
        )
        return model.with_wrapper(patch)
