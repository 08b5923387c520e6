"""IP-Adapter files (``models/ipadapter``): an image projection and per cross-attention layer key/value
projections for image tokens (decoupled cross-attention).

The layout is the original one (h94/IP-Adapter): a ``.bin`` torch pickle holding ``{"image_proj": {...},
"ip_adapter": {...}}`` (read with ``torch.load(weights_only=True)``), or a ``.safetensors`` file with the
same names flattened (``image_proj.proj.weight``, ``ip_adapter.1.to_k_ip.weight``). ``ip_adapter`` numbers
the UNet's attention layers in diffusers' order (``attn1`` even, ``attn2`` odd) and holds
``{n}.to_k_ip.weight`` / ``{n}.to_v_ip.weight`` for every cross-attention layer. The image projection is
converted to diffusers' module by diffusers' own converter:

- plain (``ip-adapter_sd15``, ``ip-adapter_sdxl``, ``..._vit-h``): ``proj`` + ``norm`` ->
  ``ImageProjection``, 4 tokens from the CLIP image embeds;
- Plus / Plus-Face (``ip-adapter-plus_sd15``, ``ip-adapter-plus-face_sdxl_vit-h``, ...): the perceiver
  resampler (``latents``, ``proj_in``, ``layers.*``) -> ``IPAdapterPlusImageProjection``, 16 tokens from the
  encoder's penultimate hidden states;
- Full-Face (``proj.0`` ... ``proj.3``) -> ``IPAdapterFullImageProjection`` on the hidden states.

FaceID files are recognised (their projection reads an insightface face embedding, not CLIP's) and refused
with an error that says what they need. Which model and encoder a file fits is checked against their shapes
(:func:`check_fits`), naming the file and what does not match.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from atelier.engine.model_loader import LoadOptions

from .attention import attention_layers
from .errors import CheckpointError
from .files import SAFETENSORS_SUFFIXES, load_state_dict_file, read_torch_file

__all__ = [
    "IPAdapterKind",
    "IPAdapterModel",
    "IPAdapterSource",
    "check_fits",
    "ipadapter_kind",
    "load_ipadapter",
    "read_ipadapter",
]

IPAdapterKind = Literal["plain", "plus", "full", "faceid", "faceid_plus"]
FACEID_HELP = (
    "is a FaceID IP-Adapter: its image projection reads an insightface face-recognition embedding "
    "(models/insightface, e.g. buffalo_l / antelopev2), which Atelier cannot compute (insightface and its "
    "models are not available); use an IP-Adapter Plus-Face file (ip-adapter-plus-face_*) with a CLIP vision "
    "encoder instead"
)


@dataclass(frozen=True)
class IPAdapterSource:
    """The raw parts of a file: its image projection and its per-layer key/value weights."""

    image_proj: dict[str, Tensor]
    ip_adapter: dict[str, Tensor]


def read_ipadapter(path: str | Path) -> IPAdapterSource:
    """The two state dicts of an IP-Adapter file, ``.bin``/``.pt`` (weights only) or ``.safetensors``."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "file not found")
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        flat = load_state_dict_file(path)
        parts: dict[str, dict[str, Tensor]] = {"image_proj": {}, "ip_adapter": {}}
        for key, value in flat.items():
            head, _, rest = key.partition(".")
            if head in parts and rest:
                parts[head][rest] = value
    else:
        data = read_torch_file(path)
        if not isinstance(data, dict):
            raise CheckpointError(path, f"holds a {type(data).__name__}, not an IP-Adapter dict")
        parts = {
            k: {str(n): t for n, t in v.items() if isinstance(t, Tensor)}
            for k, v in data.items()
            if k in ("image_proj", "ip_adapter") and isinstance(v, dict)
        }
    if not parts.get("image_proj") or not parts.get("ip_adapter"):
        raise CheckpointError(
            path,
            "not an IP-Adapter file (expected image_proj.* and ip_adapter.* weights, as h94/IP-Adapter's)",
        )
    return IPAdapterSource(parts["image_proj"], parts["ip_adapter"])


