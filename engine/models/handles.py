"""MODEL, CLIP and VAE handles: immutable views of loaded modules.

A handle shares its modules with every other handle made from the same checkpoint. Applying a LoRA gives
a new handle carrying weight patches; the patches are applied in place only for the duration of a use
(``with handle.session():``) and the exact original weights are restored afterwards, so branches with and
without a LoRA are both right whatever order they run in.

The MODEL's network call goes through a chain of wrappers (``with_wrapper``), and its guided prediction
through CFG functions (``with_cfg_function``): the places where ControlNet residuals, image-prompt
attention, regional prompting and FreeU/PAG-style patches attach, each giving a new handle, never editing
the UNet call or a shared object. Wrappers the model itself needs (an inpainting UNet's extra input
channels, ``engine/models/inpaint.py``) sit innermost, so patches see the call as for any model. A
denoise-mask function (``with_denoise_mask_function``) changes a masked run's noise mask per step.

Results stay on the device they were computed on; only nodes that leave the graph copy to the host.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from atelier.engine.model_loader import LoadOptions, ModelLoader
from atelier.engine.sampling import ModelSampling
from atelier.engine.sampling.conditioning import CondEntry
from atelier.engine.sampling.guidance import (
    ApplyModel,
    CfgFunction,
    DenoiseMaskFunction,
    ModelCall,
    ModelWrapper,
)

from .attention import AttentionPatch, attention_patched
from .controlnet import INTRABLOCK, control_wrapper
from .embeddings import EmbeddingCache, EmbeddingSource, EncoderSlot, encoder_keys, resolve_prompt_embeddings
from .fast_path import decode_checked, fast_unet, prepare_checkpoint, prepare_vae
from .info import SDXL_FAMILIES
from .inpaint import InpaintConcat
from .interrupts import install_interrupt_points, unet_blocks, vae_blocks
from .patches import PatchSet, WeightPatch, merge_patches, patched
from .text_encode import TextEncoderSpec, encode_prompt, encode_sdxl
from .unclip import refuse_unclip, unclip_wrappers

EMPTY: Mapping[str, tuple[WeightPatch, ...]] = {}


def module_bytes(module: Any) -> int:
    """Bytes of a module's parameters and buffers."""
    try:
        return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    except Exception:
        return 0


