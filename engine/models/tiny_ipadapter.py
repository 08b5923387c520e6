"""Tiny random-weight CLIP vision encoders and IP-Adapters, written in the layouts of the real files.

``write_tiny_clip_vision`` writes a ``CLIPVisionModelWithProjection`` in the Hugging Face layout
(``vision_model.*``, ``visual_projection.weight``) that ``CLIPVisionLoader`` reads from ``models/clip_vision``;
``write_tiny_ipadapter`` writes an IP-Adapter in h94/IP-Adapter's original layout (``image_proj`` /
``ip_adapter``, as a ``.bin`` torch pickle or flattened ``.safetensors``) for a tiny UNet of ``tiny.py``:
plain (``proj`` + ``norm``), Plus (the perceiver resampler, 16 queries, depth 4, 64-wide heads), Full-Face
or FaceID (whose projection reads an insightface embedding). Both are deterministic in their seed and load
through the same code as the real files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file

from atelier.engine.models.libraries import CLIPVisionConfig, CLIPVisionModelWithProjection

from .attention import attention_layers
from .build import build_empty, empty_unet
from .info import family_config
from .tiny import _TINY_UNET, TinyArch, randomize

__all__ = [
    "TINY_CLIP_VISION",
    "ipadapter_state",
    "save_ipadapter",
    "tiny_ipadapter_state",
    "write_tiny_clip_vision",
    "write_tiny_ipadapter",
    "write_tiny_style_model",
]

#: the tiny encoder's shape: 64 wide (one 64-wide head), 3 layers, 32-pixel patches over 224 (49 + 1 tokens)
TINY_CLIP_VISION = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 3,
    "num_attention_heads": 1,
    "patch_size": 32,
    "image_size": 224,
    "projection_dim": 48,
    "hidden_act": "gelu",
}


def write_tiny_clip_vision(out: str | Path, seed: int = 0, **overrides: int | str) -> Path:
    """A tiny CLIP vision encoder as ``.safetensors`` in the Hugging Face layout."""
    out = Path(out)
    config = CLIPVisionConfig(**{**TINY_CLIP_VISION, **overrides})
    model = build_empty(lambda: CLIPVisionModelWithProjection(config))
    model = randomize(model, seed=seed, tag="clip_vision", device="cpu", dtype=torch.float32)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata={"format": "pt"})
    return out


def _generator(seed: int, tag: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{tag}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF)


def _linear(g: torch.Generator, out_f: int, in_f: int) -> torch.Tensor:
    return torch.randn(out_f, in_f, generator=g) / in_f**0.5


def _norm(g: torch.Generator, n: int, prefix: str) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.weight": 1.0 + 0.02 * torch.randn(n, generator=g),
        f"{prefix}.bias": 0.02 * torch.randn(n, generator=g),
    }


def _image_proj(
    kind: str, g: torch.Generator, cross: int, embeds: int, hidden: int
) -> dict[str, torch.Tensor]:
    if kind == "plain":  # ImageProjection: 4 tokens from the projected image embeds
        return {
            "proj.weight": _linear(g, 4 * cross, embeds),
            "proj.bias": 0.02 * torch.randn(4 * cross, generator=g),
            **_norm(g, cross, "norm"),
        }
    if kind == "full":  # MLP on the hidden states (257 tokens for ViT-H at 224)
        return {
            "proj.0.weight": _linear(g, hidden, hidden),
            "proj.0.bias": 0.02 * torch.randn(hidden, generator=g),
            "proj.2.weight": _linear(g, cross, hidden),
            "proj.2.bias": 0.02 * torch.randn(cross, generator=g),
            **_norm(g, cross, "proj.3"),
        }
    if kind == "faceid":  # reads a 512-wide insightface embedding
        return {
            "proj.0.weight": _linear(g, 1024, 512),
            "proj.0.bias": 0.02 * torch.randn(1024, generator=g),
            "proj.2.weight": _linear(g, 4 * cross, 1024),
            "proj.2.bias": 0.02 * torch.randn(4 * cross, generator=g),
            **_norm(g, cross, "norm"),
        }
    # Plus: the perceiver resampler of IP-Adapter's resampler.py (dim 64 = one 64-wide head, depth 4)
    dim, inner, queries = 64, 64, 16
    state = {
        "latents": torch.randn(1, queries, dim, generator=g) / dim**0.5,
        "proj_in.weight": _linear(g, dim, hidden),
        "proj_in.bias": 0.02 * torch.randn(dim, generator=g),
        "proj_out.weight": _linear(g, cross, dim),
        "proj_out.bias": 0.02 * torch.randn(cross, generator=g),
        **_norm(g, cross, "norm_out"),
    }
    for i in range(4):
        state.update(_norm(g, dim, f"layers.{i}.0.norm1"))
        state.update(_norm(g, dim, f"layers.{i}.0.norm2"))
        state[f"layers.{i}.0.to_q.weight"] = _linear(g, inner, dim)
        state[f"layers.{i}.0.to_kv.weight"] = _linear(g, 2 * inner, dim)
        state[f"layers.{i}.0.to_out.weight"] = _linear(g, dim, inner)
        state.update(_norm(g, dim, f"layers.{i}.1.0"))
        state[f"layers.{i}.1.1.weight"] = _linear(g, 4 * dim, dim)
        state[f"layers.{i}.1.3.weight"] = _linear(g, dim, 4 * dim)
    return state


def ipadapter_state(
    unet: torch.nn.Module,
    kind: Literal["plain", "plus", "full", "faceid"] = "plain",
    seed: int = 0,
    clip_hidden: int = TINY_CLIP_VISION["hidden_size"],  # type: ignore[assignment]
    clip_projection: int = TINY_CLIP_VISION["projection_dim"],  # type: ignore[assignment]
) -> dict[str, dict[str, torch.Tensor]]:
    """``{"image_proj": ..., "ip_adapter": ...}`` with random weights for ``unet``'s cross-attention layers
    (any diffusers UNet, on the meta device too: only shapes are read)."""
    cross = int(unet.config.cross_attention_dim)  # type: ignore[attr-defined]
    g = _generator(seed, f"ipadapter:{cross}:{kind}")
    image_proj = _image_proj(kind, g, cross, clip_projection, clip_hidden)
    ip_adapter: dict[str, torch.Tensor] = {}
    for n, (name, attn) in enumerate(attention_layers(unet)):
        if name.endswith(".attn2"):
            width = int(attn.to_k.out_features)
            ip_adapter[f"{n}.to_k_ip.weight"] = _linear(g, width, cross)
            ip_adapter[f"{n}.to_v_ip.weight"] = _linear(g, width, cross)
    return {"image_proj": image_proj, "ip_adapter": ip_adapter}


def tiny_ipadapter_state(
    arch: TinyArch,
    kind: Literal["plain", "plus", "full", "faceid"] = "plain",
    seed: int = 0,
    **clip: int,
) -> dict[str, dict[str, torch.Tensor]]:
    """:func:`ipadapter_state` for the tiny UNet of ``arch`` (``tiny.py``)."""
    unet = empty_unet({**family_config(arch, "unet"), **_TINY_UNET[arch]})
    return ipadapter_state(unet, kind, seed, **clip)


def save_ipadapter(state: dict[str, dict[str, torch.Tensor]], out: str | Path) -> Path:
    """Write ``state`` as a ``.bin`` torch pickle of the two dicts, or flattened ``.safetensors``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".safetensors":
        flat = {f"{part}.{k}": v.contiguous() for part, sd in state.items() for k, v in sd.items()}
        save_file(flat, str(out), metadata={"format": "pt"})
    else:
        torch.save(state, out)
    return out


