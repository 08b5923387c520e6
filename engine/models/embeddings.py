"""Textual-inversion embeddings: finding ``embedding:NAME`` in the engine's folders, loading it once per
file version, and fitting its vectors to the text encoders of a CLIP.

Names resolve as in ComfyUI, in the ``embeddings`` folders (``ctx.files``): ``NAME`` as written, then
``NAME.safetensors``, ``NAME.pt``, ``NAME.bin``; ``sub/NAME`` names a file in a subfolder, and a bare
``NAME`` not found at the top is looked for in the subfolders too (sorted, first match wins). A name never
reaches outside those folders.

Fitting (:func:`fit_embedding`): a file with per-encoder vectors (SDXL: ``clip_l``, ``clip_g``) gives each
encoder its own set; a file that names no encoder (SD1.x/SD2.x) applies to every encoder of its width,
so an SD1 embedding used with SDXL conditions CLIP-L only. On an encoder it does not fit the reference is
dropped, its slots kept as padding at the end of the chunk (ComfyUI does the same and logs a warning);
an embedding that fits none of the encoders its prompt goes to is refused with an error naming it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import torch

from atelier.engine.folders import Folders, UnsafePathError, resolve_inside
from atelier.engine.hashing import FileVersion, file_fingerprint, file_version

from .embedding_files import ANY_ENCODER, EmbeddingVectors, read_embedding_file
from .prompt import embedding_names

__all__ = [
    "EMBEDDING_EXTENSIONS",
    "EmbeddingCache",
    "EmbeddingLibrary",
    "EmbeddingMismatchError",
    "EmbeddingSource",
    "EncoderSlot",
    "UnknownEmbeddingError",
    "embedding_problems",
    "embeddings_fingerprint",
    "encoder_keys",
    "find_embedding",
    "fit_embedding",
]

KIND: Final = "embeddings"
EMBEDDING_EXTENSIONS: Final = (".safetensors", ".pt", ".bin")
#: The key each family's encoders read from files with one vector set per encoder.
_FAMILY_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "sd15": ("clip_l",),
    "sd2": ("clip_h",),
    "sdxl": ("clip_l", "clip_g"),
    "sdxl_refiner": ("clip_g",),
}

#: One encoder's share of an embedding: a vector per slot, or None where the embedding does not fit it.
Rows = tuple[torch.Tensor | None, ...]


class UnknownEmbeddingError(LookupError):
    """``embedding:NAME`` names no file in the embeddings folders."""

    def __init__(self, name: str, folders: Sequence[Path]) -> None:
        self.name = name
        where = ", ".join(str(p) for p in folders) or "none configured"
        super().__init__(f"unknown embedding {name!r} (embeddings folder: {where})")

    def __str__(self) -> str:  # LookupError would quote the message
        return str(self.args[0])


class EmbeddingMismatchError(ValueError):
    """An embedding whose vectors fit none of the text encoders its prompt goes to."""


class EmbeddingSource(Protocol):
    """Gives the vectors of an embedding by name (raises :class:`UnknownEmbeddingError`)."""

    def __call__(self, name: str) -> EmbeddingVectors: ...


@dataclass(frozen=True)
class EncoderSlot:
    """What an embedding must match to condition one text encoder: its file key and its width."""

    key: str
    width: int


def encoder_keys(family: str, count: int) -> tuple[str, ...]:
    """File keys of a family's encoders (``sdxl``: ``clip_l``, ``clip_g``); unknown families get none."""
    keys = _FAMILY_KEYS.get(family, ())
    return keys if len(keys) == count else ("",) * count


# -- finding files ----------------------------------------------------------------------------------


def find_embedding(files: Folders, name: str) -> Path:
    """The file ``embedding:name`` refers to (see the module docstring), or :class:`UnknownEmbeddingError`."""
    folders = files.models.get(KIND, [])
    for folder in folders:
        hit = _candidate(folder, name)
        if hit is not None:
            return hit
    for folder in folders:
        for sub in _subfolders(folder):
            hit = _candidate(sub, name)
            if hit is not None:
                return hit
    raise UnknownEmbeddingError(name, folders)


def _candidate(folder: Path, name: str) -> Path | None:
    try:
        path = resolve_inside(folder, name)
    except UnsafePathError:
        return None
    if path.is_file():
        return path
    for ext in EMBEDDING_EXTENSIONS:
        with_ext = path.with_name(path.name + ext)
        if with_ext.is_file():
            return with_ext
    return None


def _subfolders(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found: list[Path] = []
    for root, dirs, _ in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / d for d in dirs)
    return found


# -- loading, once per file version -------------------------------------------------------------------


