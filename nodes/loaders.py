"""Loaders: checkpoints, VAEs, LoRAs, and the CLIP layer choice."""

from __future__ import annotations

from typing import Any

from atelier.engine.models.handles import ClipHandle, ModelHandle, VaeHandle
from atelier.engine.models.manager import find_model, list_models, manager_for
from atelier.engine.node import Choice, Context, Float, Int, Node, Output, Socket
from atelier.engine.sampling import ModelSampling


def _fingerprint(kind: str, name: str) -> str:
    from atelier.engine.models.checkpoint import file_hash

    return file_hash(find_model(kind, name)).sha256


def handles_from_checkpoint(loaded: Any, name: str = "") -> tuple[ModelHandle, ClipHandle, VaeHandle | None]:
    """MODEL, CLIP and VAE handles over a loaded checkpoint's modules."""
    from atelier.engine.models.text_encode import TextEncoderSpec

    info = loaded.info
    prediction = "v_prediction" if info.prediction == "v" else "eps"
    model = ModelHandle(
        unet=loaded.unet,
        sampling=ModelSampling.discrete(prediction),
        family=info.family,
        name=name,
        sha256=loaded.sha256,
        latent_scale=info.vae_scaling_factor,
    )
    specs = []
    for te_info, module, tok in zip(info.text_encoders, loaded.text_encoders, loaded.tokenizers, strict=True):
        pad = tok.convert_tokens_to_ids(te_info.pad_token)
        specs.append(
            TextEncoderSpec(
                module,
                tok,
                layer=te_info.default_layer,
                layer_norm=te_info.final_layer_norm,
                pooled=info.family == "sdxl" and te_info.model_class == "CLIPTextModelWithProjection",
                pad_token_id=pad,
            )
        )
    clip = ClipHandle(encoders=tuple(specs), family=info.family)
    vae = None
    if loaded.vae is not None:
        vae = VaeHandle(loaded.vae, name=name)
    return model, clip, vae


class CheckpointLoaderSimple(Node):
    """Load a Stable Diffusion checkpoint (SD1.x, SD2.x, SDXL; single file or diffusers folder)."""

    display_name = "Load Checkpoint"
    category = "loaders"
    inputs = (Choice("ckpt_name", lambda: list_models("checkpoints")),)
    outputs = (Output("MODEL"), Output("CLIP"), Output("VAE"))

    @classmethod
    def fingerprint(cls, ctx: Context, ckpt_name: str) -> str:
        return _fingerprint("checkpoints", ckpt_name)

    def run(self, ctx: Context, ckpt_name: str) -> tuple[ModelHandle, ClipHandle, VaeHandle | None]:
        path = find_model("checkpoints", ckpt_name)
        loaded = manager_for(ctx).load_checkpoint(path)
        model, clip, vae = handles_from_checkpoint(loaded, ckpt_name)
        if vae is None:
            raise ValueError(f"checkpoint {ckpt_name!r} has no VAE weights; load one with VAELoader")
        return model, clip, vae


class VAELoader(Node):
    """Load a standalone VAE file."""

    display_name = "Load VAE"
    category = "loaders"
    inputs = (Choice("vae_name", lambda: list_models("vae")),)
    outputs = (Output("VAE"),)

    @classmethod
    def fingerprint(cls, ctx: Context, vae_name: str) -> str:
        return _fingerprint("vae", vae_name)

    def run(self, ctx: Context, vae_name: str) -> VaeHandle:
        from atelier.engine.models.checkpoint import load_vae

        mm = manager_for(ctx)
        return VaeHandle(
            load_vae(find_model("vae", vae_name), device=mm.device, dtype=mm.dtype), name=vae_name
        )


class CLIPSetLastLayer(Node):
    """Condition on an earlier layer of the text encoder (-1 last, -2 penultimate: "clip skip")."""

    category = "conditioning"
    inputs = (Socket("clip", "CLIP"), Int("stop_at_clip_layer", -1, min=-24, max=-1))
    outputs = (Output("CLIP"),)

    def run(self, ctx: Context, clip: ClipHandle, stop_at_clip_layer: int) -> ClipHandle:
        return clip.with_layer(stop_at_clip_layer)


def _load_lora(
    ctx: Context, lora_name: str, model: ModelHandle | None, clip: ClipHandle | None, sm: float, sc: float
):
    from atelier.engine.models.lora import load_lora

    path = find_model("loras", lora_name)
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


class LoraLoader(Node):
    """Apply a LoRA (kohya/A1111 format) to a model and its text encoder. The inputs stay unchanged."""

    display_name = "Load LoRA"
    category = "loaders"
    inputs = (
        Socket("model", "MODEL"),
        Socket("clip", "CLIP"),
        Choice("lora_name", lambda: list_models("loras")),
        Float("strength_model", 1.0, min=-100.0, max=100.0, step=0.01),
        Float("strength_clip", 1.0, min=-100.0, max=100.0, step=0.01),
    )
    outputs = (Output("MODEL"), Output("CLIP"))

    @classmethod
    def fingerprint(cls, ctx: Context, lora_name: str, **_: Any) -> str:
        return _fingerprint("loras", lora_name)

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


class LoraLoaderModelOnly(Node):
    """Apply a LoRA to the model only."""

    display_name = "Load LoRA (model only)"
    category = "loaders"
    inputs = (
        Socket("model", "MODEL"),
        Choice("lora_name", lambda: list_models("loras")),
        Float("strength_model", 1.0, min=-100.0, max=100.0, step=0.01),
    )
    outputs = (Output("MODEL"),)

    @classmethod
    def fingerprint(cls, ctx: Context, lora_name: str, **_: Any) -> str:
        return _fingerprint("loras", lora_name)

    def run(self, ctx: Context, model: ModelHandle, lora_name: str, strength_model: float) -> ModelHandle:
        if strength_model == 0:
            return model
        return model.with_patches(_load_lora(ctx, lora_name, model, None, strength_model, 0.0).unet)