@dataclass(frozen=True, eq=False)
class ModelHandle:
    """MODEL: a denoising UNet with its noise schedule and weight patches."""

    unet: Any  # diffusers UNet2DConditionModel
    sampling: ModelSampling
    family: str
    name: str = ""
    patches: PatchSet = field(default_factory=dict)
    #: LATENT holds raw VAE latents (as ComfyUI's); the model works on latents times this factor.
    latent_scale: float = 0.18215
    #: around the network call, outermost first
    wrappers: tuple[ModelWrapper, ...] = ()
    #: applied to the guided prediction, in order
    cfg_functions: tuple[CfgFunction, ...] = ()
    #: wrappers the model itself needs, inside every patch's (an inpainting UNet's concatenated inputs)
    core_wrappers: tuple[ModelWrapper, ...] = ()
    #: the noise mask of each step of a masked run (Differential Diffusion); None keeps the latent's
    denoise_mask_function: DenoiseMaskFunction | None = None
    #: applied to the inputs of every transformer attention layer's q/k/v projections (hypernetworks)
    attention_patches: tuple[AttentionPatch, ...] = ()

    def __post_init__(self) -> None:
        install_interrupt_points(unet_blocks(self.unet))  # once per module: a cancel lands mid-forward

    def process_in(self, latent: Tensor) -> Tensor:
        return latent * self.latent_scale

    def process_out(self, latent: Tensor) -> Tensor:
        return latent / self.latent_scale

    def __atelier_nbytes__(self) -> int:
        # Counted against the output cache's budget, so that cached handles of models nobody uses any more
        # are evicted and their weights freed (the model manager keeps the recently used ones loaded).
        return module_bytes(self.unet)

    def __atelier_modules__(self) -> Iterator[tuple[str, Any]]:
        """What a node handed this MODEL needs on the device (engine/memory.py): the UNet and what the
        patches attached to its call carry (a ControlNet, an IP-Adapter's modules)."""
        yield "unet", self.unet
        yield "wrappers", (*self.core_wrappers, *self.wrappers, *self.cfg_functions, *self.attention_patches)

    @property
    def needs_pooled(self) -> bool:
        return self.family in SDXL_FAMILIES

    def size_ids(self, cond: CondEntry, latent_h: int, latent_w: int, negative: bool) -> list[float]:
        """The size conditioning values an SDXL-family UNet embeds for ``cond``: SDXL's six sizes, or the
        refiner's height, width, crop and aesthetic score (ComfyUI's defaults: 768 x 768, 6 for a
        positive prompt and 2.5 for a negative one)."""
        if self.family != "sdxl_refiner":
            return cond.time_ids(latent_h, latent_w)
        size = cond.size
        if size is None:
            return [768.0, 768.0, 0.0, 0.0, 2.5 if negative else 6.0]
        score = size.aesthetic_score if size.aesthetic_score is not None else (2.5 if negative else 6.0)
        return [float(size.height), float(size.width), float(size.crop_h), float(size.crop_w), float(score)]

    @property
    def in_channels(self) -> int:
        """Channels of the network's input: the latent's, plus 5 for inpainting models (mask + image)."""
        return int(self.unet.config.in_channels)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def timestep(self, sigma: Tensor) -> Tensor:
        return self.sampling.timestep_discrete(sigma)

    def apply_model(self, call: ModelCall) -> Tensor:
        """The network's raw output for a call, through the wrapper chain."""
        fn: ApplyModel = self._forward
        control = control_wrapper(self.unet.config, self.family, self.sampling, self.unet, self.patches)
        for wrapper in reversed((*self.wrappers, control, *self.core_wrappers)):
            fn = _bind(wrapper, fn)
        return fn(call)

    def _forward(self, call: ModelCall) -> Tensor:
        x = call.x
        dtype = self.dtype
        kwargs: dict[str, Any] = dict(call.unet_kwargs)
        if "class_labels" not in kwargs:
            refuse_unclip(call.entries, self.name)  # unCLIP images reaching a model that takes none
        if kwargs.get(INTRABLOCK) is not None:  # diffusers pops from it: a fresh list each forward
            kwargs[INTRABLOCK] = list(kwargs[INTRABLOCK])
        if call.added is not None:
            kwargs["added_cond_kwargs"] = {k: v.to(x.device, dtype) for k, v in call.added.items()}
        fast = fast_unet(self.unet)
        if fast is not None:  # the fast path (fast_path.py): channels_last, compiled graphs
            added = kwargs.pop("added_cond_kwargs", None)
            plain = not self.attention_patches
            with torch.inference_mode():
                context = call.context.to(x.device, dtype)
                out = fast(x.to(dtype), call.timestep, context, added, plain=plain, **kwargs)
            return out.float()
        with torch.inference_mode():
            out = self.unet(
                x.to(dtype),
                call.timestep,
                encoder_hidden_states=call.context.to(x.device, dtype),
                return_dict=False,
                **kwargs,
            )[0]
        return out.float()

    def with_wrapper(self, wrapper: ModelWrapper) -> ModelHandle:
        """A handle whose network calls also go through ``wrapper`` (innermost of those already there)."""
        return replace(self, wrappers=(*self.wrappers, wrapper))

    def with_cfg_function(self, fn: CfgFunction) -> ModelHandle:
        return replace(self, cfg_functions=(*self.cfg_functions, fn))

    def with_denoise_mask_function(self, fn: DenoiseMaskFunction | None) -> ModelHandle:
        """A handle whose masked runs use ``fn`` for each step's noise mask (replacing any earlier one,
        as in ComfyUI: one function per model)."""
        return replace(self, denoise_mask_function=fn)

    @contextmanager
    def session(self) -> Iterator[ModelHandle]:
        """Use the handle: its patches are applied for the duration of the block."""
        with patched(self.unet, self.patches), attention_patched(self.unet, self.attention_patches):
            yield self

    def with_patches(self, patches: PatchSet) -> ModelHandle:
        return replace(self, patches=merge_patches(self.patches, patches))

    def with_attention_patch(self, patch: AttentionPatch) -> ModelHandle:
        """A handle whose attention layers also apply ``patch`` (after those already there)."""
        return replace(self, attention_patches=(*self.attention_patches, patch))

    def with_sampling(self, sampling: ModelSampling) -> ModelHandle:
        return replace(self, sampling=sampling)


