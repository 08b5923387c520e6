"""Where files live: output, input and temp folders, and model folders by kind.

The composition root (``engine/runtime.py``) builds one :class:`Folders` per engine from its configuration
(flags, environment variables, a config file) and hands it to nodes as ``ctx.files``: their choice lists
(input images, model files) come from it, and every file name that comes from a workflow or a request is
resolved through :func:`resolve_inside`, which never leaves the folder it names. There is no process-wide
"active" instance: two engines in one process (tests, workers) each have their own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .hashing import FileHashes, FileMemo

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
WEIGHT_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


class UnsafePathError(ValueError):
    """A file name that would reach outside its folder."""


@dataclass
class Folders:
    """The folders of one engine, and the file operations nodes need on them (``ctx.files``)."""

    output: Path = Path("output")
    input: Path = Path("input")
    temp: Path = Path("temp")
    #: model kind (``checkpoints``, ``loras``, ...) -> folders searched, in order
    models: dict[str, list[Path]] = field(default_factory=dict)
    #: the pipeline library's folders: the user's own first (installs go there), then shipped ones
    pipelines: list[Path] = field(default_factory=list)
    hashes: FileHashes = field(default_factory=FileHashes, repr=False, compare=False)
    #: small values derived from files (what validation reads in model headers), per file version
    memo: FileMemo = field(default_factory=FileMemo, repr=False, compare=False)

    def ensure(self) -> None:
        for p in (self.output, self.input, self.temp):
            p.mkdir(parents=True, exist_ok=True)

    def list_files(self, folder: Path, extensions: tuple[str, ...]) -> list[str]:
        """Relative names (with ``/``) of the files under ``folder`` with one of ``extensions``, sorted."""
        return sorted(walk_names(folder, extensions))

    def input_images(self) -> list[str]:
        return self.list_files(self.input, IMAGE_EXTENSIONS)

    def input_path(self, name: str) -> Path:
        """An input file by name (never outside the input folder)."""
        return resolve_inside(self.input, name)

    def list_models(self, kind: str) -> list[str]:
        """Model files (and, for checkpoints, diffusers folders) of a kind, as names relative to their
        folder, in the order of the folders searched."""
        names: list[str] = []
        for folder in self.models.get(kind, []):
            names.extend(
                sorted(walk_names(folder, WEIGHT_EXTENSIONS, whole_folder_marker="model_index.json"))
            )
        return sorted(dict.fromkeys(names))

    def find_model(self, kind: str, name: str) -> Path:
        """The path of model ``name`` of ``kind``; never outside the kind's folders."""
        searched = self.models.get(kind, [])
        for folder in searched:
            path = resolve_inside(folder, name)
            if path.exists():
                return path
        where = ", ".join(str(p) for p in searched) or "(no folders configured)"
        raise FileNotFoundError(f"{kind[:-1] if kind.endswith('s') else kind} {name!r} not found in {where}")

    def sha256(self, path: Path) -> str:
        """The content hash of a file, computed once per file version."""
        return self.hashes.sha256(path)


def walk_names(
    folder: Path, extensions: tuple[str, ...], whole_folder_marker: str | None = None
) -> list[str]:
    """Names relative to ``folder`` (with ``/``) of the files under it ending in one of ``extensions``.

    Hidden files and folders are skipped. Linked folders are followed (model folders on a shared drive), each
    real folder once, so a link cycle cannot make the walk endless. A folder holding ``whole_folder_marker``
    (a diffusers model's ``model_index.json``) is one name and is not entered.
    """
    if not folder.is_dir():
        return []
    names: list[str] = []
    seen: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        rel_root = Path(root).relative_to(folder)
        if whole_folder_marker is not None and whole_folder_marker in files:
            names.append(rel_root.as_posix())
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        names.extend(
            (rel_root / f).as_posix()
            for f in files
            if f.lower().endswith(extensions) and not f.startswith(".")
        )
    return names


def resolve_contained(folder: Path, name: str) -> Path:
    """Like :func:`resolve_inside`, and where links lead must be inside ``folder`` too: for files served or
    written over HTTP (outputs, uploads, user data), where a link out of the folder is refused."""
    path = resolve_inside(folder, name)
    base = folder.resolve()
    real = path.resolve()
    if real != base and base not in real.parents:
        raise UnsafePathError(f"{name!r} leads outside {folder}")
    return path


MAX_NAME_BYTES = 200  # per folder or file name: room left for a counter and an extension under 255
MAX_PATH_CHARS = 1024


def relative_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a file to write under a folder (a file-name prefix such as SaveImage's
    ``filename_prefix``, which may hold subfolders separated by ``/``), or None. Checked when a workflow is
    validated, so a bad name fails before the job is queued, and again when the file is written."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "must not contain control characters"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (it holds an unpaired surrogate)"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "must be relative to its folder, not an absolute path"
    if "\\" in name:
        return "separates folders with /, not \\"
    parts = name.split("/")
    if ".." in parts:
        return "must not climb out of its folder with '..'"
    if len(name) > MAX_PATH_CHARS:
        return f"is longer than {MAX_PATH_CHARS} characters"
    if any(len(part.encode("utf-8")) > MAX_NAME_BYTES for part in parts):
        return f"has a folder or file name longer than {MAX_NAME_BYTES} bytes"
    return None


def resolve_inside(folder: Path, name: str) -> Path:
    """``folder / name``, refusing names that are absolute or climb out of ``folder``.

    The check is on the name, not on where links lead: ``..`` parts are resolved lexically and the result must
    stay under ``folder``, so a request can never name a file outside it. Symbolic links *inside* the folder
    (a checkpoint, or a whole sub-folder, linked to a shared drive) are followed when the file is opened, as
    ComfyUI does: where a link points is the user's choice, made on disk, not the request's.
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise UnsafePathError(f"invalid file name {name!r}")
    candidate = Path(name)
    if candidate.is_absolute() or name.startswith(("/", "\\")) or ":" in (candidate.parts or ("",))[0]:
        raise UnsafePathError(f"file name {name!r} must be relative to {folder}")
    relative = os.path.normpath(name)
    if relative == ".." or relative.startswith("../"):
        raise UnsafePathError(f"file name {name!r} reaches outside {folder}")
    base = folder.resolve()
    return base if relative == "." else base / relative
