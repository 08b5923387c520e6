"""The shipped CLIP tokenizer data (vocab.json + merges.txt derived from OpenAI's BPE file)."""

import json

from transformers import CLIPTokenizer

from atelier.engine.models import TOKENIZER_DIR, load_clip_tokenizer


def test_tokenizer_loads_with_from_pretrained() -> None:
    tokenizer = CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), model_max_length=77)
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer.model_max_length == 77
    assert len(tokenizer) == 49408
    assert tokenizer.pad_token_id == 49407


def test_shipped_files() -> None:
    vocab = json.loads((TOKENIZER_DIR / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 49408 and vocab["<|startoftext|>"] == 49406 and vocab["!"] == 0
    merges = (TOKENIZER_DIR / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0].startswith("#version") and len(merges) - 1 == 48894
    assert (TOKENIZER_DIR / "LICENSE.txt").is_file()


def test_open_clip_tokenizer_pads_with_exclamation_mark() -> None:
    clip_l = load_clip_tokenizer()
    open_clip = load_clip_tokenizer("!")
    ids_l = clip_l("a photo of a cat", padding="max_length", max_length=77).input_ids
    ids_g = open_clip("a photo of a cat", padding="max_length", max_length=77).input_ids
    assert ids_l[:7] == ids_g[:7] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert ids_l[7:] == [49407] * 70
    assert ids_g[7:] == [0] * 70
    assert clip_l("(masterpiece:1.2)").input_ids == [49406, 263, 12066, 281, 272, 269, 273, 264, 49407]
    assert clip_l("Hello, café").input_ids == [49406, 3306, 267, 15304, 49407]
