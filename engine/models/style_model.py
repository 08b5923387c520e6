"""Style models (``models/style_models``): T2I-Adapter's style adapter, which turns a CLIP vision encoding
into extra text tokens (StyleModelApply appends them to a conditioning).

The file (``t2iadapter_style_sd14v1.pth``, or the same as ``.safetensors``) holds ``style_embedding``
[1, tokens, width], ``ln_pre`` / ``ln_post``, ``proj`` [width, text width] and ``transformer_layes.N.*``
(sic): CLIP residual attention blocks (``attn.in_proj_*``, ``attn.out_proj``, ``ln_1``, ``mlp.c_fc``,
``mlp.c_proj``, ``ln_2``; quick-GELU). The adapter appends its learned tokens to the encoder's last hidden
state, runs the blocks and projects the learned tokens' outputs to the text width. Widths, token count and
depth come from the shapes; the head count (8 in the released adapter, 64-wide heads otherwise) does not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from atelier.engine.model_loader import LoadOptions

from .errors import CheckpointError
from .files import load_state_dict_file

__all__ = ["StyleAdapter", "StyleModel", "load_style_model", "style_model_loader"]

_BLOCK = re.compile(r"^transformer_layes\.(\d+)\.")


class _QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class _Block(nn.Module):
    """CLIP's residual attention block (sequence-first, as ``nn.MultiheadAttention`` defaults)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, width * 4))
        self.mlp.add_module("gelu", _QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(width * 4, width))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: Tensor) -> Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class StyleAdapter(nn.Module):
    """T2I-Adapter's style adapter."""

    def __init__(self, width: int, context_dim: int, heads: int, layers: int, tokens: int) -> None:
        super().__init__()
        self.transformer_layes = nn.Sequential(*(_Block(width, heads) for _ in range(layers)))
        self.style_embedding = nn.Parameter(torch.zeros(1, tokens, width))
        self.ln_pre = nn.LayerNorm(width)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.zeros(width, context_dim))

    def forward(self, hidden: Tensor) -> Tensor:
        """[B, T, width] CLIP vision last hidden state -> [B, tokens, context_dim]."""
        tokens = self.style_embedding.shape[1]
        x = torch.cat([hidden, self.style_embedding.expand(hidden.shape[0], -1, -1)], dim=1)
        x = self.transformer_layes(self.ln_pre(x).transpose(0, 1)).transpose(0, 1)
        return self.ln_post(x[:, -tokens:]) @ self.proj


@dataclass(frozen=True, eq=False)
class StyleModel:
    """STYLE_MODEL: a loaded style adapter."""

    adapter: StyleAdapter
    name: str = ""

    @property
    def width(self) -> int:
        return int(self.adapter.style_embedding.shape[-1])

    def get_cond(self, last_hidden_state: Tensor) -> Tensor:
        """The style tokens [B, tokens, context_dim] for a CLIP vision last hidden state."""
        if int(last_hidden_state.shape[-1]) != self.width:
            raise ValueError(
                f"style model {self.name} reads CLIP vision hidden states of width {self.width}, "
                f"the encoding has width {int(last_hidden_state.shape[-1])} (the T2I style adapter wants ViT-L/14)"
            )
        p = self.adapter.proj
        with torch.inference_mode():
            return self.adapter(last_hidden_state.to(p.device, p.dtype)).float()


def load_style_model(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> StyleModel:
    path = Path(path)
    state = load_state_dict_file(path)
    if "style_embedding" not in state or "proj" not in state:
        if any(k.startswith("redux_") for k in state):
            raise CheckpointError(path, "is a Flux Redux model; Atelier runs SD1.x/SDXL style models only")
        raise CheckpointError(path, "not a T2I-Adapter style model (no style_embedding / proj)")
    width, context = (int(d) for d in state["proj"].shape)
    layers = 1 + max((int(m.group(1)) for k in state if (m := _BLOCK.match(k))), default=-1)
    heads = 8 if width == 1024 else max(1, width // 64)
    adapter = StyleAdapter(width, context, heads, layers, int(state["style_embedding"].shape[1]))
    try:
        adapter.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(path, f"style model: {str(exc).splitlines()[0]}") from None
    from .build import resolve_dtype  # diffusers loads with a model, not at start-up

    adapter = adapter.to(device, resolve_dtype(device, dtype)).eval().requires_grad_(False)
    return StyleModel(adapter, path.name)


def style_model_loader(path: Path, options: LoadOptions) -> StyleModel:
    """``ctx.models`` loader of a style model file."""
    return load_style_model(path, device=options.device, dtype=options.dtype)
