"""Applying an IP-Adapter to a MODEL's calls: a model-call wrapper that, for the calls inside its sigma range,
gives every cross-attention layer a second attention over the image tokens (decoupled cross-attention).

For each cross-attention layer the wrapper wraps the layer's processor (whatever it is: diffusers' own, or
the attention-patch processor of ``attention.py``) for the length of one network call, adding

    out += weight * mask * to_out(softmax(q k_ip^T / sqrt(d)) v_ip)      (to_out without its bias)

where ``q`` is the layer's query, ``k_ip`` / ``v_ip`` the adapter's projections of the image tokens. That is
diffusers' ``IPAdapterAttnProcessor2_0`` (``to_out`` is linear, so its bias counts once); over diffusers'
plain processor the two attentions share one query and one output projection, as there. Rows of the batch
that belong to a negative prompt get the tokens of "no image" (the projection of zero embeds, or of the
encoder's features of a black image for Plus), as diffusers and ComfyUI do. A MASK limits the adapter to a
region: it is resized to each attention layer's grid. Outside ``[sigma_end, sigma_start]``, or with weight 0,
the call passes through untouched (bit for bit the model without the adapter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from atelier.engine.sampling.guidance import ApplyModel, ModelCall

from .ipadapter import IPAdapterModel, cross_attention_layers

__all__ = ["IPAdapterAttnProcessor", "IPAdapterPatch", "layer_grid"]


def layer_grid(h: int, w: int, tokens: int) -> tuple[int, int]:
    """The (rows, columns) of an attention layer with ``tokens`` queries over an ``h`` x ``w`` latent:
    each UNet level halves the grid, rounding up (stride-2 convolutions with padding 1)."""
    gh, gw = h, w
    while gh * gw > tokens and (gh > 1 or gw > 1):
        gh, gw = math.ceil(gh / 2), math.ceil(gw / 2)
    if gh * gw != tokens:
        raise ValueError(f"IP-Adapter mask: {tokens} attention tokens do not tile a {h}x{w} latent")
    return gh, gw


@dataclass
class _CallState:
    """What one network call's processors share: the image tokens per row and the mask per grid."""

    tokens: Tensor  # [rows, T, C]
    mask: Tensor | None  # [rows or 1, 1, h, w] over the call's latent area
    latent_hw: tuple[int, int]
    per_grid: dict[int, Tensor] = field(default_factory=dict)

    def mask_for(self, queries: int, like: Tensor) -> Tensor | None:
        if self.mask is None:
            return None
        cached = self.per_grid.get(queries)
        if cached is None:
            gh, gw = layer_grid(*self.latent_hw, queries)
            m = F.interpolate(self.mask, size=(gh, gw), mode="bilinear", align_corners=False)
            cached = m.flatten(1).unsqueeze(-1).to(like.device, like.dtype)  # [rows or 1, N, 1]
            self.per_grid[queries] = cached
        return cached


