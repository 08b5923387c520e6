"""Tiny random CLIP text models, UNets and a synthetic CLIP tokenizer for the text/LoRA tests."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest
import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

BOS, EOS = 49406, 49407
#: Words that get a single token each (through BPE merges); anything else splits into characters.
WORDS = ("a", "photo", "of", "cat", "red", "dog", "portrait", "woman", "smiling", "blue", "eyes")


def _byte_chars() -> list[str]:
    """CLIP's byte -> printable character table (same order, so single characters get CLIP's ids)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def make_tokenizer(pad_token: str | None = None) -> CLIPTokenizer:
    chars = _byte_chars()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        pieces = [*word[:-1], word[-1] + "</w>"]
        current = pieces[0]
        for piece in pieces[1:]:
            if (current, piece) not in merges:
                merges.append((current, piece))
            current += piece
            vocab.setdefault(current, len(vocab))
    vocab["<|startoftext|>"] = BOS
    vocab["<|endoftext|>"] = EOS
    extra = {"pad_token": pad_token} if pad_token else {}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77, **extra)


def clip_config(hidden: int, layers: int = 3, projection: int = 16) -> CLIPTextConfig:
    return CLIPTextConfig(
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=2,
        vocab_size=49408,
        max_position_embeddings=77,
        projection_dim=projection,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=EOS,
    )


@pytest.fixture(scope="session")
def tokenizer() -> CLIPTokenizer:
    return make_tokenizer()


@pytest.fixture(scope="session")
def tokenizer_g() -> CLIPTokenizer:
    return make_tokenizer(pad_token="!")


@pytest.fixture(scope="session")
def clip_l() -> CLIPTextModel:
    torch.manual_seed(0)
    return CLIPTextModel(clip_config(32)).eval()


@pytest.fixture(scope="session")
def clip_g() -> CLIPTextModelWithProjection:
    torch.manual_seed(1)
    return CLIPTextModelWithProjection(clip_config(48, projection=24)).eval()


def tiny_unet_sd1() -> UNet2DConditionModel:
    torch.manual_seed(2)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    ).eval()


def tiny_unet_sdxl() -> UNet2DConditionModel:
    """SDXL's block layout (3 levels, attention in the lower two, depth 2 at the bottom), tiny."""
    torch.manual_seed(3)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 32, 64),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2),
        cross_attention_dim=80,
        attention_head_dim=(4, 4, 8),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=8 * 6 + 24,
        norm_num_groups=8,
    ).eval()


@pytest.fixture(scope="session")
def unet_sd1() -> UNet2DConditionModel:
    return tiny_unet_sd1()


@pytest.fixture(scope="session")
def unet_sdxl() -> UNet2DConditionModel:
    return tiny_unet_sdxl()
