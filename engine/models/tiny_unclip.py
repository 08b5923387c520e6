"""A tiny random-weight Stable unCLIP checkpoint in the single-file layout of ``sd21-unclip-h.ckpt``.

The tiny SD2 model of ``tiny.py`` with an image-embedding input on its UNet (``label_emb``: a
``2 * 48``-wide projection, as unCLIP-H's is ``2 * 1024``), the noise augmentor's schedule buffers
(``noise_augmentor.*``, ``squaredcos_cap_v2`` over 1000 levels, no statistics: as the released files) and a
tiny CLIP vision tower (``TINY_CLIP_VISION``'s shape) in the open_clip layout under
``embedder.model.visual.*``, beside the other tensors the real embedder keeps (its unused text head's final
norm and projection, ``logit_scale``; the token embedding is left out for size). It loads through the same
detection and loading code as the real files.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from atelier.engine.models.libraries import CLIPVisionConfig, CLIPVisionModelWithProjection

from .build import build_empty
from .layout import to_original, with_prefix
from .open_clip_vision import open_clip_vision_names
from .tiny import TinyModels, _derived_seed, _realistic_extras, build_tiny_models, randomize
from .tiny_ipadapter import TINY_CLIP_VISION
from .unclip import EMBEDDER_PREFIX, NOISE_AUGMENTOR_PREFIX, cosine_betas

__all__ = ["TINY_UNCLIP_EMBED_DIM", "build_tiny_unclip", "write_tiny_unclip_checkpoint"]

#: the tiny model's image-embedding width (its CLIP vision projection)
TINY_UNCLIP_EMBED_DIM = int(TINY_CLIP_VISION["projection_dim"])


def build_tiny_unclip(
    seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[TinyModels, CLIPVisionModelWithProjection]:
    """The in-memory modules :func:`write_tiny_unclip_checkpoint` writes (same seed, same weights)."""
    models = build_tiny_models(
        "sd2",
        seed=seed,
        dtype=dtype,
        unet_overrides={
            "class_embed_type": "projection",
            "projection_class_embeddings_input_dim": 2 * TINY_UNCLIP_EMBED_DIM,
        },
    )
    vision = build_empty(lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_CLIP_VISION)))
    vision = randomize(vision, seed=seed, tag="unclip_embedder", device="cpu", dtype=dtype)
    return models, vision  # type: ignore[return-value]


def _noise_augmentor_buffers(levels: int = 1000) -> dict[str, torch.Tensor]:
    """The schedule buffers the reference code's CLIPEmbeddingNoiseAugmentation saves (squaredcos_cap_v2)."""

    betas = cosine_betas(levels)
    cumprod = torch.cumprod(1.0 - betas, dim=0)
    buffers = {
        "betas": betas,
        "alphas_cumprod": cumprod,
        "alphas_cumprod_prev": torch.cat([torch.ones(1, dtype=torch.float64), cumprod[:-1]]),
        "sqrt_alphas_cumprod": cumprod.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - cumprod).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - cumprod).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / cumprod - 1.0).sqrt(),
    }
    return {NOISE_AUGMENTOR_PREFIX + k: v.float() for k, v in buffers.items()}


def write_tiny_unclip_checkpoint(
    out: str | Path, seed: int = 0, dtype: torch.dtype = torch.float32, *, v_prediction: bool = False
) -> Path:
    """Write the tiny unCLIP checkpoint; deterministic in ``(seed, dtype)``. ``v_prediction`` adds the
    ``v_pred`` marker (the released unCLIP models are v-prediction)."""
    out = Path(out)
    models, vision = build_tiny_unclip(seed, dtype)
    state = {k: v.detach().contiguous() for k, v in models.original_state_dict().items()}
    state.update(_realistic_extras(models, seed, dtype))
    state.update(_noise_augmentor_buffers())
    layers = int(vision.config.num_hidden_layers)
    visual = to_original(vision.state_dict(), open_clip_vision_names(layers))
    state.update(with_prefix(EMBEDDER_PREFIX, {k: v.detach().contiguous() for k, v in visual.items()}))
    generator = torch.Generator().manual_seed(_derived_seed(seed, "unclip_embedder_text"))
    width = TINY_UNCLIP_EMBED_DIM
    head = "embedder.model."
    state[head + "ln_final.weight"] = (1.0 + 0.02 * torch.randn(width, generator=generator)).to(dtype)
    state[head + "ln_final.bias"] = (0.02 * torch.randn(width, generator=generator)).to(dtype)
    state[head + "text_projection"] = (torch.randn(width, width, generator=generator) / width**0.5).to(dtype)
    state[head + "logit_scale"] = torch.tensor(4.6052, dtype=dtype)
    if v_prediction:
        state["v_pred"] = torch.tensor([])
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata={"format": "pt"})
    return out
