"""Textual-inversion embeddings: file layouts, name resolution, and encoding against references.

Embedding files are written in the real layouts (A1111 ``.pt``, ``.safetensors`` with ``emb_params``,
SDXL with ``clip_l`` + ``clip_g``, diffusers ``.bin``) for the tiny CLIP models and read through the real
code path. The reference for encoding: an embedding whose vectors are the input embeddings of known
tokens must encode exactly like those tokens, bit for bit.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from atelier.engine.folders import Folders
from atelier.engine.models.embedding_files import EmbeddingFileError, read_embedding_file
from atelier.engine.models.embeddings import (
    EmbeddingCache,
    EmbeddingLibrary,
    EmbeddingMismatchError,
    UnknownEmbeddingError,
    embedding_problems,
    embeddings_fingerprint,
    find_embedding,
)
from atelier.engine.models.handles import ClipHandle
from atelier.engine.models.prompt import embedding_names, split_embedding_reference
from atelier.engine.models.text_encode import (
    EMBEDDING_PLACEHOLDER_ID,
    sd1_clip_l,
    sd2_clip_h,
    sdxl_clip_g,
    sdxl_clip_l,
    tokenize_prompt,
)

BOS, EOS = 49406, 49407


def token_rows(model: torch.nn.Module, tokenizer: CLIPTokenizer, text: str) -> torch.Tensor:
    """The input embeddings of ``text``'s tokens, ``[n, width]``: what a trained embedding would hold."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    return model.get_input_embeddings().weight[ids].detach().clone()


def write_a1111_pt(path: Path, vectors: torch.Tensor) -> Path:
    """A1111's layout: string_to_param holds an nn.Parameter, plus bookkeeping entries."""
    torch.save(
        {
            "string_to_token": {"*": 265},
            "string_to_param": {"*": torch.nn.Parameter(vectors.clone())},
            "name": path.stem,
            "step": 1500,
            "sd_checkpoint": "a9263745",
            "sd_checkpoint_name": "v1-5-pruned-emaonly",
        },
        path,
    )
    return path


def write_safetensors(path: Path, vectors: torch.Tensor) -> Path:
    save_file({"emb_params": vectors.contiguous()}, str(path))
    return path


def write_sdxl(path: Path, clip_l: torch.Tensor, clip_g: torch.Tensor) -> Path:
    save_file({"clip_l": clip_l.contiguous(), "clip_g": clip_g.contiguous()}, str(path))
    return path


@pytest.fixture()
def folders(tmp_path: Path) -> Folders:
    (tmp_path / "embeddings").mkdir()
    return Folders(models={"embeddings": [tmp_path / "embeddings"]})


@pytest.fixture()
def emb_dir(folders: Folders) -> Path:
    return folders.models["embeddings"][0]


@pytest.fixture()
def sd1(clip_l: CLIPTextModel, tokenizer: CLIPTokenizer) -> ClipHandle:
    return ClipHandle((sd1_clip_l(clip_l, tokenizer),), family="sd15")


@pytest.fixture()
def sdxl(
    clip_l: CLIPTextModel,
    clip_g: CLIPTextModelWithProjection,
    tokenizer: CLIPTokenizer,
    tokenizer_g: CLIPTokenizer,
) -> ClipHandle:
    return ClipHandle((sdxl_clip_l(clip_l, tokenizer), sdxl_clip_g(clip_g, tokenizer_g)), family="sdxl")


def library(folders: Folders, clip: ClipHandle) -> EmbeddingLibrary:
    return EmbeddingLibrary(folders, clip.embedding_cache)


# ---------------------------------------------------------------- prompt syntax


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("embedding:face", ("face", "")),
        ("embedding:face,", ("face", ",")),
        ("embedding:sub/face.pt", ("sub/face.pt", "")),
        ("embedding:face<lora:x:1>", ("face", "<lora:x:1>")),
        ("embedding:face[x]", ("face", "[x]")),
        ("embedding:", None),
        ("embedding:,", None),
        ("myembedding:face", None),
        ("Embedding:face", None),
    ],
)
def test_split_embedding_reference(word: str, expected: tuple[str, str] | None) -> None:
    assert split_embedding_reference(word) == expected


def test_embedding_names_in_prompt_order_once_each() -> None:
    prompt = "a (embedding:skin:1.2), embedding:eyes, ((embedding:skin)) BREAK embedding:sub/y.pt"
    assert embedding_names(prompt) == ["skin", "eyes", "sub/y.pt"]
    # a reference starts a word (ComfyUI: after whitespace): an escaped bracket before it is text
    assert embedding_names("\\(embedding:x\\) (embedding:y)") == ["y"]
    assert embedding_names("an embedding: of text, noembedding:x") == []


