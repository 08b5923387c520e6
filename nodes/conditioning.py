"""Conditioning: encode prompts, combine, concatenate, restrict to areas, zero out.

CONDITIONING is a list of :class:`~atelier.engine.sampling.conditioning.CondEntry`. Prompts may name
textual-inversion embeddings (``embedding:NAME``): an unknown one is a validation error when the text is
literal (a run-time error when it comes through a link), and the referenced files' identities are part of
the node's cache signature, so editing an embedding file re-encodes the prompts that use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from atelier.engine import folders as _F
from atelier.engine.folders import Folders
from atelier.engine.limits import Estimate, Extent
from atelier.engine.models import estimates as X
from atelier.engine.models.embeddings import (
    EmbeddingLibrary,
    embedding_problems,
    embeddings_fingerprint,
    find_embedding,
)
from atelier.engine.models.handles import ClipHandle
from atelier.engine.models.prompt import embedding_names
from atelier.engine.models.sockets import CLIP, CONDITIONING
from atelier.engine.node import Context, Float, Int, Node, Output, Socket, String
from atelier.engine.sampling.conditioning import CondEntry, Conditioning, SizeCond


class _PromptNode(Node, abstract=True):
    """A node whose text inputs may reference embeddings: checks, fingerprint and provenance of them."""

    #: the inputs that hold prompt text
    text_inputs: ClassVar[tuple[str, ...]] = ("text",)

    @classmethod
    def check_inputs(cls, files: Folders, **literals: Any) -> list[tuple[str | None, str]]:
        texts = {k: literals[k] for k in cls.text_inputs if isinstance(literals.get(k), str)}
        return list(embedding_problems(files, **texts))

    @classmethod
    def fingerprint(cls, ctx: Context, **literals: Any) -> dict[str, str] | None:
        return embeddings_fingerprint(ctx.files, {k: literals.get(k) for k in cls.text_inputs})

    @classmethod
    def provenance(cls, ctx: Context, **literals: Any) -> dict[str, Any] | None:
        names = {
            n: None
            for k in cls.text_inputs
            if isinstance(literals.get(k), str)
            for n in embedding_names(literals[k])
        }
        if not names:
            return None
        return {"embeddings": {n: ctx.files.sha256(find_embedding(ctx.files, n)) for n in names}}


class CLIPTextEncode(_PromptNode):
    """Encode a prompt. Weights: (word:1.2), (word) = x1.1, escaped \\( \\); long prompts in 77-token chunks;
    textual-inversion embeddings as embedding:NAME, weighted like words: (embedding:NAME:1.2)."""

    category = "conditioning"
    inputs = (String("text", "", multiline=True), Socket("clip", CLIP))
    outputs = (Output(CONDITIONING),)

    @classmethod
    def estimate(cls, files: _F.Folders, upstream: Mapping[str, Extent], **literals: Any) -> Estimate | None:
        return Estimate(
            [X.text_measure(literals[k], k) for k in cls.text_inputs if isinstance(literals.get(k), str)]
        )

    def run(self, ctx: Context, text: str, clip: ClipHandle) -> Conditioning:
        cond, pooled = clip.encode(text, EmbeddingLibrary(ctx.files, clip.embedding_cache))
        return [CondEntry(cond, pooled)]


class CLIPTextEncodeSDXL(_PromptNode):
    """SDXL prompt with separate texts for its two encoders and the size conditioning."""

    category = "conditioning"
    text_inputs = ("text_g", "text_l")
    inputs = (
        Socket("clip", CLIP),
        Int("width", 1024, min=0, max=16384, step=8),
        Int("height", 1024, min=0, max=16384, step=8),
        Int("crop_w", 0, min=0, max=16384),
        Int("crop_h", 0, min=0, max=16384),
        Int("target_width", 1024, min=0, max=16384, step=8),
        Int("target_height", 1024, min=0, max=16384, step=8),
        String("text_g", "", multiline=True),
        String("text_l", "", multiline=True),
    )
    outputs = (Output(CONDITIONING),)

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
    ) -> Conditioning:
        cond, pooled = clip.encode_sdxl(text_g, text_l, EmbeddingLibrary(ctx.files, clip.embedding_cache))
        size = SizeCond(width, height, crop_w, crop_h, target_width, target_height)
        return [CondEntry(cond, pooled, size=size)]


class ConditioningCombine(Node):
    """Both conditionings guide the sampler; their predictions are averaged."""

    category = "conditioning"
    inputs = (Socket("conditioning_1", CONDITIONING), Socket("conditioning_2", CONDITIONING))
    outputs = (Output(CONDITIONING),)

    def run(self, ctx: Context, conditioning_1: Conditioning, conditioning_2: Conditioning) -> Conditioning:
        return list(conditioning_1) + list(conditioning_2)


class ConditioningConcat(Node):
    """Append the tokens of ``conditioning_from`` to each entry of ``conditioning_to``."""

    category = "conditioning"
    inputs = (Socket("conditioning_to", CONDITIONING), Socket("conditioning_from", CONDITIONING))
    outputs = (Output(CONDITIONING),)

    def run(
        self, ctx: Context, conditioning_to: Conditioning, conditioning_from: Conditioning
    ) -> Conditioning:
        src = conditioning_from[0].embedding
        out = []
        for entry in conditioning_to:
            emb = entry.embedding
            if emb.shape[-1] != src.shape[-1]:
                raise ValueError(
                    f"cannot concatenate conditionings of widths {emb.shape[-1]} and {src.shape[-1]}"
                )
            out.append(entry.replace(embedding=torch.cat([emb, src.to(emb)], dim=1)))
        return out


class ConditioningSetArea(Node):
    """Restrict a conditioning to a rectangle of the picture (pixels), with a strength."""

    category = "conditioning"
    inputs = (
        Socket("conditioning", CONDITIONING),
        Int("width", 64, min=64, max=16384, step=8),
        Int("height", 64, min=64, max=16384, step=8),
        Int("x", 0, min=0, max=16384, step=8),
        Int("y", 0, min=0, max=16384, step=8),
        Float("strength", 1.0, min=0.0, max=10.0, step=0.01),
    )
    outputs = (Output(CONDITIONING),)

    def run(
        self,
        ctx: Context,
        conditioning: Conditioning,
        width: int,
        height: int,
        x: int,
        y: int,
        strength: float,
    ) -> Conditioning:
        area = (height // 8, width // 8, y // 8, x // 8)
        return [entry.replace(area=area, strength=strength) for entry in conditioning]


class ConditioningZeroOut(Node):
    """Zeros instead of text embeddings (SDXL-style empty negative)."""

    category = "conditioning"
    inputs = (Socket("conditioning", CONDITIONING),)
    outputs = (Output(CONDITIONING),)

    def run(self, ctx: Context, conditioning: Conditioning) -> Conditioning:
        return [
            e.replace(
                embedding=torch.zeros_like(e.embedding),
                pooled=torch.zeros_like(e.pooled) if e.pooled is not None else None,
            )
            for e in conditioning
        ]