class IPAdapterAttnProcessor:
    """The layer's own processor, plus the adapter's attention over the image tokens."""

    def __init__(self, inner: Any, to_k: Tensor, to_v: Tensor, weight: float, state: _CallState) -> None:
        self.inner = inner
        self.to_k = to_k
        self.to_v = to_v
        self.weight = weight
        self.state = state

    def __call__(
        self,
        attn: Any,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        **kwargs: Any,
    ) -> Tensor:
        if self._fusable(attn, hidden_states, encoder_hidden_states, attention_mask):
            return self._fused(attn, hidden_states, encoder_hidden_states)  # type: ignore[arg-type]
        out = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        ip = F.linear(self._ip_attention(attn, attn.to_q(hidden_states)), attn.to_out[0].weight)
        return out + (ip / attn.rescale_output_factor).to(out.dtype)

    def _fusable(self, attn: Any, hidden: Tensor, context: Tensor | None, mask: Tensor | None) -> bool:
        """Whether the inner processor is diffusers' plain one on a plain call, so that one pass can share
        the query and the output projection (as diffusers' IPAdapterAttnProcessor2_0 does)."""
        from atelier.engine.models.libraries import AttnProcessor2_0  # loaded by then: a model runs

        return (
            type(self.inner) is AttnProcessor2_0
            and context is not None
            and mask is None
            and hidden.ndim == 3
            and attn.group_norm is None
            and attn.spatial_norm is None
            and not attn.norm_cross
            and getattr(attn, "norm_q", None) is None
            and getattr(attn, "norm_k", None) is None
        )

    def _heads(self, attn: Any, t: Tensor, rows: int) -> Tensor:
        return t.view(rows, -1, attn.heads, t.shape[-1] // attn.heads).transpose(1, 2)

    def _ip_attention(self, attn: Any, query: Tensor) -> Tensor:
        """weight * mask * attention of ``query`` [rows, N, inner] over the image tokens (before to_out)."""
        rows = query.shape[0]
        tokens = self.state.tokens.to(query.device, query.dtype)
        key = F.linear(tokens, self.to_k.to(query.device, query.dtype))
        value = F.linear(tokens, self.to_v.to(query.device, query.dtype))
        q, k, v = (self._heads(attn, t, rows) for t in (query, key, value))
        ip = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0)
        ip = ip.transpose(1, 2).reshape(rows, -1, query.shape[-1]) * self.weight
        mask = self.state.mask_for(int(query.shape[1]), ip)
        return ip if mask is None else ip * mask

    def _fused(self, attn: Any, hidden: Tensor, context: Tensor) -> Tensor:
        rows = hidden.shape[0]
        query = attn.to_q(hidden)
        q, k, v = (self._heads(attn, t, rows) for t in (query, attn.to_k(context), attn.to_v(context)))
        text = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0)
        text = text.transpose(1, 2).reshape(rows, -1, query.shape[-1]).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](text + self._ip_attention(attn, query).to(query.dtype)))
        if attn.residual_connection:
            out = out + hidden
        return out / attn.rescale_output_factor


@dataclass(frozen=True, eq=False)
class IPAdapterPatch:
    """A model-call wrapper (``ModelHandle.with_wrapper``) applying one IP-Adapter.

    ``cond`` / ``uncond``: image tokens [1, T, C] for positive and negative rows. ``mask``: [M, H, W]
    over the whole image (0..1) or None. The adapter acts while ``sigma_end <= sigma <= sigma_start``."""

    adapter: IPAdapterModel
    unet: Any
    cond: Tensor
    uncond: Tensor
    weight: float = 1.0
    sigma_start: float = float("inf")
    sigma_end: float = 0.0
    mask: Tensor | None = None

    def active(self, sigma: Tensor) -> bool:
        s = float(sigma.max())
        return self.weight != 0.0 and self.sigma_end <= s <= self.sigma_start

    def _row_tokens(self, call: ModelCall) -> Tensor:
        chunks = [(self.uncond if neg else self.cond).expand(call.batch, -1, -1) for neg in call.negative]
        return torch.cat(chunks, dim=0)

    def _mask(self, call: ModelCall) -> Tensor | None:
        if self.mask is None:
            return None
        m = self.mask if self.mask.ndim == 3 else self.mask.reshape(1, *self.mask.shape[-2:])
        ah, aw, y, x = call.area
        full = call.sampling.latent_image.shape[-2:] if call.sampling is not None else call.x.shape[-2:]
        m = F.interpolate(m[:, None].float(), size=tuple(full), mode="bilinear", align_corners=False)
        m = m[:, :, y : y + ah, x : x + aw]
        if m.shape[0] == call.batch and call.batch > 1:
            m = m.repeat(len(call.entries), 1, 1, 1)
        elif m.shape[0] != 1:
            m = m[:1]
        return m

    def __call__(self, call_next: ApplyModel, call: ModelCall) -> Tensor:
        if not self.active(call.sigma):
            return call_next(call)
        state = _CallState(self._row_tokens(call), self._mask(call), tuple(call.x.shape[-2:]))
        saved: list[tuple[Any, Any]] = []
        try:
            for (_, attn), k, v in zip(
                cross_attention_layers(self.unet), self.adapter.to_k, self.adapter.to_v, strict=True
            ):
                saved.append((attn, attn.processor))
                attn.processor = IPAdapterAttnProcessor(attn.processor, k, v, self.weight, state)
            return call_next(call)
        finally:
            for attn, processor in reversed(saved):
                attn.processor = processor