# ---------------------------------------------------------------- files


def test_a1111_pt_layout(tmp_path: Path) -> None:
    vectors = torch.randn(3, 32)
    emb = read_embedding_file(write_a1111_pt(tmp_path / "face.pt", vectors))
    assert set(emb.vectors) == {""} and emb.count == 3
    assert torch.equal(emb.vectors[""], vectors)
    assert emb.describe() == "3 vectors of width 32"


def test_safetensors_emb_params_layout(tmp_path: Path) -> None:
    vectors = torch.randn(2, 32)
    emb = read_embedding_file(write_safetensors(tmp_path / "face.safetensors", vectors))
    assert torch.equal(emb.vectors[""], vectors)


def test_sdxl_layout_has_one_set_per_encoder(tmp_path: Path) -> None:
    vec_l, vec_g = torch.randn(2, 32), torch.randn(2, 48)
    emb = read_embedding_file(write_sdxl(tmp_path / "xl.safetensors", vec_l, vec_g))
    assert set(emb.vectors) == {"clip_l", "clip_g"}
    assert torch.equal(emb.vectors["clip_l"], vec_l) and torch.equal(emb.vectors["clip_g"], vec_g)
    assert emb.describe() == "clip_l: 2 x 32, clip_g: 2 x 48"


def test_diffusers_bin_layout_single_vector(tmp_path: Path) -> None:
    vector = torch.randn(32)
    torch.save({"<my-face>": vector}, tmp_path / "learned_embeds.bin")
    emb = read_embedding_file(tmp_path / "learned_embeds.bin")
    assert emb.vectors[""].shape == (1, 32) and torch.equal(emb.vectors[""][0], vector)


def test_half_precision_vectors_come_back_float32(tmp_path: Path) -> None:
    vectors = torch.randn(2, 32).half()
    emb = read_embedding_file(write_safetensors(tmp_path / "h.safetensors", vectors))
    assert emb.vectors[""].dtype == torch.float32 and torch.equal(emb.vectors[""], vectors.float())


class NotAllowed:
    """Pickled by reference: ``weights_only`` loading must refuse it, never run it."""


def test_pt_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    torch.save({"string_to_param": {"*": torch.randn(1, 32)}, "extra": NotAllowed()}, tmp_path / "evil.pt")
    with pytest.raises(
        EmbeddingFileError, match=r"evil\.pt cannot be read: it holds pickled Python objects \("
    ):
        read_embedding_file(tmp_path / "evil.pt")


def test_unknown_layout_names_the_keys(tmp_path: Path) -> None:
    save_file({"a": torch.randn(1, 32), "b": torch.randn(1, 32)}, str(tmp_path / "odd.safetensors"))
    with pytest.raises(EmbeddingFileError, match=r"odd\.safetensors has no known layout \(keys: 'a', 'b'\)"):
        read_embedding_file(tmp_path / "odd.safetensors")
    save_file({"emb_params": torch.randn(2, 3, 4)}, str(tmp_path / "cube.safetensors"))
    with pytest.raises(EmbeddingFileError, match=r"emb_params has shape \(2, 3, 4\)"):
        read_embedding_file(tmp_path / "cube.safetensors")


# ---------------------------------------------------------------- finding files


def test_find_by_name_extension_and_subfolder(folders: Folders, emb_dir: Path) -> None:
    v = torch.randn(1, 32)
    write_a1111_pt(emb_dir / "face.pt", v)
    write_safetensors(emb_dir / "face.safetensors", v)
    (emb_dir / "people").mkdir()
    write_safetensors(emb_dir / "people" / "eyes.safetensors", v)
    torch.save({"<t>": v[0]}, emb_dir / "people" / "hands.bin")
    assert find_embedding(folders, "face") == (emb_dir / "face.safetensors").resolve()  # ComfyUI's order
    assert find_embedding(folders, "face.pt") == (emb_dir / "face.pt").resolve()
    assert find_embedding(folders, "people/eyes") == (emb_dir / "people" / "eyes.safetensors").resolve()
    assert find_embedding(folders, "eyes") == (emb_dir / "people" / "eyes.safetensors").resolve()
    assert find_embedding(folders, "hands") == (emb_dir / "people" / "hands.bin").resolve()


def test_unknown_and_escaping_names(folders: Folders, emb_dir: Path, tmp_path: Path) -> None:
    write_safetensors(tmp_path / "outside.safetensors", torch.randn(1, 32))
    for name in ("nope", "../outside", "/etc/passwd"):
        with pytest.raises(UnknownEmbeddingError) as info:
            find_embedding(folders, name)
        assert str(info.value) == f"unknown embedding {name!r} (embeddings folder: {emb_dir})"