@dataclass(frozen=True, eq=False)
class ClipHandle:
    """CLIP: one (SD1/SD2) or two (SDXL) text encoders with tokenizers, a layer choice and patches.

    ``embedding_cache`` keeps the textual-inversion files its prompts used (read once per file version);
    handles derived from this one (``with_layer``, ``with_patches``) share it."""

    encoders: tuple[TextEncoderSpec, ...]
    family: str
    clip_skip: int | None = None
    patches: tuple[PatchSet, ...] = ()
    embedding_cache: EmbeddingCache = field(default_factory=EmbeddingCache, repr=False)

    def __atelier_nbytes__(self) -> int:
        return sum(module_bytes(e.model) for e in self.encoders)

    def __atelier_modules__(self) -> Iterator[tuple[str, Any]]:
        for i, e in enumerate(self.encoders):
            yield f"text_encoders[{i}]", e.model

    @contextmanager
    def session(self) -> Iterator[ClipHandle]:
        with ExitStack() as stack:
            for spec, p in zip(self.encoders, self.patches, strict=False):
                if p:
                    stack.enter_context(patched(spec.model, p))
            yield self

    @property
    def embedding_slots(self) -> tuple[EncoderSlot, ...]:
        """What an embedding must match per encoder: file key (``clip_l``, ``clip_g``) and width."""
        keys = encoder_keys(self.family, len(self.encoders))
        return tuple(EncoderSlot(k, e.width) for k, e in zip(keys, self.encoders, strict=True))

    def encode(self, text: str, embeddings: EmbeddingSource | None = None) -> tuple[Tensor, Tensor | None]:
        """Encode a prompt; ``embeddings`` resolves its ``embedding:NAME`` references (an
        ``EmbeddingLibrary`` over the engine's folders). A reference without a source is an error."""
        rows = resolve_prompt_embeddings([text] * len(self.encoders), self.embedding_slots, embeddings)
        with self.session():
            return encode_prompt(text, list(self.encoders), clip_skip=self.clip_skip, embeddings=rows)

    def encode_sdxl(
        self, text_g: str, text_l: str, embeddings: EmbeddingSource | None = None
    ) -> tuple[Tensor, Tensor | None]:
        if len(self.encoders) != 2:
            raise ValueError(
                f"CLIPTextEncodeSDXL needs SDXL's two text encoders; this CLIP ({self.family}) has one"
            )
        rows = resolve_prompt_embeddings([text_l, text_g], self.embedding_slots, embeddings)
        with self.session():
            return encode_sdxl(
                text_g, text_l, tuple(self.encoders), clip_skip=self.clip_skip, embeddings=rows
            )

    def with_layer(self, layer: int) -> ClipHandle:
        return replace(self, clip_skip=layer)

    def with_patches(self, per_encoder: tuple[PatchSet, ...]) -> ClipHandle:
        current = self.patches or tuple({} for _ in self.encoders)
        merged = tuple(merge_patches(a, b) if b else a for a, b in zip(current, per_encoder, strict=False))
        return replace(self, patches=merged)


