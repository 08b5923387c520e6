"""The model browser service: the model files of each kind with what their headers say (base model family,
trigger words, training metadata; ``engine/models/browse.py``), their preview images, and the loader
nodes that take them.

Header reads are cached per file version (path, size, modification time) on the service, so listing a
folder again reads only the files that changed. Listing walks folders and reads headers: call from a
worker thread.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from atelier.engine import folders as F
from atelier.engine.models.browse import ModelFileInfo, describe_file, family_label, preview_candidates
from atelier.engine.registry import Registry

#: the loader each kind's files go into first, as ComfyUI's menus offer them
PREFERRED_LOADERS: dict[str, str] = {
    "checkpoints": "CheckpointLoaderSimple",
    "loras": "LoraLoader",
    "vae": "VAELoader",
    "upscale_models": "UpscaleModelLoader",
    "controlnet": "ControlNetLoader",
    "hypernetworks": "HypernetworkLoader",
}


@dataclass(frozen=True)
class UnknownKind:
    kind: str
    kinds: list[str]


@dataclass(frozen=True)
class NoModel:
    """A model name that is not valid or names no file of its kind."""

    reason: str  # "bad" or "missing"
    message: str


@dataclass(frozen=True)
class _Version:
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Loader:
    type: str
    input: str


class ModelBrowserService:
    def __init__(self, folders: F.Folders, registry: Registry) -> None:
        self.folders = folders
        self.registry = registry
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[_Version, ModelFileInfo]] = {}

    def kinds(self) -> list[str]:
        return list(self.folders.models)

    def loaders(self, kind: str) -> list[Loader]:
        """Node types with an input choosing from ``kind``'s files, ComfyUI's usual loader first."""
        found: list[Loader] = []
        for type_name in self.registry:
            node_type = self.registry.get(type_name)
            if node_type is None:
                continue
            for spec in node_type.spec.inputs:
                if spec.model_kind == kind:
                    found.append(Loader(type_name, spec.name))
                    break
        preferred = PREFERRED_LOADERS.get(kind)
        found.sort(key=lambda loader: (loader.type != preferred, loader.type))
        return found

    def listing(self, kind: str) -> dict[str, Any] | UnknownKind:
        """Every file of ``kind`` with its size, time, family, trigger words, details and preview URL."""
        if kind not in self.folders.models:
            return UnknownKind(kind, self.kinds())
        entries = []
        seen: set[str] = set()
        listed = _DirectoryNames()
        for name in self.folders.list_models(kind):
            found = self._locate(kind, name)
            if found is None:
                continue
            folder, path = found
            seen.add(str(path))
            entries.append(self._entry(kind, name, folder, path, full=False, listed=listed))
        self._forget_except(kind, seen)
        return {
            "kind": kind,
            "loaders": [{"type": x.type, "input": x.input} for x in self.loaders(kind)],
            "models": entries,
        }

    def details(self, kind: str, name: str) -> dict[str, Any] | UnknownKind | NoModel:
        """One file, with its whole ``__metadata__`` (long values shortened)."""
        if kind not in self.folders.models:
            return UnknownKind(kind, self.kinds())
        try:
            found = self._locate(kind, name)
        except F.UnsafePathError as exc:
            return NoModel("bad", str(exc))
        if found is None:
            return NoModel("missing", f"no {kind} file {name!r}")
        folder, path = found
        return self._entry(kind, name, folder, path, full=True)

    def preview(self, kind: str, name: str) -> Path | UnknownKind | NoModel:
        """The preview image beside model ``name``: the first sibling image that exists, found inside the
        model's folder only (a link out of it is refused, as for every file served over HTTP)."""
        if kind not in self.folders.models:
            return UnknownKind(kind, self.kinds())
        try:
            found = self._locate(kind, name)
        except F.UnsafePathError as exc:
            return NoModel("bad", str(exc))
        if found is None:
            return NoModel("missing", f"no {kind} file {name!r}")
        image = self._preview_path(found[0], name)
        if image is None:
            return NoModel("missing", f"{kind} file {name!r} has no preview image beside it")
        return image

    # -- internals -----------------------------------------------------------------------------------

    def _locate(self, kind: str, name: str) -> tuple[Path, Path] | None:
        """(the folder holding ``name``, its path): the first of the kind's folders that has it, as loaders
        find it. Raises UnsafePathError for a name that climbs out."""
        for folder in self.folders.models.get(kind, []):
            path = F.resolve_inside(folder, name)
            if _exists(path):
                return folder, path
        return None

    def _preview_path(self, folder: Path, name: str, listed: _DirectoryNames | None = None) -> Path | None:
        for candidate in preview_candidates(name):
            if listed is not None and not listed.has(folder, candidate):
                continue  # one directory listing instead of a lookup per candidate
            try:
                path = F.resolve_contained(folder, candidate)
            except F.UnsafePathError:
                continue
            if _exists(path) and path.is_file():
                return path
        return None

    def _entry(
        self,
        kind: str,
        name: str,
        folder: Path,
        path: Path,
        *,
        full: bool,
        listed: _DirectoryNames | None = None,
    ) -> dict[str, Any]:
        try:
            stat = path.stat()
        except OSError as exc:
            return {"name": name, "error": f"cannot read the file: {exc}"}
        size = _folder_size(path) if path.is_dir() else stat.st_size
        info = self._info(kind, path, _Version(size, stat.st_mtime_ns))
        preview = self._preview_path(folder, name, listed)
        entry: dict[str, Any] = {
            "name": name,
            "size": size,
            "mtime": stat.st_mtime,
            "format": info.format,
            "family": info.family,
            "family_label": family_label(info.family),
            "family_source": info.family_source,
            "trigger_words": info.trigger_words,
            "tags": [list(t) for t in info.tags],
            "details": info.details,
            "preview": (
                f"/atelier/v1/models/{quote(kind)}/preview/{quote(name)}?v={preview.stat().st_mtime_ns}"
                if preview is not None
                else None
            ),
            "error": info.error,
            "note": info.note,
        }
        if full:
            entry["metadata"] = info.metadata
        return entry

    def _info(self, kind: str, path: Path, version: _Version) -> ModelFileInfo:
        key = f"{kind}\0{path}"
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        info = describe_file(kind, path)
        with self._lock:
            self._cache[key] = (version, info)
        return info

    def _forget_except(self, kind: str, paths: set[str]) -> None:
        """Drop cached reads of ``kind``'s files that are gone (deleted or renamed)."""
        prefix = f"{kind}\0"
        with self._lock:
            for key in [k for k in self._cache if k.startswith(prefix) and k[len(prefix) :] not in paths]:
                del self._cache[key]


class _DirectoryNames:
    """The file names in each directory, read once per listing."""

    def __init__(self) -> None:
        self._names: dict[Path, set[str]] = {}

    def has(self, folder: Path, relative: str) -> bool:
        parent, _, base = relative.rpartition("/")
        directory = folder / parent if parent else folder
        names = self._names.get(directory)
        if names is None:
            try:
                names = {entry.name for entry in os.scandir(directory)}
            except OSError:
                names = set()
            self._names[directory] = names
        return base in names


def _exists(path: Path) -> bool:
    """Whether ``path`` exists; a name the system refuses (too long) names nothing."""
    try:
        return path.exists()
    except OSError:
        return False


def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