def test_problems_name_the_input_and_embedding(folders: Folders, emb_dir: Path) -> None:
    write_safetensors(emb_dir / "face.safetensors", torch.randn(1, 32))
    assert embedding_problems(folders, text="a embedding:face, (embedding:foo:1.2)") == [
        ("text", f"unknown embedding 'foo' (embeddings folder: {emb_dir})")
    ]
    assert embedding_problems(folders, text="a plain prompt") == []


def test_fingerprint_follows_the_referenced_files(folders: Folders, emb_dir: Path) -> None:
    path = write_safetensors(emb_dir / "face.safetensors", torch.randn(1, 32))
    assert embeddings_fingerprint(folders, {"text": "a plain prompt"}) is None
    before = embeddings_fingerprint(folders, {"text": "a embedding:face"})
    linked_before = embeddings_fingerprint(folders, {"text": None})
    assert isinstance(before, dict) and set(before) == {"face"}
    write_safetensors(path, torch.randn(2, 32))
    os.utime(path, ns=(1, 1))  # a different version even on file systems with coarse times
    assert embeddings_fingerprint(folders, {"text": "a embedding:face"}) != before
    assert embeddings_fingerprint(folders, {"text": None}) != linked_before
    with pytest.raises(UnknownEmbeddingError, match="'gone'"):
        embeddings_fingerprint(folders, {"text": "embedding:gone"})


def test_cache_reads_each_file_version_once(emb_dir: Path) -> None:
    path = write_safetensors(emb_dir / "face.safetensors", torch.zeros(1, 32))
    cache = EmbeddingCache()
    first = cache.load(path)
    assert cache.load(path) is first and cache.reads == 1
    write_safetensors(path, torch.ones(1, 32))
    os.utime(path, ns=(1, 1))
    assert torch.equal(cache.load(path).vectors[""], torch.ones(1, 32)) and cache.reads == 2


# ---------------------------------------------------------------- encoding, SD1


def test_embedding_encodes_exactly_like_its_token(
    sd1: ClipHandle, folders: Folders, emb_dir: Path, clip_l: CLIPTextModel, tokenizer: CLIPTokenizer
) -> None:
    write_a1111_pt(emb_dir / "kitty.pt", token_rows(clip_l, tokenizer, "cat"))
    got, _ = sd1.encode("a photo of embedding:kitty", library(folders, sd1))
    want, _ = sd1.encode("a photo of cat")
    assert torch.equal(got, want)
    # and the embedding really changes something: another vector does not give the same
    write_a1111_pt(emb_dir / "kitty.pt", token_rows(clip_l, tokenizer, "dog"))
    os.utime(emb_dir / "kitty.pt", ns=(1, 1))
    other, _ = sd1.encode("a photo of embedding:kitty", library(folders, sd1))
    assert torch.equal(other, sd1.encode("a photo of dog")[0]) and not torch.equal(other, want)


@pytest.mark.parametrize(
    "prompt", ["(embedding:kitty:1.2)", "((embedding:kitty))", "a (red embedding:kitty:0.5)"]
)
def test_embedding_weights_follow_the_prompt_rules(
    sd1: ClipHandle,
    folders: Folders,
    emb_dir: Path,
    clip_l: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    prompt: str,
) -> None:
    write_safetensors(emb_dir / "kitty.safetensors", token_rows(clip_l, tokenizer, "cat"))
    got, _ = sd1.encode(prompt, library(folders, sd1))
    want, _ = sd1.encode(prompt.replace("embedding:kitty", "cat"))
    assert torch.equal(got, want)


def test_weight_moves_away_from_the_empty_prompt(
    sd1: ClipHandle, folders: Folders, emb_dir: Path, clip_l: CLIPTextModel, tokenizer: CLIPTokenizer
) -> None:
    """ComfyUI's rule computed by hand: z = (z - z_empty) * w + z_empty at the embedding's position."""
    write_safetensors(emb_dir / "kitty.safetensors", token_rows(clip_l, tokenizer, "cat"))
    lib = library(folders, sd1)
    plain, _ = sd1.encode("a embedding:kitty", lib)
    weighted, _ = sd1.encode("a (embedding:kitty:1.3)", lib)
    empty, _ = sd1.encode("")
    expected = plain.clone()
    expected[0, 2] = (plain[0, 2] - empty[0, 2]) * 1.3 + empty[0, 2]
    torch.testing.assert_close(weighted, expected, rtol=0, atol=1e-6)
    assert torch.equal(weighted[0, :2], plain[0, :2]) and torch.equal(weighted[0, 3:], plain[0, 3:])