@dataclass(frozen=True, eq=False)
class VaeHandle:
    """VAE: encode IMAGE [B,H,W,C] in 0..1 to raw latents and back (the MODEL scales latents itself)."""

    vae: Any  # diffusers AutoencoderKL
    name: str = ""

    def __post_init__(self) -> None:
        install_interrupt_points(vae_blocks(self.vae))

    def __atelier_nbytes__(self) -> int:
        return module_bytes(self.vae)

    def __atelier_modules__(self) -> Iterator[tuple[str, Any]]:
        yield "vae", self.vae

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def decode(self, latent: Tensor) -> Tensor:
        def raw(z: Tensor) -> Tensor:
            with torch.inference_mode():
                return self.vae.decode(z.to(self.device, self.dtype), return_dict=False)[0]

        x = decode_checked(self.vae, raw, latent)  # an fp16 VAE that overflows falls back (fast_path.py)
        return ((x.float() + 1.0) / 2.0).clamp(0, 1).movedim(1, -1)

    def encode(self, image: Tensor) -> Tensor:
        x = image[..., :3].movedim(-1, 1).to(self.device, self.dtype) * 2.0 - 1.0
        with torch.inference_mode():
            dist = self.vae.encode(x, return_dict=False)[0]
        z = dist.mode() if hasattr(dist, "mode") else dist
        return z.float()

    def decode_tiled(self, latent: Tensor, tile: int = 64, overlap: int = 16) -> Tensor:
        """Decode in overlapping latent tiles blended linearly (tile and overlap in latent cells)."""
        f = self.downscale
        return _tiled(latent, tile, overlap, f, self.decode, out_channels=3, channels_last=True)

    def encode_tiled(self, image: Tensor, tile: int = 512, overlap: int = 64) -> Tensor:
        """Encode in overlapping pixel tiles blended linearly (tile and overlap in pixels)."""
        f = self.downscale
        x = image[..., :3].movedim(-1, 1)
        lat = _tiled(x, tile, overlap, 1.0 / f, lambda t: self.encode(t.movedim(1, -1)), out_channels=None)
        return lat


def _bind(wrapper: ModelWrapper, call_next: ApplyModel) -> ApplyModel:
    def call(c: ModelCall) -> Tensor:
        return wrapper(call_next, c)

    return call


