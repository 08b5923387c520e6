"""The CLIP vision tower in the open_clip / OpenAI layout (``visual.*``), as Stable unCLIP checkpoints store
their image embedder (``embedder.model.visual.*``), and its names in transformers' ``CLIPVisionModelWithProjection``.

One name map (``names.NameMap``, the same machinery and per-layer tables as the OpenCLIP text encoder) serves
both directions: :func:`vision_from_original` reads a file's tensors into transformers' names (splitting the
fused ``in_proj`` q/k/v, transposing ``proj``), ``layout.to_original`` writes them back (tiny test models).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .names import OPEN_CLIP_LAYER, OPEN_CLIP_QKV, NameMap, NamePair, PairKind

__all__ = [
    "OPEN_CLIP_VISUAL_TOP",
    "clip_vision_from_state",
    "open_clip_vision_names",
    "vision_from_original",
    "vision_layers",
]

#: Outside the residual blocks: (transformers name, open_clip name, kind). The projection is stored as
#: ``[width, embed]`` (``x @ proj``), the class token and the position embedding as bare parameters.
OPEN_CLIP_VISUAL_TOP: tuple[tuple[str, str, PairKind], ...] = (
    ("vision_model.embeddings.class_embedding", "class_embedding", "same"),
    ("vision_model.embeddings.patch_embedding", "conv1", "same"),
    ("vision_model.embeddings.position_embedding.weight", "positional_embedding", "same"),
    ("vision_model.pre_layrnorm", "ln_pre", "same"),
    ("vision_model.post_layernorm", "ln_post", "same"),
    ("visual_projection.weight", "proj", "transposed"),
)

_BLOCK = re.compile(r"^transformer\.resblocks\.(\d+)\.")


def vision_layers(original_names: Iterable[str]) -> int:
    """How many residual blocks an open_clip vision tower has (names without the ``visual.`` prefix)."""
    return 1 + max((int(m.group(1)) for n in original_names if (m := _BLOCK.match(n))), default=-1)


def open_clip_vision_names(num_layers: int) -> NameMap:
    """transformers ``CLIPVisionModelWithProjection`` names <-> open_clip ``visual.*`` names (no prefix)."""
    pairs = [NamePair(d, o, kind) for d, o, kind in OPEN_CLIP_VISUAL_TOP]
    for i in range(num_layers):
        layer, block = f"vision_model.encoder.layers.{i}", f"transformer.resblocks.{i}"
        pairs += [NamePair(f"{layer}.{d}", f"{block}.{o}") for d, o in OPEN_CLIP_LAYER]
        for part, module in enumerate(OPEN_CLIP_QKV):
            for leaf in ("weight", "bias"):
                pairs.append(
                    NamePair(f"{layer}.{module}.{leaf}", f"{block}.attn.in_proj_{leaf}", "fused_qkv", part)
                )
    return NameMap("open_clip vision", pairs)


def vision_from_original(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An open_clip vision tower's tensors (names without prefix, ``conv1.weight`` ...) in transformers'
    names. Tensors the map does not know (none in a real file) are left out; missing ones are reported by
    the strict assignment that follows."""
    names = open_clip_vision_names(vision_layers(tensors))
    out: dict[str, torch.Tensor] = {}
    for pair in names:
        if pair.kind == "fused_qkv" and pair.original in tensors:
            fused = tensors[pair.original]
            if fused.shape[0] % 3:
                raise ValueError(f"{pair.original} has {fused.shape[0]} rows, not three equal parts q, k, v")
            out[pair.diffusers] = fused.chunk(3, dim=0)[pair.part]
    for key, value in tensors.items():
        try:
            name = names.to_diffusers(key)
        except KeyError:
            continue  # the fused in_proj (done above) or something that is no part of the tower
        if names.lookup(name)[0].kind == "transposed":
            value = value.t().contiguous()
        out[name] = value
    return out


def clip_vision_from_state(
    state: Mapping[str, torch.Tensor],
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    component: str = "clip_vision",
) -> Any:
    """A transformers ``CLIPVisionModelWithProjection`` from its tensors in transformers' names, its
    architecture read from their shapes as ``CLIPVisionLoader`` reads it (``clip_vision.clip_vision_config``);
    ``path`` and ``component`` name the file and the part of it in errors."""
    from atelier.engine.models.libraries import CLIPVisionModelWithProjection

    from .build import assign_weights, build_empty, guard, resolve_dtype
    from .clip_vision import clip_vision_config

    keys = list(state)
    config = guard(path, component, lambda: clip_vision_config(lambda k: tuple(state[k].shape), keys))
    if "visual_projection.weight" not in state:
        raise CheckpointError(path, f"{component}: CLIP vision model without visual_projection.weight")
    model = build_empty(lambda: CLIPVisionModelWithProjection(config))
    return assign_weights(
        model, state, device=device, dtype=resolve_dtype(device, dtype), path=path, component=component
    )