def test_multi_vector_embedding(
    sd1: ClipHandle, folders: Folders, emb_dir: Path, clip_l: CLIPTextModel, tokenizer: CLIPTokenizer
) -> None:
    write_a1111_pt(emb_dir / "redcat.pt", token_rows(clip_l, tokenizer, "red cat"))
    got, _ = sd1.encode("a photo of embedding:redcat, smiling", library(folders, sd1))
    assert torch.equal(got, sd1.encode("a photo of red cat, smiling")[0])


def test_chunks_carry_vectors_at_placeholder_positions(
    sd1: ClipHandle, clip_l: CLIPTextModel, tokenizer: CLIPTokenizer
) -> None:
    rows = tuple(token_rows(clip_l, tokenizer, "red cat").unbind(0))
    (chunk,) = tokenize_prompt("a embedding:e", sd1.encoders[0], embeddings={"e": rows})
    a = tokenizer("a", add_special_tokens=False).input_ids
    assert chunk.ids[:5] == (BOS, *a, EMBEDDING_PLACEHOLDER_ID, EMBEDDING_PLACEHOLDER_ID, EOS)
    assert [p for p, _ in chunk.embeds] == [2, 3]
    assert torch.equal(chunk.embeds[1][1], rows[1])
    # without a mapping the reference is plain text (the low-level tokenizer does not resolve names)
    (plain,) = tokenize_prompt("embedding:e", sd1.encoders[0])
    assert plain.embeds == () and plain.ids[1:-1].count(EMBEDDING_PLACEHOLDER_ID) == 0


@pytest.mark.parametrize(("word", "splits"), [("xyz", False), ("abcdefgh", True)])
def test_embedding_at_the_chunk_boundary_is_placed_like_a_word(
    sd1: ClipHandle,
    folders: Folders,
    emb_dir: Path,
    clip_l: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    word: str,
    splits: bool,
) -> None:
    """73 one-token words, then an embedding of the tokens of ``word`` (one token per character here):
    3 vectors move whole to the next chunk, 8 fill the first chunk and continue (ComfyUI's rule)."""
    rows = token_rows(clip_l, tokenizer, word)
    assert rows.shape[0] == len(word)
    write_safetensors(emb_dir / "e.safetensors", rows)
    head = " ".join(["cat"] * 73)
    chunks = tokenize_prompt(f"{head} embedding:e", sd1.encoders[0], embeddings={"e": tuple(rows.unbind(0))})
    text_chunks = tokenize_prompt(f"{head} {word}", sd1.encoders[0])
    assert [c.ids.index(EOS) for c in chunks] == [c.ids.index(EOS) for c in text_chunks]
    assert chunks[0].ids.index(EOS) == (76 if splits else 74)
    got, _ = sd1.encode(f"{head} embedding:e", library(folders, sd1))
    want, _ = sd1.encode(f"{head} {word}")
    assert got.shape == (1, 154, 32) and torch.equal(got, want)


def test_unknown_embedding_and_missing_source_are_errors(sd1: ClipHandle, folders: Folders) -> None:
    with pytest.raises(UnknownEmbeddingError, match="unknown embedding 'ghost'"):
        sd1.encode("a embedding:ghost", library(folders, sd1))
    with pytest.raises(EmbeddingMismatchError, match="references embedding 'ghost'"):
        sd1.encode("a embedding:ghost")


def test_embedding_of_another_width_is_refused(sd1: ClipHandle, folders: Folders, emb_dir: Path) -> None:
    write_safetensors(emb_dir / "sd2face.safetensors", torch.randn(2, 1024))
    with pytest.raises(EmbeddingMismatchError) as info:
        sd1.encode("embedding:sd2face", library(folders, sd1))
    assert str(info.value) == (
        "embedding 'sd2face' (sd2face.safetensors: 2 vectors of width 1024) does not fit this CLIP, "
        "whose text encoder takes clip_l (width 32)"
    )


def test_sdxl_file_used_with_sd1_takes_its_clip_l_vectors(
    sd1: ClipHandle, folders: Folders, emb_dir: Path, clip_l: CLIPTextModel, tokenizer: CLIPTokenizer
) -> None:
    write_sdxl(emb_dir / "xl.safetensors", token_rows(clip_l, tokenizer, "cat"), torch.randn(1, 48))
    got, _ = sd1.encode("a embedding:xl", library(folders, sd1))
    assert torch.equal(got, sd1.encode("a cat")[0])


# ---------------------------------------------------------------- encoding, SDXL


