"""Derive the shipped CLIP tokenizer files (vocab.json + merges.txt) from ``bpe_simple_vocab_16e6.txt.gz``.

Usage: ``python -m atelier.engine.models.clip_bpe path/to/bpe_simple_vocab_16e6.txt.gz engine/models/configs/clip_tokenizer``

The BPE file lists merges, one ``a b`` pair a line after a version line. CLIP keeps the first
49152 - 256 - 2 = 48894 of them. Its vocabulary, in id order, is the 256 byte symbols of byte-level BPE,
the same 256 with the end-of-word marker ``</w>``, one token per merge, then the two special tokens:
49408 tokens in all.
"""

import gzip
import json
import sys
from pathlib import Path

NUM_MERGES = 49152 - 256 - 2
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


def byte_symbols() -> list[str]:
    """The 256 byte-level BPE symbols in vocabulary order: printable Latin-1 bytes stand for
    themselves (in byte order), the remaining bytes take code points 256, 257, ... (in byte order)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\N{INVERTED EXCLAMATION MARK}"), ord("\N{NOT SIGN}") + 1),
        *range(ord("\N{REGISTERED SIGN}"), ord("\N{LATIN SMALL LETTER Y WITH DIAERESIS}") + 1),
    ]
    others = [b for b in range(256) if b not in set(printable)]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


def derive(bpe_gz: Path, out_dir: Path) -> tuple[int, int]:
    lines = gzip.open(bpe_gz, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 1 + NUM_MERGES]]
    if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"{bpe_gz}: unexpected BPE data")
    symbols = byte_symbols()
    tokens = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges), *SPECIAL_TOKENS]
    vocab = {token: n for n, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError(f"{bpe_gz}: duplicate tokens")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(
        json.dumps(vocab, ensure_ascii=False, separators=(",", ":")), encoding="utf-8"
    )
    text = "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n"
    (out_dir / "merges.txt").write_text(text, encoding="utf-8")
    return len(vocab), len(merges)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    size, merges = derive(Path(argv[0]), Path(argv[1]))
    print(f"{size} tokens, {merges} merges")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