def write_tiny_ipadapter(
    out: str | Path,
    arch: TinyArch,
    kind: Literal["plain", "plus", "full", "faceid"] = "plain",
    seed: int = 0,
    **clip: int,
) -> Path:
    """Write a tiny IP-Adapter for ``arch``: ``.bin`` or ``.safetensors`` (see :func:`save_ipadapter`)."""
    return save_ipadapter(tiny_ipadapter_state(arch, kind, seed, **clip), out)


def write_tiny_style_model(
    out: str | Path, seed: int = 0, width: int = 64, context_dim: int = 32, layers: int = 2, tokens: int = 8
) -> Path:
    """A tiny T2I-Adapter style model (``style_embedding``, ``transformer_layes.N.*``, ``proj``) as
    ``.safetensors`` or ``.pth``; ``width`` must be the CLIP vision encoder's hidden width."""
    from .style_model import StyleAdapter

    out = Path(out)
    adapter = StyleAdapter(width, context_dim, max(1, width // 64), layers, tokens)
    g = _generator(seed, "style_model")
    state: dict[str, torch.Tensor] = {}
    for name, t in adapter.state_dict().items():
        if t.ndim == 1:
            state[name] = (1.0 if name.endswith("weight") and "ln" in name else 0.0) + 0.02 * torch.randn(
                t.shape, generator=g
            )
        else:
            state[name] = (
                torch.randn(t.shape, generator=g) / int(t.shape[-2 if name == "proj" else -1]) ** 0.5
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(out), metadata={"format": "pt"})
    else:
        torch.save(state, out)
    return out
