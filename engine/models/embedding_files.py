"""Textual-inversion embedding files: the layouts in use, read into vectors per text encoder.

Layouts recognised (what A1111, ComfyUI, kohya's sd-scripts and diffusers write):

- A1111 ``.pt``: ``{"string_to_param": {"*": [n, width]}, "string_to_token": ..., "name": ..., ...}``;
- ``.safetensors`` from sd-scripts or A1111: ``{"emb_params": [n, width]}``;
- SDXL (``.safetensors``): ``{"clip_l": [n, 768], "clip_g": [n, 1280]}``, one set per text encoder;
- diffusers' ``learned_embeds.bin``: ``{"<token>": [width] or [n, width]}`` (a single tensor);
- a bare tensor.

An SD1.x/SD2.x file names no encoder: its vectors are stored under the key ``""`` and fit whichever
encoder has their width (see ``engine/models/embeddings.py``). ``.safetensors`` files are read with
safetensors; anything else only through ``torch.load(weights_only=True)``, which refuses pickled code:
such a file is reported, never executed. Vectors come back as float32 on the CPU, ``[n, width]``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch

__all__ = ["ENCODER_KEYS", "EmbeddingFileError", "EmbeddingVectors", "read_embedding_file"]

#: Keys of files that carry one vector set per text encoder (SDXL's layout).
ENCODER_KEYS: Final = ("clip_l", "clip_g")
#: Key of the vectors of a file that names no encoder.
ANY_ENCODER: Final = ""


class EmbeddingFileError(ValueError):
    """An embedding file that cannot be read or whose layout is not one of the known ones."""


@dataclass(frozen=True, eq=False)
class EmbeddingVectors:
    """The vectors of one embedding file: encoder key (``clip_l``, ``clip_g``, or ``""`` for any encoder
    of the right width) -> float32 ``[n, width]`` on the CPU."""

    path: Path
    vectors: Mapping[str, torch.Tensor]

    @property
    def count(self) -> int:
        """Vectors per encoder (``n``); the same for every key of a well-formed file."""
        return int(next(iter(self.vectors.values())).shape[0])

    def describe(self) -> str:
        """``"2 vectors of width 768"`` or ``"clip_l: 2 x 768, clip_g: 2 x 1280"``."""
        if set(self.vectors) == {ANY_ENCODER}:
            t = self.vectors[ANY_ENCODER]
            return f"{t.shape[0]} vector{'s' if t.shape[0] != 1 else ''} of width {t.shape[1]}"
        return ", ".join(f"{k}: {t.shape[0]} x {t.shape[1]}" for k, t in self.vectors.items())


def read_embedding_file(path: Path) -> EmbeddingVectors:
    """Read an embedding file in any of the known layouts (see the module docstring)."""
    data = _load(path)
    vectors = _vectors(data, path)
    counts = {int(t.shape[0]) for t in vectors.values()}
    if len(counts) != 1:
        shapes = ", ".join(f"{k}: {tuple(t.shape)}" for k, t in vectors.items())
        raise EmbeddingFileError(f"embedding file {path}: encoders have different vector counts ({shapes})")
    return EmbeddingVectors(path, vectors)


def _load(path: Path) -> Any:
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EmbeddingFileError(f"embedding file {path} cannot be read: {_reason(exc)}") from exc


def _reason(exc: Exception) -> str:
    """A one-line reason; torch's weights_only refusal is long and suggests unsafe loading instead."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found is not None:
        return (
            f"it holds pickled Python objects ({found.group(1)}), and .pt/.bin files are only loaded with "
            "torch.load(weights_only=True), which accepts tensors and plain containers"
        )
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _vectors(data: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(data, torch.Tensor):
        return {ANY_ENCODER: _matrix(data, path, "the tensor")}
    if not isinstance(data, Mapping):
        raise EmbeddingFileError(
            f"embedding file {path} holds a {type(data).__name__}, not a dict of tensors"
        )
    if "string_to_param" in data:  # A1111 .pt
        params = data["string_to_param"]
        tensors = (
            [v for v in params.values() if isinstance(v, torch.Tensor)] if isinstance(params, Mapping) else []
        )
        if len(tensors) != 1:
            raise EmbeddingFileError(f"embedding file {path}: string_to_param should hold one tensor")
        return {ANY_ENCODER: _matrix(tensors[0], path, "string_to_param")}
    keyed = {k: data[k] for k in ENCODER_KEYS if isinstance(data.get(k), torch.Tensor)}
    if keyed:  # SDXL: one set per encoder
        return {k: _matrix(v, path, k) for k, v in keyed.items()}
    if isinstance(data.get("emb_params"), torch.Tensor):  # sd-scripts / A1111 .safetensors
        return {ANY_ENCODER: _matrix(data["emb_params"], path, "emb_params")}
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if len(tensors) == 1:  # diffusers: {"<token>": vector}
        ((key, value),) = tensors.items()
        return {ANY_ENCODER: _matrix(value, path, str(key))}
    keys = ", ".join(repr(k) for k in list(data)[:8]) or "none"
    raise EmbeddingFileError(
        f"embedding file {path} has no known layout (keys: {keys}); expected string_to_param (A1111 .pt), "
        "emb_params (.safetensors), clip_l/clip_g (SDXL) or a single tensor"
    )


def _matrix(t: torch.Tensor, path: Path, key: str) -> torch.Tensor:
    t = t.detach()
    if t.dim() == 1:
        t = t[None]
    if t.dim() != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise EmbeddingFileError(
            f"embedding file {path}: {key} has shape {tuple(t.shape)}, expected [vectors, width]"
        )
    if not t.is_floating_point():
        raise EmbeddingFileError(f"embedding file {path}: {key} is {t.dtype}, expected floating point")
    return t.to(device="cpu", dtype=torch.float32).contiguous()