def test_sdxl_embedding_gives_each_encoder_its_vectors(
    sdxl: ClipHandle,
    folders: Folders,
    emb_dir: Path,
    clip_l: CLIPTextModel,
    clip_g: CLIPTextModelWithProjection,
    tokenizer: CLIPTokenizer,
    tokenizer_g: CLIPTokenizer,
) -> None:
    write_sdxl(
        emb_dir / "kitty.safetensors",
        token_rows(clip_l, tokenizer, "cat"),
        token_rows(clip_g, tokenizer_g, "cat"),
    )
    lib = library(folders, sdxl)
    cond, pooled = sdxl.encode("a photo of (embedding:kitty:1.1)", lib)
    want_cond, want_pooled = sdxl.encode("a photo of (cat:1.1)")
    assert cond.shape == (1, 77, 80) and pooled is not None and want_pooled is not None
    assert torch.equal(cond, want_cond) and torch.equal(pooled, want_pooled)
    cond_xl, pooled_xl = sdxl.encode_sdxl("embedding:kitty smiling", "a embedding:kitty", lib)
    ref_cond, ref_pooled = sdxl.encode_sdxl("cat smiling", "a cat")
    assert torch.equal(cond_xl, ref_cond) and torch.equal(pooled_xl, ref_pooled)  # type: ignore[arg-type]


def test_sd1_embedding_with_sdxl_conditions_clip_l_only(
    sdxl: ClipHandle, folders: Folders, emb_dir: Path, clip_l: CLIPTextModel, tokenizer: CLIPTokenizer
) -> None:
    """As in ComfyUI: CLIP-L gets the vectors; OpenCLIP-G (another width) gets padding in their place."""
    write_a1111_pt(emb_dir / "kitty.pt", token_rows(clip_l, tokenizer, "cat"))
    cond, pooled = sdxl.encode("a photo of embedding:kitty", library(folders, sdxl))
    l_part, _ = sdxl.encode_sdxl("a photo of", "a photo of cat")
    assert torch.equal(cond, l_part)
    _, g_pooled = sdxl.encode("a photo of")
    assert torch.equal(pooled, g_pooled)  # type: ignore[arg-type]


def test_sd1_embedding_only_for_openclip_g_is_refused(
    sdxl: ClipHandle, folders: Folders, emb_dir: Path, clip_l: CLIPTextModel, tokenizer: CLIPTokenizer
) -> None:
    write_a1111_pt(emb_dir / "kitty.pt", token_rows(clip_l, tokenizer, "cat"))
    lib = library(folders, sdxl)
    with pytest.raises(EmbeddingMismatchError, match=r"'kitty' .*takes clip_g \(width 48\)"):
        sdxl.encode_sdxl("embedding:kitty", "a photo", lib)
    sdxl.encode_sdxl("a photo", "embedding:kitty", lib)  # for CLIP-L it fits


def test_embedding_with_clip_skip_shares_the_cache(
    sd1: ClipHandle, folders: Folders, emb_dir: Path, clip_l: CLIPTextModel, tokenizer: CLIPTokenizer
) -> None:
    write_safetensors(emb_dir / "kitty.safetensors", token_rows(clip_l, tokenizer, "cat"))
    skip = sd1.with_layer(-2)
    assert skip.embedding_cache is sd1.embedding_cache
    got, _ = skip.encode("a embedding:kitty", library(folders, skip))
    assert torch.equal(got, skip.encode("a cat")[0])
    assert not torch.equal(got, sd1.encode("a cat")[0])


def test_sd2_takes_files_of_its_width_and_refuses_sdxl_files(
    folders: Folders, emb_dir: Path, clip_g: CLIPTextModelWithProjection, tokenizer_g: CLIPTokenizer
) -> None:
    """SD2's OpenCLIP-H reads files that name no encoder; an SDXL file has nothing for it (no clip_h)."""
    sd2 = ClipHandle((sd2_clip_h(clip_g, tokenizer_g),), family="sd2")
    write_a1111_pt(emb_dir / "h.pt", token_rows(clip_g, tokenizer_g, "cat"))
    got, _ = sd2.encode("a embedding:h", library(folders, sd2))
    assert torch.equal(got, sd2.encode("a cat")[0])
    write_sdxl(emb_dir / "xl.safetensors", torch.randn(1, 32), torch.randn(1, 48))
    with pytest.raises(EmbeddingMismatchError) as info:
        sd2.encode("embedding:xl", library(folders, sd2))
    assert str(info.value) == (
        "embedding 'xl' (xl.safetensors: clip_l: 1 x 32, clip_g: 1 x 48) does not fit this CLIP, "
        "whose text encoder takes clip_h (width 48)"
    )