class EmbeddingCache:
    """Embedding files read once per file version (path, size, mtime); the least recently used past
    ``max_entries`` are dropped. Owned by whoever encodes (a CLIP handle), never process-wide."""

    def __init__(self, max_entries: int = 64) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[FileVersion, EmbeddingVectors] = OrderedDict()
        self._lock = threading.Lock()
        self.reads = 0  # files actually read (for tests and statistics)

    def load(self, path: Path) -> EmbeddingVectors:
        version = file_version(path)
        with self._lock:
            hit = self._entries.pop(version, None)
        if hit is None:
            hit = read_embedding_file(path)
            with self._lock:
                self.reads += 1
        with self._lock:
            self._entries[version] = hit
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return hit


@dataclass(frozen=True)
class EmbeddingLibrary:
    """The embeddings of one engine's folders, read through ``cache``: an :class:`EmbeddingSource`."""

    files: Folders
    cache: EmbeddingCache

    def __call__(self, name: str) -> EmbeddingVectors:
        return self.cache.load(find_embedding(self.files, name))


# -- fitting vectors to encoders --------------------------------------------------------------------


def _vectors_for(emb: EmbeddingVectors, slot: EncoderSlot) -> torch.Tensor | None:
    own = emb.vectors.get(slot.key) if slot.key else None
    if own is not None:
        return own if own.shape[1] == slot.width else None
    generic = emb.vectors.get(ANY_ENCODER)
    if generic is not None and generic.shape[1] == slot.width:
        return generic
    return None


def fit_embedding(
    name: str, emb: EmbeddingVectors, slots: Sequence[EncoderSlot], used_by: Iterable[int]
) -> list[Rows]:
    """Per encoder, the rows that ``embedding:name`` contributes (vectors, or ``None`` slots where it does
    not fit). ``used_by``: indices of the encoders whose prompt references it; it must fit one of them."""
    rows: list[Rows] = []
    for slot in slots:
        t = _vectors_for(emb, slot)
        rows.append(tuple(t.unbind(0)) if t is not None else (None,) * emb.count)
    users = sorted(set(used_by))
    if users and all(rows[i][0] is None for i in users):
        takes = ", ".join(f"{s.key or 'encoder'} (width {s.width})" for s in (slots[i] for i in users))
        raise EmbeddingMismatchError(
            f"embedding {name!r} ({emb.path.name}: {emb.describe()}) does not fit this CLIP, "
            f"whose text encoder{'s' if len(users) > 1 else ''} take{'' if len(users) > 1 else 's'} {takes}"
        )
    return rows


def resolve_prompt_embeddings(
    texts: Sequence[str], slots: Sequence[EncoderSlot], source: EmbeddingSource | None
) -> list[dict[str, Rows]] | None:
    """For one text per encoder: each encoder's ``name -> rows`` for the embeddings the texts reference.

    None when no text references an embedding. Without a ``source`` a reference is an error (it would
    otherwise be encoded as the literal text ``embedding:NAME``)."""
    used: dict[str, list[int]] = {}
    for index, text in enumerate(texts):
        for name in embedding_names(text):
            used.setdefault(name, []).append(index)
    if not used:
        return None
    if source is None:
        first = next(iter(used))
        raise EmbeddingMismatchError(
            f"the prompt references embedding {first!r}, but no embeddings folder was given to this encode"
        )
    out: list[dict[str, Rows]] = [{} for _ in slots]
    for name, users in used.items():
        for index, rows in enumerate(fit_embedding(name, source(name), slots, users)):
            out[index][name] = rows
    return out


# -- what nodes need for validation and cache signatures ----------------------------------------------


def embedding_problems(files: Folders, **texts: str) -> list[tuple[str, str]]:
    """``[(input name, "unknown embedding 'x' (embeddings folder: ...)"), ...]`` for literal prompt texts."""
    problems: list[tuple[str, str]] = []
    for input_name, text in texts.items():
        for name in embedding_names(text):
            try:
                find_embedding(files, name)
            except UnknownEmbeddingError as exc:
                problems.append((input_name, str(exc)))
    return problems


def embeddings_fingerprint(files: Folders, texts: Mapping[str, str | None]) -> dict[str, str] | str | None:
    """Identities (path, size, mtime) of the embedding files the texts reference, for a cache signature.

    A text that is ``None`` (linked: known only at run time) may reference any embedding, so then every
    embedding file of the folders counts, as one digest. None when no embedding can be involved."""
    if any(t is None for t in texts.values()):
        listing = [
            file_fingerprint(folder / name)
            for folder in files.models.get(KIND, [])
            for name in files.list_files(folder, EMBEDDING_EXTENSIONS)
        ]
        return (
            "embeddings folder " + hashlib.sha256(repr(listing).encode()).hexdigest()[:16]
            if listing
            else None
        )
    names = {n: None for t in texts.values() if t for n in embedding_names(t)}
    if not names:
        return None
    return {name: file_fingerprint(find_embedding(files, name)) for name in names}