def ipadapter_kind(image_proj: Mapping[str, Tensor]) -> IPAdapterKind:
    """Which image projection a file has (see the module's docstring)."""
    if "proj.weight" in image_proj:
        return "plain"
    if "proj.3.weight" in image_proj:
        return "full"
    if "perceiver_resampler.proj_in.weight" in image_proj:
        return "faceid_plus"
    if "norm.weight" in image_proj:
        return "faceid"
    if "latents" in image_proj and "proj_in.weight" in image_proj:
        return "plus"
    raise ValueError("unknown image projection (none of proj, proj.3, latents/proj_in, norm)")


@dataclass(frozen=True, eq=False)
class IPAdapterModel:
    """IPADAPTER: a loaded IP-Adapter (image projection module + per cross-attention layer weights).

    ``to_k`` / ``to_v`` hold the key and value weights [inner, cross_attention_dim] of the UNet's
    cross-attention layers in order; ``embed_dim`` is the CLIP width it reads (the projected image embeds
    for ``plain``, the hidden states for the others)."""

    name: str
    kind: IPAdapterKind
    image_proj: torch.nn.Module | None
    to_k: tuple[Tensor, ...]
    to_v: tuple[Tensor, ...]
    cross_attention_dim: int
    embed_dim: int
    tokens: int

    @property
    def reads_hidden_states(self) -> bool:
        """Whether the projection reads the encoder's penultimate hidden states (else the image embeds)."""
        return self.kind != "plain"

    @property
    def family_hint(self) -> str:
        """A readable guess of the model family it was trained for (from the text-embedding width)."""
        return {768: "SD1.x", 1024: "SD2.x", 2048: "SDXL"}.get(self.cross_attention_dim, "unknown family")

    def __atelier_nbytes__(self) -> int:
        n = sum(t.numel() * t.element_size() for t in (*self.to_k, *self.to_v))
        if self.image_proj is not None:
            n += sum(p.numel() * p.element_size() for p in self.image_proj.parameters())
        return n

    def project(self, clip_features: Tensor) -> Tensor:
        """Image tokens [B, tokens, cross_attention_dim] from CLIP features ([B, embed] or [B, T, hidden])."""
        assert self.image_proj is not None
        p = next(self.image_proj.parameters())
        with torch.inference_mode():
            return self.image_proj(clip_features.to(p.device, p.dtype)).float()


def _convert_image_proj(source: IPAdapterSource, kind: IPAdapterKind, path: Path) -> torch.nn.Module:
    # diffusers' converter only reads the state dict (``self`` is unused when not loading on the meta device)
    from atelier.engine.models.libraries import UNet2DConditionLoadersMixin

    try:
        return UNet2DConditionLoadersMixin._convert_ip_adapter_image_proj_to_diffusers(
            None,  # type: ignore[arg-type]
            dict(source.image_proj),
            low_cpu_mem_usage=False,
        )
    except Exception as exc:
        raise CheckpointError(
            path, f"IP-Adapter {kind} image projection: {type(exc).__name__}: {exc}"
        ) from None


