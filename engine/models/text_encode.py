"""CLIP text encoding with prompt weighting, long prompts and ``clip_skip``, the ComfyUI way.

The path of a prompt:

1. :func:`~engine.models.prompt.parse_prompt` splits it into weighted segments.
2. :func:`tokenize_weighted` splits each segment at whitespace into words, tokenizes the words (so a
   segment boundary is a word boundary) and fills chunks of ``max_length - 2`` (75) tokens, each then
   framed by BOS/EOS and padded to ``max_length`` (77) with the encoder's pad token (EOS for CLIP-L,
   ``"!"`` = 0 for OpenCLIP-H/G). A word never straddles two chunks if it can be avoided: a word that
   would overflow the current chunk starts the next one, unless it is 8 tokens or longer (ComfyUI's
   rule), in which case it fills the current chunk and continues in the next. ``BREAK`` closes the
   current chunk early; an empty prompt gives one chunk ``[BOS, EOS, pad...]``.
   Given ``embeddings`` (name -> one vector per slot), a word ``embedding:NAME`` becomes those vectors,
   a group placed by the same rule as a word (kept whole in one chunk below 8 vectors, as in ComfyUI).
   A ``None`` slot (an embedding that does not fit this encoder) takes its place while chunks are
   filled and becomes padding at the end of its chunk, as in ComfyUI.
3. :func:`encode_chunks` runs all chunks of an encoder as one batch and picks the hidden state of the
   requested layer. Embedding vectors replace the token embeddings at their positions (a hook on the
   token-embedding layer for the length of the call, acting on this call's input only); the position
   embeddings are added to them as to any token, as ComfyUI does. When any token has a weight other
   than 1, the empty prompt is encoded in the same
   batch and each weighted token is moved along the line from the empty prompt's embedding at the same
   position: ``z = (z - z_empty) * w + z_empty`` (ComfyUI's rule; A1111 instead scales ``z`` and
   restores the mean, which is not what ComfyUI users expect). Tokens at weight 1 are left untouched,
   bit for bit. Chunks are concatenated on the sequence axis: ``[1, 77 * k, width]``.
4. Several encoders (SDXL: CLIP-L then OpenCLIP-G) are concatenated on the feature axis in the order
   given; when their chunk counts differ (different texts in :func:`encode_sdxl`), the shorter list is
   padded with empty-prompt chunks, as ComfyUI's ``CLIPTextEncodeSDXL`` does. The pooled output is
   the projected EOS embedding (``text_embeds``) of the *first* chunk of the first encoder marked
   ``pooled``; it always comes from the final layer, whatever ``clip_skip`` says.

Layers (``TextEncoderSpec.layer`` and ``clip_skip``) use ComfyUI's ``CLIPSetLastLayer`` numbering: -1 is
the output of the last transformer layer, -2 the penultimate one, and so on (``hidden_states[layer]``
in transformers). ``clip_skip=None`` keeps each encoder's own default, which differs per model family:

====================  ======  =========================================  ======
encoder               layer   final_layer_norm on the chosen layer       pooled
====================  ======  =========================================  ======
SD1 CLIP-L            -1      yes (= ``last_hidden_state``)              no
SD2 OpenCLIP-H        -2      yes                                        no
SDXL CLIP-L           -2      no (diffusers' ``hidden_states[-2]``)      no
SDXL OpenCLIP-G       -2      no                                         yes
====================  ======  =========================================  ======

The SD1 and SD2 rows are ComfyUI's (``CLIPSetLastLayer(-2)`` on SD1 applies the final layer norm to the
penultimate layer, as A1111's "clip skip 2" does); the SDXL rows are both ComfyUI's and diffusers'.
A ``clip_skip`` past the first layer selects the final, normalised output (ComfyUI does the same).
The SD2 row assumes the full 24-layer OpenCLIP-H is loaded, as ComfyUI does (diffusers' SD2 text
encoder drops the last layer instead and uses layer -1 of 23: give such a model ``layer=-1``).

Outputs keep the text model's dtype (weighting arithmetic runs in float32) on the model's device;
pass ``dtype=`` to get another. Encoders never run with an attention mask, as in ComfyUI (the causal
mask alone: padding tokens see the prompt, which SD models were trained with).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import torch

from atelier.engine.models.prompt import PromptStyle, Segment, parse_prompt, split_embedding_reference

__all__ = [
    "EmbeddingRows",
    "TextEncoderSpec",
    "TokenChunk",
    "empty_chunk",
    "encode_chunks",
    "encode_prompt",
    "encode_sdxl",
    "encode_texts",
    "sd1_clip_l",
    "sd2_clip_h",
    "sdxl_clip_g",
    "sdxl_clip_l",
    "tokenize_prompt",
    "tokenize_weighted",
]

#: ComfyUI's ``max_word_length``: words this long (in tokens) may be split across chunks.
MAX_WORD_TOKENS: Final = 8
#: The id written where an embedding vector goes (its input embedding is replaced; never EOS, which
#: marks the pooled position).
EMBEDDING_PLACEHOLDER_ID: Final = 0

#: An embedding's vectors for one encoder by name: one per slot, ``None`` where it does not fit.
EmbeddingRows = Mapping[str, Sequence[torch.Tensor | None]]
#: A token of a chunk body: an id, an embedding vector, or a dropped embedding slot.
_Token = int | torch.Tensor | None


@dataclass(frozen=True, eq=False)
class TextEncoderSpec:
    """One CLIP text encoder and how to use it.

    ``model`` is a transformers ``CLIPTextModel`` or ``CLIPTextModelWithProjection`` (used as is, never
    moved or cast). ``tokenizer`` is a ``CLIPTokenizer`` built by the caller (this module never loads
    files). ``layer`` is the default hidden state (ComfyUI numbering, see the module docstring),
    ``layer_norm`` whether the final layer norm is applied to it, ``pooled`` whether this encoder gives
    the pooled output, ``pad_token_id`` the padding token (``None``: the tokenizer's).
    """

    model: torch.nn.Module
    tokenizer: Any
    layer: int = -1
    layer_norm: bool = True
    pooled: bool = False
    pad_token_id: int | None = None
    max_length: int = 77

    def __post_init__(self) -> None:
        if self.layer >= 0:
            raise ValueError(f"layer must be negative (-1 = last layer), got {self.layer}")
        if self.max_length < 3:
            raise ValueError(f"max_length must be at least 3, got {self.max_length}")

    @property
    def bos_token_id(self) -> int:
        return _required_id(self.tokenizer, "bos_token_id")

    @property
    def eos_token_id(self) -> int:
        return _required_id(self.tokenizer, "eos_token_id")

    @property
    def pad_id(self) -> int:
        """The pad token: ``pad_token_id`` when given, else the tokenizer's."""
        if self.pad_token_id is not None:
            return self.pad_token_id
        return _required_id(self.tokenizer, "pad_token_id")

    @property
    def width(self) -> int:
        """The width of the token embeddings (what an embedding vector must have)."""
        return int(token_embedding(self.model).embedding_dim)


def _required_id(tokenizer: Any, attr: str) -> int:
    value = getattr(tokenizer, attr, None)
    if value is None:
        raise ValueError(
            f"the tokenizer has no {attr}; give it one (CLIP uses <|startoftext|>, <|endoftext|>)"
        )
    return int(value)


def _token_id(tokenizer: Any, token: str) -> int:
    value = tokenizer.convert_tokens_to_ids(token)
    if value is None or value == getattr(tokenizer, "unk_token_id", None):
        raise ValueError(f"the tokenizer has no token {token!r}")
    return int(value)


def sd1_clip_l(model: torch.nn.Module, tokenizer: Any) -> TextEncoderSpec:
    """SD1.x CLIP-L: last layer, final layer norm, padded with EOS."""
    return TextEncoderSpec(model, tokenizer, layer=-1, layer_norm=True, pad_token_id=tokenizer.eos_token_id)


def sd2_clip_h(model: torch.nn.Module, tokenizer: Any) -> TextEncoderSpec:
    """SD2.x OpenCLIP-H (all 24 layers): penultimate layer with the final layer norm, padded with ``!``."""
    return TextEncoderSpec(
        model, tokenizer, layer=-2, layer_norm=True, pad_token_id=_token_id(tokenizer, "!")
    )


def sdxl_clip_l(model: torch.nn.Module, tokenizer: Any) -> TextEncoderSpec:
    """SDXL's first encoder (CLIP-L): penultimate layer, no final layer norm, padded with EOS."""
    return TextEncoderSpec(model, tokenizer, layer=-2, layer_norm=False, pad_token_id=tokenizer.eos_token_id)


def sdxl_clip_g(model: torch.nn.Module, tokenizer: Any) -> TextEncoderSpec:
    """SDXL's second encoder (OpenCLIP-G, with projection): penultimate layer, no final layer norm,
    padded with ``!``, gives the pooled output."""
    return TextEncoderSpec(
        model, tokenizer, layer=-2, layer_norm=False, pooled=True, pad_token_id=_token_id(tokenizer, "!")
    )


@dataclass(frozen=True)
class TokenChunk:
    """One encoder input of ``max_length`` tokens (BOS ... EOS pad...) and a weight per token.

    ``embeds``: ``(position, vector)`` of the embedding vectors that replace the input embedding at those
    positions (whose id is a placeholder); left out of ``==``, which compares ids and weights."""

    ids: tuple[int, ...]
    weights: tuple[float, ...]
    embeds: tuple[tuple[int, torch.Tensor], ...] = field(default=(), compare=False)

    @property
    def weighted(self) -> bool:
        return any(w != 1.0 for w in self.weights)


def _frame(body: list[tuple[_Token, float]], bos: int, eos: int, pad: int, max_length: int) -> TokenChunk:
    kept = [(t, w) for t, w in body if t is not None]
    padding = max_length - 2 - len(kept)
    ids = (
        bos,
        *(EMBEDDING_PLACEHOLDER_ID if isinstance(t, torch.Tensor) else t for t, _ in kept),
        eos,
        *([pad] * padding),
    )
    weights = (1.0, *(w for _, w in kept), 1.0, *([1.0] * padding))
    embeds = tuple((n + 1, t) for n, (t, _) in enumerate(kept) if isinstance(t, torch.Tensor))
    return TokenChunk(ids, weights, embeds)  # type: ignore[arg-type]


def empty_chunk(spec: TextEncoderSpec) -> TokenChunk:
    """The chunk of an empty prompt: ``[BOS, EOS, pad, ...]``."""
    return _frame([], spec.bos_token_id, spec.eos_token_id, spec.pad_id, spec.max_length)


def _words(
    segments: Sequence[Segment], tokenizer: Any, embeddings: EmbeddingRows | None
) -> list[tuple[list[_Token], float] | None]:
    """Tokens and weight per whitespace-separated word (an embedding reference is a word of vectors);
    ``None`` stands for a BREAK."""
    plan: list[tuple[str | Sequence[torch.Tensor | None], float] | None] = []
    for segment in segments:
        if segment.is_break:
            plan.append(None)
            continue
        for word in segment.text.split():
            ref = split_embedding_reference(word) if embeddings is not None else None
            if ref is None:
                plan.append((word, segment.weight))
                continue
            name, leftover = ref
            rows = embeddings.get(name) if embeddings is not None else None
            if rows is None:
                raise KeyError(f"embedding {name!r} is referenced but was not resolved for this encoder")
            plan.append((rows, segment.weight))
            if leftover:
                plan.append((leftover, segment.weight))
    texts = [p[0] for p in plan if p is not None and isinstance(p[0], str)]
    encoded: list[list[int]] = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    out: list[tuple[list[_Token], float] | None] = []
    tokens = iter(encoded)
    for p in plan:
        if p is None:
            out.append(None)
        else:
            out.append((list(next(tokens)) if isinstance(p[0], str) else list(p[0]), p[1]))
    return out


def tokenize_weighted(
    prompt: str | Sequence[Segment],
    tokenizer: Any,
    *,
    bos_token_id: int,
    eos_token_id: int,
    pad_token_id: int,
    max_length: int = 77,
    style: PromptStyle = "comfy",
    embeddings: EmbeddingRows | None = None,
) -> list[TokenChunk]:
    """Chunks of a weighted prompt (a string to parse, or segments from ``parse_prompt``).

    Without ``embeddings``, ``embedding:NAME`` is plain text; with them, every name referenced must be
    in the mapping (``engine/models/embeddings.py`` resolves and fits them)."""
    segments = parse_prompt(prompt, style=style) if isinstance(prompt, str) else prompt
    capacity = max_length - 2
    bodies: list[list[tuple[_Token, float]]] = []
    body: list[tuple[_Token, float]] = []
    for word in _words(segments, tokenizer, embeddings):
        if word is None:
            bodies.append(body)
            body = []
            continue
        ids, weight = word
        splittable = len(ids) >= MAX_WORD_TOKENS or len(ids) > capacity
        while ids:
            if len(body) + len(ids) <= capacity:
                body.extend((t, weight) for t in ids)
                break
            if splittable:
                room = capacity - len(body)
                body.extend((t, weight) for t in ids[:room])
                ids = ids[room:]
            bodies.append(body)
            body = []
    if body or not bodies:
        bodies.append(body)
    return [_frame(b, bos_token_id, eos_token_id, pad_token_id, max_length) for b in bodies]


def tokenize_prompt(
    prompt: str | Sequence[Segment],
    spec: TextEncoderSpec,
    *,
    style: PromptStyle = "comfy",
    embeddings: EmbeddingRows | None = None,
) -> list[TokenChunk]:
    """:func:`tokenize_weighted` with the special tokens and length of ``spec``."""
    return tokenize_weighted(
        prompt,
        spec.tokenizer,
        bos_token_id=spec.bos_token_id,
        eos_token_id=spec.eos_token_id,
        pad_token_id=spec.pad_id,
        max_length=spec.max_length,
        style=style,
        embeddings=embeddings,
    )


def _model_place(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters())
    return param.device, param.dtype


def token_embedding(model: torch.nn.Module) -> torch.nn.Embedding:
    """The token-embedding layer of a transformers CLIP text model (with or without projection)."""
    layer = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if not isinstance(layer, torch.nn.Embedding):
        raise TypeError(
            f"{type(model).__name__} has no token embedding; expected a transformers CLIP text model"
        )
    return layer


@contextmanager
def _embedding_vectors(
    model: torch.nn.Module, ids: torch.Tensor, chunks: Sequence[TokenChunk]
) -> Iterator[None]:
    """Within the block, the token embeddings of ``ids`` (this call's tensor only: other callers of the
    same module pass through untouched) carry the chunks' embedding vectors at their positions."""
    places = [(row, pos, vec) for row, chunk in enumerate(chunks) for pos, vec in chunk.embeds]
    if not places:
        yield
        return
    rows = torch.tensor([r for r, _, _ in places], device=ids.device)
    cols = torch.tensor([p for _, p, _ in places], device=ids.device)
    vectors = torch.stack([v for _, _, v in places])

    def hook(module: torch.nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
        given = args[0] if args else None
        if (
            not isinstance(given, torch.Tensor)
            or given.data_ptr() != ids.data_ptr()
            or given.shape != ids.shape
        ):
            return None
        out = output.clone()
        out[rows, cols] = vectors.to(device=out.device, dtype=out.dtype)
        return out

    handle = token_embedding(model).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _final_layer_norm(model: torch.nn.Module) -> torch.nn.Module:
    """``final_layer_norm`` of a CLIPTextModel (transformers 5: on the model; 4: on ``text_model``)."""
    norm = getattr(model, "final_layer_norm", None)
    if norm is None:
        norm = getattr(getattr(model, "text_model", None), "final_layer_norm", None)
    if norm is None:
        raise TypeError(
            f"{type(model).__name__} has no final_layer_norm; expected a transformers CLIP text model"
        )
    return norm


def _encode_one(
    spec: TextEncoderSpec, chunks: Sequence[TokenChunk], clip_skip: int | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``([1, 77 * len(chunks), width] in the model dtype, pooled [1, dim] or None)``."""
    layer = spec.layer if clip_skip is None else clip_skip
    device, _ = _model_place(spec.model)
    weighted = any(c.weighted for c in chunks)
    batch = [*chunks, empty_chunk(spec)] if weighted else list(chunks)
    ids = torch.tensor([c.ids for c in batch], dtype=torch.long, device=device)
    with torch.no_grad(), _embedding_vectors(spec.model, ids, batch):
        out = spec.model(input_ids=ids, output_hidden_states=True)
        hidden = out.hidden_states
        if -layer >= len(hidden):
            z = out.last_hidden_state
        else:
            z = hidden[layer]
            if spec.layer_norm:
                z = _final_layer_norm(spec.model)(z)
        pooled: torch.Tensor | None = None
        if spec.pooled:
            pooled = getattr(out, "text_embeds", None)
            if pooled is None:
                pooled = out.pooler_output
            pooled = pooled[:1]
        if weighted:
            z_empty = z[-1:].float()
            z = z[:-1]
            w = torch.tensor([c.weights for c in chunks], dtype=torch.float32, device=z.device)[..., None]
            moved = (z.float() - z_empty) * w + z_empty
            z = torch.where(w != 1.0, moved, z.float()).to(z.dtype)
    return z.reshape(1, -1, z.shape[-1]), pooled


def encode_chunks(
    chunks: Sequence[Sequence[TokenChunk]],
    encoders: Sequence[TextEncoderSpec],
    *,
    clip_skip: int | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Encode one chunk list per encoder; see the module docstring. Returns ``(cond, pooled)``.

    ``cond`` is ``[1, 77 * k, sum of widths]`` on the first encoder's device, in ``dtype`` (default: the
    first encoder's dtype); ``pooled`` is ``[1, dim]`` or ``None`` when no encoder is marked ``pooled``.
    """
    if not encoders:
        raise ValueError("at least one text encoder is needed")
    if len(chunks) != len(encoders):
        raise ValueError(f"{len(chunks)} chunk lists for {len(encoders)} encoders")
    if clip_skip is not None and clip_skip >= 0:
        raise ValueError(f"clip_skip must be negative (-1 = last layer) or None, got {clip_skip}")
    count = max(max(len(c) for c in chunks), 1)
    device, model_dtype = _model_place(encoders[0].model)
    out_dtype = dtype or model_dtype
    parts: list[torch.Tensor] = []
    pooled: torch.Tensor | None = None
    for spec, own in zip(encoders, chunks, strict=True):
        padded = [*own, *([empty_chunk(spec)] * (count - len(own)))]
        z, p = _encode_one(spec, padded, clip_skip)
        parts.append(z.to(device=device, dtype=out_dtype))
        if pooled is None and p is not None:
            pooled = p.to(device=device, dtype=out_dtype)
    return torch.cat(parts, dim=-1), pooled


def encode_texts(
    texts: Sequence[str],
    encoders: Sequence[TextEncoderSpec],
    *,
    clip_skip: int | None = None,
    style: PromptStyle = "comfy",
    dtype: torch.dtype | None = None,
    embeddings: Sequence[EmbeddingRows] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One prompt per encoder (same order), encoded and concatenated on the feature axis.
    ``embeddings``: one name -> vectors mapping per encoder (see :func:`tokenize_weighted`)."""
    if len(texts) != len(encoders):
        raise ValueError(f"{len(texts)} texts for {len(encoders)} encoders")
    if embeddings is not None and len(embeddings) != len(encoders):
        raise ValueError(f"{len(embeddings)} embedding mappings for {len(encoders)} encoders")
    per_encoder = embeddings if embeddings is not None else [None] * len(encoders)
    chunks = [
        tokenize_prompt(t, spec, style=style, embeddings=e)
        for t, spec, e in zip(texts, encoders, per_encoder, strict=True)
    ]
    return encode_chunks(chunks, encoders, clip_skip=clip_skip, dtype=dtype)


def encode_prompt(
    text: str,
    encoders: Sequence[TextEncoderSpec],
    *,
    clip_skip: int | None = None,
    style: PromptStyle = "comfy",
    dtype: torch.dtype | None = None,
    embeddings: Sequence[EmbeddingRows] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``CLIPTextEncode``: the same prompt through every encoder. Returns ``(cond [1, 77k, C], pooled)``."""
    return encode_texts(
        [text] * len(encoders), encoders, clip_skip=clip_skip, style=style, dtype=dtype, embeddings=embeddings
    )


def encode_sdxl(
    text_g: str,
    text_l: str,
    encoders: Sequence[TextEncoderSpec],
    *,
    clip_skip: int | None = None,
    style: PromptStyle = "comfy",
    dtype: torch.dtype | None = None,
    embeddings: Sequence[EmbeddingRows] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``CLIPTextEncodeSDXL``: ``encoders`` is ``(clip_l, clip_g)``; ``text_l`` goes to CLIP-L and
    ``text_g`` to OpenCLIP-G. The size/crop conditioning of that node is not text encoding and is left
    to the caller. ``embeddings``: per encoder, in the order (clip_l, clip_g)."""
    if len(encoders) != 2:
        raise ValueError(f"encode_sdxl needs the two SDXL encoders (clip_l, clip_g), got {len(encoders)}")
    return encode_texts(
        [text_l, text_g], encoders, clip_skip=clip_skip, style=style, dtype=dtype, embeddings=embeddings
    )
