"""Loaders: checkpoints, VAEs, LoRAs, and the CLIP layer choice.

Files are found through ``ctx.files`` and loaded through ``ctx.models`` (once per file version, onto the
engine's device). A loader's cache signature carries the file's identity (path, size, modification time);
the content hash is only needed when a result records its provenance (SaveImage), once per file version,
and is read in the background from the moment the job is planned (``FileHashes.prefetch``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from atelier.engine.folders import Folders
from atelier.engine.hashing import file_fingerprint
from atelier.engine.models.family_traits import checkpoint_family
from atelier.engine.models.handles import (
    ClipHandle,
    ModelHandle,
    VaeHandle,
    load_checkpoint_handles,
    load_vae_handle,
)
from atelier.engine.models.sockets import CLIP, MODEL, VAE
from atelier.engine.node import Choice, Context, Float, Int, Node, Output, Socket, model_files
from atelier.engine.traits import Declared, Traits


class _ModelFileNode(Node, abstract=True):
    """A node that reads one model file named by an input: its fingerprint and provenance."""

    #: (model kind, name of the input that names the file)
    file_input: tuple[str, str] = ("checkpoints", "ckpt_name")

    @classmethod
    def fingerprint(cls, ctx: Context, **literals: Any) -> str:
        kind, name = cls.file_input
        path = ctx.files.find_model(kind, literals[name])
        # a saved image records the file's sha256: start reading it now, beside loading and sampling
        ctx.files.hashes.prefetch(path)
        return file_fingerprint(path)

    @classmethod
    def provenance(cls, ctx: Context, **literals: Any) -> dict[str, Any]:
        kind, name = cls.file_input
        return {"sha256": ctx.files.sha256(ctx.files.find_model(kind, literals[name]))}


class CheckpointLoaderSimple(_ModelFileNode):
    """Load a Stable Diffusion checkpoint (SD1.x, SD2.x, SDXL; single file or diffusers folder)."""

    display_name = "Load Checkpoint"
    category = "loaders"
    file_input = ("checkpoints", "ckpt_name")
    inputs = (Choice("ckpt_name", model_files("checkpoints")),)
    outputs = (Output(MODEL), Output(CLIP), Output(VAE))

    @classmethod
    def traits(
        cls, files: Folders, upstream: Mapping[str, Traits], node_id: str, **literals: Any
    ) -> Declared:
        return {0: checkpoint_family(files, node_id, literals["ckpt_name"], "ckpt_name")}

    def run(self, ctx: Context, ckpt_name: str) -> tuple[ModelHandle, ClipHandle, VaeHandle]:
        path = ctx.files.find_model("checkpoints", ckpt_name)
        model, clip, vae = load_checkpoint_handles(ctx.models, path, ckpt_name)
        if vae is None:
            raise ValueError(f"checkpoint {ckpt_name!r} has no VAE weights; load one with VAELoader")
        return model, clip, vae


class VAELoader(_ModelFileNode):
    """Load a standalone VAE file."""

    display_name = "Load VAE"
    category = "loaders"
    file_input = ("vae", "vae_name")
    inputs = (Choice("vae_name", model_files("vae")),)
    outputs = (Output(VAE),)

    def run(self, ctx: Context, vae_name: str) -> VaeHandle:
        return load_vae_handle(ctx.models, ctx.files.find_model("vae", vae_name), vae_name)


class CLIPSetLastLayer(Node):
    """Condition on an earlier layer of the text encoder (-1 last, -2 penultimate: "clip skip")."""

    category = "conditioning"
    inputs = (Socket("clip", CLIP), Int("stop_at_clip_layer", -1, min=-24, max=-1))
    outputs = (Output(CLIP),)

    def run(self, ctx: Context, clip: ClipHandle, stop_at_clip_layer: int) -> ClipHandle:
        return clip.with_layer(stop_at_clip_layer)


def _load_lora(
    ctx: Context, lora_name: str, model: ModelHandle | None, clip: ClipHandle | None, sm: float, sc: float
):
    from atelier.engine.models.lora import load_lora

    path = ctx.files.find_model("loras", lora_name)
    te = list(clip.encoders) if clip is not None else []
    patches = load_lora(
        path,
        unet=model.unet if model is not None else None,
        te1=te[0].model if len(te) > 0 else None,
        te2=te[1].model if len(te) > 1 else None,
        strength_model=sm,
        strength_clip=sc,
    )
    matched = len(patches.unet) + len(patches.te1) + len(patches.te2)
    if matched == 0:
        detail = f"; e.g. {', '.join(patches.unmatched[:3])}" if patches.unmatched else ""
        raise ValueError(
            f"LoRA {lora_name!r} matches no weight of this model{detail} (is it for another family?)"
        )
    return patches


class LoraLoader(_ModelFileNode):
    """Apply a LoRA (kohya/A1111 format) to a model and its text encoder. The inputs stay unchanged."""

    display_name = "Load LoRA"
    category = "loaders"
    file_input = ("loras", "lora_name")
    inputs = (
        Socket("model", MODEL),
        Socket("clip", CLIP),
        Choice("lora_name", model_files("loras")),
        Float("strength_model", 1.0, min=-100.0, max=100.0, step=0.01),
        Float("strength_clip", 1.0, min=-100.0, max=100.0, step=0.01),
    )
    outputs = (Output(MODEL), Output(CLIP))

    def run(
        self,
        ctx: Context,
        model: ModelHandle,
        clip: ClipHandle,
        lora_name: str,
        strength_model: float,
        strength_clip: float,
    ) -> tuple[ModelHandle, ClipHandle]:
        if strength_model == 0 and strength_clip == 0:
            return model, clip
        p = _load_lora(ctx, lora_name, model, clip, strength_model, strength_clip)
        new_model = model.with_patches(p.unet) if p.unet else model
        new_clip = clip.with_patches((p.te1, p.te2)[: len(clip.encoders)]) if (p.te1 or p.te2) else clip
        return new_model, new_clip


class LoraLoaderModelOnly(_ModelFileNode):
    """Apply a LoRA to the model only."""

    display_name = "Load LoRA (model only)"
    category = "loaders"
    file_input = ("loras", "lora_name")
    inputs = (
        Socket("model", MODEL),
        Choice("lora_name", model_files("loras")),
        Float("strength_model", 1.0, min=-100.0, max=100.0, step=0.01),
    )
    outputs = (Output(MODEL),)

    def run(self, ctx: Context, model: ModelHandle, lora_name: str, strength_model: float) -> ModelHandle:
        if strength_model == 0:
            return model
        return model.with_patches(_load_lora(ctx, lora_name, model, None, strength_model, 0.0).unet)
