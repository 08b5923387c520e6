"""Conditioning: encode prompts, combine, concatenate, restrict to areas, zero out.

CONDITIONING is a list of ``(embedding [1, T, C], extras)``; see ``engine.sampling.guidance``.
"""

from __future__ import annotations

from typing import Any

import torch

from atelier.engine.models.handles import ClipHandle
from atelier.engine.node import Context, Float, Int, Node, Output, Socket, String

Cond = list[tuple[torch.Tensor, dict[str, Any]]]


class CLIPTextEncode(Node):
    """Encode a prompt. Weights: (word:1.2), (word) = x1.1, escaped \\( \\); long prompts in 77-token chunks."""

    category = "conditioning"
    inputs = (String("text", "", multiline=True), Socket("clip", "CLIP"))
    outputs = (Output("CONDITIONING"),)

    def run(self, ctx: Context, text: str, clip: ClipHandle) -> Cond:
        cond, pooled = clip.encode(text)
        extras: dict[str, Any] = {}
        if pooled is not None:
            extras["pooled_output"] = pooled
        return [(cond, extras)]


class CLIPTextEncodeSDXL(Node):
    """SDXL prompt with separate texts for its two encoders and the size conditioning."""

    category = "conditioning"
    inputs = (
        Socket("clip", "CLIP"),
        Int("width", 1024, min=0, max=16384, step=8),
        Int("height", 1024, min=0, max=16384, step=8),
        Int("crop_w", 0, min=0, max=16384),
        Int("crop_h", 0, min=0, max=16384),
        Int("target_width", 1024, min=0, max=16384, step=8),
        Int("target_height", 1024, min=0, max=16384, step=8),
        String("text_g", "", multiline=True),
        String("text_l", "", multiline=True),
    )
    outputs = (Output("CONDITIONING"),)

    def run(
        self,
        ctx: Context,
        clip: ClipHandle,
        width: int,
        height: int,
        crop_w: int,
        crop_h: int,
        target_width: int,
        target_height: int,
        text_g: str,
        text_l: str,
    ) -> Cond:
        cond, pooled = clip.encode_sdxl(text_g, text_l)
        extras = {
            "pooled_output": pooled,
            "width": width,
            "height": height,
            "crop_w": crop_w,
            "crop_h": crop_h,
            "target_width": target_width,
            "target_height": target_height,
        }
        return [(cond, extras)]


class ConditioningCombine(Node):
    """Both conditionings guide the sampler; their predictions are averaged."""

    category = "conditioning"
    inputs = (Socket("conditioning_1", "CONDITIONING"), Socket("conditioning_2", "CONDITIONING"))
    outputs = (Output("CONDITIONING"),)

    def run(self, ctx: Context, conditioning_1: Cond, conditioning_2: Cond) -> Cond:
        return list(conditioning_1) + list(conditioning_2)


class ConditioningConcat(Node):
    """Append the tokens of ``conditioning_from`` to each entry of ``conditioning_to``."""

    category = "conditioning"
    inputs = (Socket("conditioning_to", "CONDITIONING"), Socket("conditioning_from", "CONDITIONING"))
    outputs = (Output("CONDITIONING"),)

    def run(self, ctx: Context, conditioning_to: Cond, conditioning_from: Cond) -> Cond:
        src = conditioning_from[0][0]
        out = []
        for emb, extras in conditioning_to:
            if emb.shape[-1] != src.shape[-1]:
                raise ValueError(
                    f"cannot concatenate conditionings of widths {emb.shape[-1]} and {src.shape[-1]}"
                )
            out.append((torch.cat([emb, src.to(emb)], dim=1), dict(extras)))
        return out


class ConditioningSetArea(Node):
    """Restrict a conditioning to a rectangle of the picture (pixels), with a strength."""

    category = "conditioning"
    inputs = (
        Socket("conditioning", "CONDITIONING"),
        Int("width", 64, min=64, max=16384, step=8),
        Int("height", 64, min=64, max=16384, step=8),
        Int("x", 0, min=0, max=16384, step=8),
        Int("y", 0, min=0, max=16384, step=8),
        Float("strength", 1.0, min=0.0, max=10.0, step=0.01),
    )
    outputs = (Output("CONDITIONING"),)

    def run(
        self, ctx: Context, conditioning: Cond, width: int, height: int, x: int, y: int, strength: float
    ) -> Cond:
        area = (height // 8, width // 8, y // 8, x // 8)
        return [(emb, {**extras, "area": area, "strength": strength}) for emb, extras in conditioning]


class ConditioningZeroOut(Node):
    """Zeros instead of text embeddings (SDXL-style empty negative)."""

    category = "conditioning"
    inputs = (Socket("conditioning", "CONDITIONING"),)
    outputs = (Output("CONDITIONING"),)

    def run(self, ctx: Context, conditioning: Cond) -> Cond:
        out = []
        for emb, extras in conditioning:
            e = dict(extras)
            if e.get("pooled_output") is not None:
                e["pooled_output"] = torch.zeros_like(e["pooled_output"])
            out.append((torch.zeros_like(emb), e))
        return out