def load_ipadapter(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> IPAdapterModel:
    """Read and convert an IP-Adapter file. FaceID files load (so that the node can say what they need)
    without an image projection."""
    path = Path(path)
    source = read_ipadapter(path)
    try:
        kind = ipadapter_kind(source.image_proj)
    except ValueError as exc:
        raise CheckpointError(path, f"IP-Adapter: {exc}") from None
    ids = sorted({int(k.split(".")[0]) for k in source.ip_adapter if k.endswith(".to_k_ip.weight")})
    if not ids:
        raise CheckpointError(path, "IP-Adapter without any N.to_k_ip.weight / N.to_v_ip.weight")
    missing = [n for n in ids if f"{n}.to_v_ip.weight" not in source.ip_adapter]
    if missing:
        raise CheckpointError(path, f"IP-Adapter layer {missing[0]} has to_k_ip but no to_v_ip weight")
    target = torch.device(device)
    wdtype = dtype or torch.float32
    to_k = tuple(source.ip_adapter[f"{n}.to_k_ip.weight"].to(target, wdtype) for n in ids)
    to_v = tuple(source.ip_adapter[f"{n}.to_v_ip.weight"].to(target, wdtype) for n in ids)
    cross = int(to_k[0].shape[1])
    image_proj: torch.nn.Module | None = None
    embed_dim = tokens = 0
    if kind in ("plain", "plus", "full"):
        image_proj = _convert_image_proj(source, kind, path).to(target, wdtype).eval().requires_grad_(False)
        ip = source.image_proj
        if kind == "plain":
            embed_dim, tokens = int(ip["proj.weight"].shape[1]), int(ip["proj.weight"].shape[0]) // cross
        elif kind == "plus":
            embed_dim, tokens = int(ip["proj_in.weight"].shape[1]), int(ip["latents"].shape[1])
        else:
            embed_dim, tokens = int(ip["proj.0.weight"].shape[1]), 257
    return IPAdapterModel(path.name, kind, image_proj, to_k, to_v, cross, embed_dim, tokens)


def ipadapter_loader(path: Path, options: LoadOptions) -> IPAdapterModel:
    """``ctx.models`` loader of an IP-Adapter file."""
    from .build import resolve_dtype

    return load_ipadapter(path, device=options.device, dtype=resolve_dtype(options.device, options.dtype))


def cross_attention_layers(unet: Any) -> list[tuple[str, Any]]:
    """The UNet's cross-attention layers in the order IP-Adapter files number them."""
    return [(n, m) for n, m in attention_layers(unet) if n.endswith(".attn2")]


def check_fits(adapter: IPAdapterModel, unet: Any, family: str, clip_vision: Any | None = None) -> str | None:
    """Why ``adapter`` cannot apply to this UNet (``family``) or read this CLIP vision encoder, or None."""
    if adapter.kind in ("faceid", "faceid_plus"):
        return f"{adapter.name} {FACEID_HELP}"
    layers = cross_attention_layers(unet)
    unet_cross = int(unet.config.cross_attention_dim)
    if adapter.cross_attention_dim != unet_cross or len(layers) != len(adapter.to_k):
        return (
            f"IP-Adapter {adapter.name} is for {adapter.family_hint} (text width {adapter.cross_attention_dim}, "
            f"{len(adapter.to_k)} cross-attention layers) but the model is {family} (text width {unet_cross}, "
            f"{len(layers)} cross-attention layers)"
        )
    for (name, attn), k in zip(layers, adapter.to_k, strict=True):
        if int(attn.to_k.out_features) != int(k.shape[0]):
            return (
                f"IP-Adapter {adapter.name} layer {name}: key width {int(k.shape[0])} but the model's is "
                f"{int(attn.to_k.out_features)} (an IP-Adapter of another model family)"
            )
    if clip_vision is not None:
        width = clip_vision.hidden_size if adapter.reads_hidden_states else clip_vision.projection_dim
        what = "hidden width" if adapter.reads_hidden_states else "image-embed width"
        if width != adapter.embed_dim:
            return (
                f"IP-Adapter {adapter.name} ({adapter.kind}) reads CLIP vision features of width "
                f"{adapter.embed_dim}, but CLIP vision {clip_vision.name} has {what} {width} (ip-adapter_sdxl "
                "wants ViT-bigG, *_vit-h and SD1.x adapters ViT-H)"
            )
    return None


def image_tokens(adapter: IPAdapterModel, clip_vision: Any, image: Tensor) -> tuple[Tensor, Tensor]:
    """The adapter's image tokens for IMAGE [N, H, W, C] and for "no image", each [1, N * tokens, C]
    (several reference images are joined along the tokens). "No image" is zero image embeds for the plain
    projection and the features of black images for the ones reading hidden states (as ComfyUI's)."""
    if adapter.image_proj is None:
        raise ValueError(f"{adapter.name} {FACEID_HELP}")
    out = clip_vision.encode(image)
    if adapter.reads_hidden_states:
        feats = out.penultimate_hidden_states
        size = clip_vision.image_size
        black = torch.zeros(image.shape[0], size, size, 3, device=image.device)
        none = clip_vision.encode(black).penultimate_hidden_states
    else:
        feats = out.image_embeds
        none = torch.zeros_like(feats)
    cond, uncond = adapter.project(feats), adapter.project(none)
    return cond.reshape(1, -1, cond.shape[-1]), uncond.reshape(1, -1, uncond.shape[-1])
