"""Where files live: output, input and temp folders, and model folders by kind.

The CLI and the server configure one :class:`Folders` at start-up (flags, environment variables, a config
file); node types read their choice lists (input images, model files) from it, and every file name that
comes from a workflow or a request is resolved through :meth:`Folders.resolve`, which never leaves the
folder it names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .node import Paths

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


class UnsafePathError(ValueError):
    """A file name that would reach outside its folder."""


@dataclass
class Folders:
    output: Path = Path("output")
    input: Path = Path("input")
    temp: Path = Path("temp")
    #: model kind (``checkpoints``, ``loras``, ...) -> folders searched, in order
    models: dict[str, list[Path]] = field(default_factory=dict)

    @property
    def paths(self) -> Paths:
        return Paths(output=self.output, input=self.input, temp=self.temp)

    def ensure(self) -> None:
        for p in (self.output, self.input, self.temp):
            p.mkdir(parents=True, exist_ok=True)

    def list_files(self, folder: Path, extensions: tuple[str, ...]) -> list[str]:
        """Relative names (with ``/``) of the files under ``folder`` with one of ``extensions``, sorted."""
        if not folder.is_dir():
            return []
        names = []
        for root, dirs, files in os.walk(folder, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in files:
                if f.lower().endswith(extensions) and not f.startswith("."):
                    names.append((Path(root) / f).relative_to(folder).as_posix())
        return sorted(names)

    def input_images(self) -> list[str]:
        return self.list_files(self.input, IMAGE_EXTENSIONS)


def resolve_inside(folder: Path, name: str) -> Path:
    """``folder / name``, refusing names that are absolute or climb out of ``folder``."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise UnsafePathError(f"invalid file name {name!r}")
    candidate = Path(name)
    if candidate.is_absolute() or name.startswith(("/", "\\")) or ":" in candidate.parts[0]:
        raise UnsafePathError(f"file name {name!r} must be relative to {folder}")
    base = folder.resolve()
    target = (base / candidate).resolve()
    if target != base and base not in target.parents:
        raise UnsafePathError(f"file name {name!r} reaches outside {folder}")
    return target


_active = Folders()


def active() -> Folders:
    """The folders configured for this process."""
    return _active


def configure(folders: Folders) -> Folders:
    global _active
    _active = folders
    return folders
