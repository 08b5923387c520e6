"""Tokenizing weighted prompts into 77-token chunks and encoding them with tiny CLIP models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from atelier.engine.models.text_encode import (
    TextEncoderSpec,
    empty_chunk,
    encode_chunks,
    encode_prompt,
    encode_sdxl,
    sd1_clip_l,
    sd2_clip_h,
    sdxl_clip_g,
    sdxl_clip_l,
    tokenize_prompt,
)

BOS, EOS = 49406, 49407


def body(chunk_ids: tuple[int, ...], pad: int = EOS) -> list[int]:
    """The prompt tokens of a chunk (between BOS and the first EOS)."""
    assert chunk_ids[0] == BOS
    end = chunk_ids.index(EOS)
    assert all(t == pad for t in chunk_ids[end + 1 :])
    return list(chunk_ids[1:end])


def forward(model: torch.nn.Module, ids: list[int]) -> object:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), output_hidden_states=True)


# ---------------------------------------------------------------- tokenizing


def test_plain_prompt_is_one_chunk(tokenizer: CLIPTokenizer, clip_l: CLIPTextModel) -> None:
    spec = sd1_clip_l(clip_l, tokenizer)
    (chunk,) = tokenize_prompt("a photo of a cat", spec)
    assert len(chunk.ids) == 77 and len(chunk.weights) == 77
    assert chunk.ids[:7] == tuple(tokenizer("a photo of a cat").input_ids)
    assert chunk.ids[7:] == (EOS,) * 70
    assert not chunk.weighted


def test_empty_prompt(
    tokenizer: CLIPTokenizer, tokenizer_g: CLIPTokenizer, clip_g: CLIPTextModelWithProjection
) -> None:
    spec = sdxl_clip_g(clip_g, tokenizer_g)
    assert spec.pad_id == 0
    (chunk,) = tokenize_prompt("", spec)
    assert chunk == empty_chunk(spec)
    assert chunk.ids == (BOS, EOS) + (0,) * 75
    assert tokenize_prompt("  ((  )) ", spec)[0].ids == chunk.ids


def test_weights_follow_tokens(tokenizer: CLIPTokenizer, clip_l: CLIPTextModel) -> None:
    spec = sd1_clip_l(clip_l, tokenizer)
    (chunk,) = tokenize_prompt("a (red:1.5) xyz, ((cat))", spec)
    n = len(body(chunk.ids))
    red = tokenizer("red", add_special_tokens=False).input_ids
    xyz = tokenizer("xyz,", add_special_tokens=False).input_ids
    assert chunk.weights[: n + 2] == (
        1.0,
        1.0,
        *[1.5] * len(red),
        *[1.0] * len(xyz),
        pytest.approx(1.21),
        1.0,
    )
    assert chunk.weighted


def test_long_prompt_gives_three_chunks_without_cutting_words(
    tokenizer: CLIPTokenizer, clip_l: CLIPTextModel
) -> None:
    spec = sd1_clip_l(clip_l, tokenizer)
    # "xyzw" is 4 tokens (x, y, z, w</w>): 50 words = 200 tokens; 18 words (72 tokens) fit in 75.
    words = ["xyzw"] * 50
    chunks = tokenize_prompt(" ".join(words), spec)
    assert len(chunks) == 3
    assert all(len(c.ids) == 77 for c in chunks)
    assert [len(body(c.ids)) for c in chunks] == [72, 72, 56]
    word = tokenizer("xyzw", add_special_tokens=False).input_ids
    for c in chunks:
        assert body(c.ids) == word * (len(body(c.ids)) // 4)


def test_long_words_are_split(tokenizer: CLIPTokenizer, clip_l: CLIPTextModel) -> None:
    spec = sd1_clip_l(clip_l, tokenizer)
    # 74 tokens of "a", then a 10-token word: it is long (>= 8 tokens), so it is cut after 1 token.
    prompt = "a " * 74 + "qwertyuiop"
    chunks = tokenize_prompt(prompt, spec)
    long_word = tokenizer("qwertyuiop", add_special_tokens=False).input_ids
    assert len(long_word) == 10
    assert body(chunks[0].ids) == [320] * 74 + long_word[:1]
    assert body(chunks[1].ids) == long_word[1:]
    # A 7-token word moves to the next chunk whole.
    chunks = tokenize_prompt("a " * 74 + "qwertyu", spec)
    assert body(chunks[0].ids) == [320] * 74
    assert len(body(chunks[1].ids)) == 7


def test_break_starts_a_new_chunk(tokenizer: CLIPTokenizer, clip_l: CLIPTextModel) -> None:
    spec = sd1_clip_l(clip_l, tokenizer)
    chunks = tokenize_prompt("a cat BREAK (red dog)", spec)
    assert len(chunks) == 2
    assert body(chunks[0].ids) == tokenizer("a cat", add_special_tokens=False).input_ids
    assert body(chunks[1].ids) == tokenizer("red dog", add_special_tokens=False).input_ids
    assert chunks[1].weights[1:3] == (pytest.approx(1.1),) * 2
    # A BREAK at the end adds nothing; at the start it leaves an empty first chunk (as A1111).
    assert len(tokenize_prompt("a cat BREAK", spec)) == 1
    assert [len(body(c.ids)) for c in tokenize_prompt("BREAK a cat", spec)] == [0, 2]


# ---------------------------------------------------------------- encoding


def test_plain_encoding_is_the_model_output(tokenizer: CLIPTokenizer, clip_l: CLIPTextModel) -> None:
    cond, pooled = encode_prompt("a photo of a cat", [sd1_clip_l(clip_l, tokenizer)])
    ids = tokenizer("a photo of a cat", padding="max_length", max_length=77).input_ids
    expected = forward(clip_l, ids).last_hidden_state
    assert pooled is None
    assert cond.shape == (1, 77, 32) and cond.dtype == torch.float32
    torch.testing.assert_close(cond, expected, rtol=0, atol=1e-6)
    # Explicit weights of 1 change nothing.
    same, _ = encode_prompt("(a photo:1.0) of (a cat:1)", [sd1_clip_l(clip_l, tokenizer)])
    assert torch.equal(same, cond)


def test_weights_move_along_the_line_from_the_empty_prompt(
    tokenizer: CLIPTokenizer, clip_l: CLIPTextModel
) -> None:
    spec = sd1_clip_l(clip_l, tokenizer)
    plain, _ = encode_prompt("a red cat", [spec])
    weighted, _ = encode_prompt("a (red:1.7) (cat:0.25)", [spec])
    z_empty = forward(clip_l, list(empty_chunk(spec).ids)).last_hidden_state
    expected = plain.clone()
    expected[:, 2] = (plain[:, 2] - z_empty[:, 2]) * 1.7 + z_empty[:, 2]
    expected[:, 3] = (plain[:, 3] - z_empty[:, 3]) * 0.25 + z_empty[:, 3]
    torch.testing.assert_close(weighted, expected, rtol=1e-5, atol=1e-5)
    # Tokens at weight 1 are untouched.
    torch.testing.assert_close(
        weighted[:, [0, 1, *range(4, 77)]], plain[:, [0, 1, *range(4, 77)]], rtol=0, atol=1e-6
    )
    # Weight 0 gives the empty prompt's embedding at that position.
    zero, _ = encode_prompt("a (red:0) cat", [spec])
    torch.testing.assert_close(zero[:, 2], z_empty[:, 2], rtol=1e-5, atol=1e-6)


def test_long_prompt_concatenates_chunks(tokenizer: CLIPTokenizer, clip_l: CLIPTextModel) -> None:
    spec = sd1_clip_l(clip_l, tokenizer)
    prompt = " ".join(["xyzw"] * 50)
    cond, _ = encode_prompt(prompt, [spec])
    assert cond.shape == (1, 3 * 77, 32)
    for k, chunk in enumerate(tokenize_prompt(prompt, spec)):
        expected = forward(clip_l, list(chunk.ids)).last_hidden_state
        torch.testing.assert_close(cond[:, 77 * k : 77 * (k + 1)], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("layer_norm", [True, False])
@pytest.mark.parametrize("clip_skip", [-1, -2, -3])
def test_clip_skip_picks_the_hidden_state(
    tokenizer: CLIPTokenizer, clip_l: CLIPTextModel, clip_skip: int, layer_norm: bool
) -> None:
    spec = TextEncoderSpec(clip_l, tokenizer, layer=-1, layer_norm=layer_norm)
    cond, _ = encode_prompt("a photo of a cat", [spec], clip_skip=clip_skip)
    out = forward(clip_l, list(tokenize_prompt("a photo of a cat", spec)[0].ids))
    expected = out.hidden_states[clip_skip]
    if layer_norm:
        expected = clip_l.final_layer_norm(expected)
    torch.testing.assert_close(cond, expected, rtol=0, atol=1e-6)


def test_clip_skip_defaults_and_limits(tokenizer: CLIPTokenizer, clip_l: CLIPTextModel) -> None:
    ids = list(tokenize_prompt("a cat", sd1_clip_l(clip_l, tokenizer))[0].ids)
    out = forward(clip_l, ids)
    # SDXL's CLIP-L default: penultimate layer without the final layer norm.
    cond, _ = encode_prompt("a cat", [sdxl_clip_l(clip_l, tokenizer)])
    torch.testing.assert_close(cond, out.hidden_states[-2], rtol=0, atol=1e-6)
    # Past the first layer: the final, normalised output (as ComfyUI).
    cond, _ = encode_prompt("a cat", [sdxl_clip_l(clip_l, tokenizer)], clip_skip=-12)
    torch.testing.assert_close(cond, out.last_hidden_state, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="clip_skip"):
        encode_prompt("a cat", [sd1_clip_l(clip_l, tokenizer)], clip_skip=0)
    with pytest.raises(ValueError, match="layer"):
        TextEncoderSpec(clip_l, tokenizer, layer=1)


def test_sd2_preset(tokenizer_g: CLIPTokenizer, clip_l: CLIPTextModel) -> None:
    spec = sd2_clip_h(clip_l, tokenizer_g)
    assert (spec.layer, spec.layer_norm, spec.pad_id, spec.pooled) == (-2, True, 0, False)
    cond, _ = encode_prompt("a cat", [spec])
    out = forward(clip_l, list(tokenize_prompt("a cat", spec)[0].ids))
    torch.testing.assert_close(cond, clip_l.final_layer_norm(out.hidden_states[-2]), rtol=0, atol=1e-6)


def test_sdxl_dual_encoder(
    tokenizer: CLIPTokenizer,
    tokenizer_g: CLIPTokenizer,
    clip_l: CLIPTextModel,
    clip_g: CLIPTextModelWithProjection,
) -> None:
    encoders = [sdxl_clip_l(clip_l, tokenizer), sdxl_clip_g(clip_g, tokenizer_g)]
    prompt = "a photo of a (cat:1.2) " + "xyzw " * 30
    cond, pooled = encode_prompt(prompt, encoders)
    assert cond.shape == (1, 2 * 77, 32 + 48)
    assert pooled is not None and pooled.shape == (1, 24)

    chunks_l = tokenize_prompt(prompt, encoders[0])
    chunks_g = tokenize_prompt(prompt, encoders[1])
    assert [c.ids[-1] for c in chunks_g] == [0, 0] and [c.ids[-1] for c in chunks_l] == [EOS, EOS]
    # Feature axis: CLIP-L then OpenCLIP-G, each its own encoding of the same chunks.
    alone_l, _ = encode_chunks([chunks_l], [encoders[0]])
    alone_g, _ = encode_chunks([chunks_g], [encoders[1]])
    torch.testing.assert_close(cond, torch.cat([alone_l, alone_g], dim=-1), rtol=0, atol=1e-6)

    # Pooled: the projection of the final-layer EOS token of the first chunk (weights do not apply).
    out = forward(clip_g, list(chunks_g[0].ids))
    eos = list(chunks_g[0].ids).index(EOS)
    manual = clip_g.text_projection(out.last_hidden_state[:, eos])
    torch.testing.assert_close(pooled, manual, rtol=0, atol=1e-6)
    torch.testing.assert_close(pooled, out.text_embeds, rtol=0, atol=1e-6)


def test_encode_sdxl_pads_the_shorter_text(
    tokenizer: CLIPTokenizer,
    tokenizer_g: CLIPTokenizer,
    clip_l: CLIPTextModel,
    clip_g: CLIPTextModelWithProjection,
) -> None:
    encoders = [sdxl_clip_l(clip_l, tokenizer), sdxl_clip_g(clip_g, tokenizer_g)]
    cond, pooled = encode_sdxl("a photo of a cat " + "xyzw " * 30, "a red dog", encoders)
    assert cond.shape == (1, 154, 80)
    l_short, _ = encode_prompt("a red dog", [encoders[0]])
    l_empty, _ = encode_prompt("", [encoders[0]])
    torch.testing.assert_close(cond[:, :77, :32], l_short, rtol=0, atol=1e-6)
    torch.testing.assert_close(cond[:, 77:, :32], l_empty, rtol=0, atol=1e-6)
    g_only, g_pooled = encode_prompt("a photo of a cat " + "xyzw " * 30, [encoders[1]])
    torch.testing.assert_close(cond[:, :, 32:], g_only, rtol=0, atol=1e-6)
    torch.testing.assert_close(pooled, g_pooled, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="two SDXL encoders"):
        encode_sdxl("a", "b", encoders[:1])


def test_dtype_follows_the_model_unless_asked(tokenizer: CLIPTokenizer, clip_l: CLIPTextModel) -> None:
    half = CLIPTextModel(clip_l.config).eval()
    half.load_state_dict(clip_l.state_dict())
    half = half.to(torch.bfloat16)
    spec = sd1_clip_l(half, tokenizer)
    cond, _ = encode_prompt("a (cat:1.3)", [spec])
    assert cond.dtype == torch.bfloat16
    cond32, _ = encode_prompt("a (cat:1.3)", [spec], dtype=torch.float32)
    assert cond32.dtype == torch.float32
    torch.testing.assert_close(cond32.to(torch.bfloat16), cond, rtol=0, atol=0)


TOKENIZER_DIR = Path(__file__).resolve().parents[2] / "engine" / "models" / "configs" / "clip_tokenizer"


@pytest.mark.skipif(not (TOKENIZER_DIR / "vocab.json").is_file(), reason="no CLIP tokenizer data shipped yet")
def test_real_clip_bpe(clip_l: CLIPTextModel, clip_g: CLIPTextModelWithProjection) -> None:
    tok_l = CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), model_max_length=77)
    tok_g = CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), model_max_length=77, pad_token="!")
    spec_l, spec_g = sdxl_clip_l(clip_l, tok_l), sdxl_clip_g(clip_g, tok_g)
    (chunk,) = tokenize_prompt("a photo of a cat", spec_l)
    assert chunk.ids[:7] == (49406, 320, 1125, 539, 320, 2368, 49407) and chunk.ids[7:] == (EOS,) * 70
    assert tokenize_prompt("a photo of a cat", spec_g)[0].ids[7:] == (0,) * 70
    # 40 x "portrait photograph," is 40 x 3 tokens: 25 phrases (75 tokens) fill a chunk exactly.
    prompt = "portrait photograph, " * 40
    assert len(tok_l("portrait photograph,", add_special_tokens=False).input_ids) == 3
    chunks = tokenize_prompt(prompt, spec_l)
    assert [len(body(c.ids)) for c in chunks] == [75, 45]
    cond, pooled = encode_prompt(prompt, [spec_l, spec_g])
    assert cond.shape == (1, 154, 80) and pooled is not None
