"""CLIP tokenizers: real checkpoints never contain one, so the BPE vocabulary ships in ``configs/``.

diffusers folders may bring their own (``tokenizer/``, ``tokenizer_2/``), which is then used instead.
"""

from pathlib import Path

from atelier.engine.models.info import TOKENIZER_DIR, CheckpointInfo
from atelier.engine.models.libraries import CLIPTokenizer


def load_clip_tokenizer(pad_token: str = "<|endoftext|>", directory: str | None = None) -> CLIPTokenizer:
    """The CLIP BPE tokenizer (shipped vocab unless ``directory`` is given), max length 77. OpenCLIP encoders
    (SD2, SDXL's second) pad with ``"!"``. A new instance each call (~40 ms)."""
    folder = directory or str(TOKENIZER_DIR)
    tokenizer: CLIPTokenizer = CLIPTokenizer.from_pretrained(
        folder, model_max_length=77, pad_token=pad_token, local_files_only=True
    )
    return tokenizer


def tokenizers_for(info: CheckpointInfo, folder: Path | None = None) -> list[CLIPTokenizer]:
    out: list[CLIPTokenizer] = []
    for n, te in enumerate(info.text_encoders):
        own: str | None = None
        if folder is not None:
            candidate = folder / ("tokenizer" if n == 0 else f"tokenizer_{n + 1}")
            if (candidate / "vocab.json").is_file() and (candidate / "merges.txt").is_file():
                own = str(candidate)
        out.append(load_clip_tokenizer(te.pad_token, own))
    return out
