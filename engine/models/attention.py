"""Attention patches: functions that change what a UNet's attention layers project into queries, keys and
values (ComfyUI's ``attn1_patch`` / ``attn2_patch``; hypernetworks are one).

A patch is called with the inputs of the ``to_q`` / ``to_k`` / ``to_v`` projections (the normed hidden
states, and the context: the hidden states again for self-attention ``attn1``, the text embedding for
cross-attention ``attn2``) and returns new ones. A MODEL handle carries its patches; for the length of a
use (``handle.session()``) :func:`attention_patched` gives each transformer attention layer of the UNet a
processor that applies them and puts the layers' own processors back afterwards, so the loaded UNet is
unchanged outside the block (and a handle without patches never touches it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["AttentionInfo", "AttentionPatch", "PatchedAttnProcessor", "attention_layers", "attention_patched"]


@dataclass(frozen=True)
class AttentionInfo:
    """Which attention layer a patch is called for: its module path in the UNet and its kind."""

    name: str
    kind: Literal["attn1", "attn2"]


#: ``(q_in, k_in, v_in, info) -> (q_in, k_in, v_in)``
AttentionPatch = Callable[[Tensor, Tensor, Tensor, AttentionInfo], tuple[Tensor, Tensor, Tensor]]


def attention_layers(unet: torch.nn.Module) -> list[tuple[str, Any]]:
    """The transformer blocks' attention layers (``...attn1``, ``...attn2``) of a diffusers UNet."""
    return [
        (n, m)
        for n, m in unet.named_modules()
        if n.endswith((".attn1", ".attn2")) and hasattr(m, "processor")
    ]


class PatchedAttnProcessor:
    """diffusers' scaled-dot-product attention for the UNet's transformer layers, with the patches applied
    to the projections' inputs. Only what SD UNets use is supported (no masks, norms or group norms)."""

    def __init__(self, patches: Sequence[AttentionPatch], info: AttentionInfo) -> None:
        self.patches = tuple(patches)
        self.info = info

    def __call__(
        self,
        attn: Any,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        **kwargs: Any,
    ) -> Tensor:
        if attention_mask is not None or hidden_states.ndim != 3 or attn.group_norm or attn.spatial_norm:
            raise ValueError(
                f"attention patches: {self.info.name} uses a mask, spatial input or norm they do not support"
            )
        residual = hidden_states
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        q_in, k_in, v_in = hidden_states, context, context
        for patch in self.patches:
            q_in, k_in, v_in = patch(q_in, k_in, v_in, self.info)
        query, key, value = attn.to_q(q_in), attn.to_k(k_in), attn.to_v(v_in)
        batch = query.shape[0]
        head_dim = key.shape[-1] // attn.heads

        def heads(t: Tensor) -> Tensor:
            return t.view(batch, -1, attn.heads, head_dim).transpose(1, 2)

        query, key, value = heads(query), heads(key), heads(value)
        if getattr(attn, "norm_q", None) is not None:
            query = attn.norm_q(query)
        if getattr(attn, "norm_k", None) is not None:
            key = attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


@contextmanager
def attention_patched(unet: torch.nn.Module, patches: Sequence[AttentionPatch]) -> Iterator[torch.nn.Module]:
    """Within the block, the UNet's attention layers apply ``patches``; afterwards their own processors
    are back. Nothing happens without patches."""
    if not patches:
        yield unet
        return
    saved: list[tuple[Any, Any]] = []
    try:
        for name, module in attention_layers(unet):
            kind: Literal["attn1", "attn2"] = "attn1" if name.endswith("attn1") else "attn2"
            saved.append((module, module.processor))
            # set directly: diffusers' set_processor would log and reset state we do not want touched
            module.processor = PatchedAttnProcessor(patches, AttentionInfo(name, kind))
        yield unet
    finally:
        for module, processor in saved:
            module.processor = processor