def _tiled(
    x: Tensor,
    tile: int,
    overlap: int,
    scale: float,
    fn: Any,
    out_channels: int | None,
    channels_last: bool = False,
) -> Tensor:
    """Run ``fn`` over overlapping tiles of ``x`` [B,C,H,W] and blend the results (scaled by ``scale``)."""
    b, _, h, w = x.shape
    tile = max(1, min(tile, max(h, w)))
    overlap = max(0, min(overlap, tile // 2))
    stride = max(1, tile - overlap)
    ys = list(range(0, max(h - tile, 0) + 1, stride))
    xs = list(range(0, max(w - tile, 0) + 1, stride))
    if ys[-1] + tile < h:
        ys.append(h - tile)
    if xs[-1] + tile < w:
        xs.append(w - tile)
    out: Tensor | None = None
    weight: Tensor | None = None
    for y0 in ys:
        for x0 in xs:
            th, tw = min(tile, h - y0), min(tile, w - x0)
            piece = fn(x[:, :, y0 : y0 + th, x0 : x0 + tw])
            if channels_last:
                piece = piece.movedim(-1, 1)
            piece = piece.float()
            oh, ow = round(h * scale), round(w * scale)
            if out is None:  # the result lives where the tiles are computed
                out = torch.zeros(b, piece.shape[1], oh, ow, device=piece.device)
                weight = torch.zeros(1, 1, oh, ow, device=piece.device)
            py, px = round(y0 * scale), round(x0 * scale)
            ph, pw = piece.shape[-2:]
            ramp = _ramp(
                ph, pw, round(overlap * scale), top=y0 > 0, left=x0 > 0, bottom=y0 + th < h, right=x0 + tw < w
            ).to(piece.device)
            out[:, :, py : py + ph, px : px + pw] += piece * ramp
            weight[:, :, py : py + ph, px : px + pw] += ramp  # type: ignore[index]
    assert out is not None and weight is not None
    result = out / weight.clamp_min(1e-8)
    return result.movedim(1, -1) if channels_last else result


def _ramp(h: int, w: int, overlap: int, *, top: bool, left: bool, bottom: bool, right: bool) -> Tensor:
    wy = torch.ones(h)
    wx = torch.ones(w)
    if overlap > 0:
        r = torch.linspace(0.0, 1.0, overlap + 2)[1:-1]
        n = min(overlap, h)
        if top:
            wy[:n] = torch.minimum(wy[:n], r[:n])
        if bottom:
            wy[-n:] = torch.minimum(wy[-n:], r[:n].flip(0))
        n = min(overlap, w)
        if left:
            wx[:n] = torch.minimum(wx[:n], r[:n])
        if right:
            wx[-n:] = torch.minimum(wx[-n:], r[:n].flip(0))
    return (wy[:, None] * wx[None, :])[None, None]


# -- making handles from model files (what loader nodes call through ``ctx.models``) -----------------


def vae_dtype(options: LoadOptions) -> torch.dtype | None:
    """fp16 VAEs can overflow (SDXL's notably). With the fast path the VAE loads in the weights' dtype and
    an fp16 one that gives NaN/inf falls back on its own (fast_path.decode_checked); without it, on CUDA it
    decodes in bf16 where supported, else fp32."""
    if not str(options.device).startswith("cuda") or getattr(options, "fast", None) is not None:
        return options.dtype
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32


def checkpoint_loader(path: Path, options: LoadOptions) -> Any:
    """``ctx.models`` loader of a checkpoint's modules (no content hash: provenance takes it lazily)."""
    from .checkpoint import load_checkpoint

    loaded = load_checkpoint(
        path, device=options.device, dtype=options.dtype, vae_dtype=vae_dtype(options), compute_hash=False
    )
    return prepare_checkpoint(loaded, getattr(options, "fast", None))


def vae_loader(path: Path, options: LoadOptions) -> Any:
    from .checkpoint import load_vae

    vae = load_vae(path, device=options.device, dtype=vae_dtype(options))
    fast = getattr(options, "fast", None)
    if fast is not None:
        prepare_vae(vae, fast)
    return vae


def handles_from_checkpoint(loaded: Any, name: str = "") -> tuple[ModelHandle, ClipHandle, VaeHandle | None]:
    """MODEL, CLIP and VAE handles over a loaded checkpoint's modules."""
    info = loaded.info
    prediction = "v_prediction" if info.prediction == "v" else "eps"
    model = ModelHandle(
        unet=loaded.unet,
        sampling=ModelSampling.discrete(prediction),
        family=info.family,
        name=name,
        latent_scale=info.vae_scaling_factor,
        core_wrappers=(
            *((InpaintConcat(info.vae_scaling_factor),) if info.is_inpaint else ()),
            *unclip_wrappers(loaded, name),
        ),
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
                pooled=info.family in SDXL_FAMILIES and te_info.model_class == "CLIPTextModelWithProjection",
                pad_token_id=pad,
            )
        )
    clip = ClipHandle(encoders=tuple(specs), family=info.family)
    vae = VaeHandle(loaded.vae, name=name) if loaded.vae is not None else None
    return model, clip, vae


def load_checkpoint_handles(
    models: ModelLoader, path: Path, name: str = ""
) -> tuple[ModelHandle, ClipHandle, VaeHandle | None]:
    """MODEL, CLIP and VAE handles of a checkpoint file, loaded once per file version by ``models``."""
    return handles_from_checkpoint(models.load(path, checkpoint_loader), name or path.name)


def load_vae_handle(models: ModelLoader, path: Path, name: str = "") -> VaeHandle:
    return VaeHandle(models.load(path, vae_loader), name=name or path.name)
