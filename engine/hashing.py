"""File identity for caches (cheap) and content hashes for people (sha256 / AUTOV2, computed on demand).

Cache signatures only need to change when a file changes, which its resolved path, size and modification
time already tell: :func:`file_fingerprint` costs one ``stat``. The content hash is what images record and
what A1111 / Civitai show, but reading a 7 GB SDXL file takes tens of seconds, so it is computed only when
asked for and remembered per file version, (resolved path, size, mtime_ns), by a :class:`FileHashes`
cache. Each engine owns one (``Folders.hashes``, reached by nodes as ``ctx.files.sha256(path)``); there is
no process-wide cache. The module functions :func:`file_sha256` and :func:`file_hash` hash every time.
"""

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

__all__ = [
    "FileHash",
    "FileHashes",
    "FileMemo",
    "FileVersion",
    "file_autov2",
    "file_fingerprint",
    "file_hash",
    "file_sha256",
    "file_version",
    "sha256_of_file",
]

log = logging.getLogger(__name__)
_CHUNK = 8 * 1024 * 1024
#: (resolved path, size in bytes, mtime in ns): what identifies one version of a file.
FileVersion = tuple[str, int, int]
T = TypeVar("T")


@dataclass(frozen=True)
class FileHash:
    """A file's sha256 and the short form A1111 and Civitai show."""

    sha256: str

    @property
    def autov2(self) -> str:
        """AUTOV2: the first 10 hex digits of the sha256 of the whole file."""
        return self.sha256[:10]


def file_version(path: str | os.PathLike[str]) -> FileVersion:
    """(resolved path, size, mtime_ns) of a file; ``OSError`` if it cannot be stat'ed."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return (str(resolved), stat.st_size, stat.st_mtime_ns)


def _folder_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def file_fingerprint(path: str | os.PathLike[str]) -> str:
    """A cheap identity of a file's current version for cache signatures: changes whenever the file is
    rewritten, replaced or touched, costs a ``stat`` (no reading). For a folder (diffusers pipelines):
    over every file in it. Not a content hash: a copy of the file elsewhere has another fingerprint."""
    resolved = Path(path).resolve()
    if resolved.is_dir():
        parts = [f"{resolved}/"]
        for file in _folder_files(resolved):
            stat = file.stat()
            parts.append(f"{file.relative_to(resolved).as_posix()}:{stat.st_size}:{stat.st_mtime_ns}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()
    name, size, mtime_ns = file_version(resolved)
    return f"{name}:{size}:{mtime_ns}"


def sha256_of_file(path: Path) -> str:
    """The sha256 of a file's bytes, streamed (what :class:`FileHashes` calls; tests replace it)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class HashStore(Protocol):
    """Where hashes outlive the process (``manifest.HashIndex``: a JSON file under the models root)."""

    def known(self, version: FileVersion) -> str | None: ...

    def record(self, version: FileVersion, sha256: str) -> None: ...


class FileHashes:
    """Content hashes remembered per file version, at most ``max_entries`` (least recently used go first).

    Thread-safe, and a file version is hashed once even when several threads ask at the same time (the
    others wait for the first). A file that changes while it is being read is hashed again for its new
    version rather than remembered under the old one. With a ``store``, hashes found there are not read
    again and new ones are recorded there, so a fresh process does not re-read files an earlier one hashed.
    :meth:`prefetch` starts hashing in the background, so that whoever asks later waits less."""

    def __init__(self, max_entries: int = 512, store: HashStore | None = None) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.store = store
        self._done: OrderedDict[FileVersion, str] = OrderedDict()
        self._busy: dict[FileVersion, threading.Lock] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._done)

    def clear(self) -> None:
        with self._lock:
            self._done.clear()

    def cached(self, path: str | os.PathLike[str]) -> str | None:
        """The sha256 of the file's current version if it was computed already, else None (no reading)."""
        key = file_version(path)
        with self._lock:
            return self._done.get(key)

    def sha256(self, path: str | os.PathLike[str]) -> str:
        """The sha256 of a file, or for a folder a sha256 over the sorted relative paths and the sha256 of
        every file in it. Computed on the first request per file version."""
        resolved = Path(path).resolve()
        if resolved.is_dir():
            digest = hashlib.sha256()
            for file in _folder_files(resolved):
                digest.update(file.relative_to(resolved).as_posix().encode() + b"\0")
                digest.update(self.sha256(file).encode() + b"\n")
            return digest.hexdigest()
        for _ in range(3):
            key = file_version(resolved)
            with self._lock:
                hit = self._remembered(key)
                if hit is not None:
                    return hit
                busy = self._busy.setdefault(key, threading.Lock())
            with busy:
                with self._lock:
                    hit = self._remembered(key)
                if hit is None and self.store is not None:
                    hit = self.store.known(key)
                    if hit is not None:
                        with self._lock:
                            self._busy.pop(key, None)
                            self._remember(key, hit)
                if hit is not None:
                    return hit
                value = sha256_of_file(resolved)
                unchanged = file_version(resolved) == key
                with self._lock:
                    self._busy.pop(key, None)
                    if unchanged:
                        self._remember(key, value)
                if unchanged:
                    if self.store is not None:
                        self.store.record(key, value)
                    return value
        raise OSError(f"{resolved}: the file kept changing while it was being hashed")

    def hash(self, path: str | os.PathLike[str]) -> FileHash:
        return FileHash(self.sha256(path))

    def prefetch(self, path: str | os.PathLike[str]) -> threading.Thread | None:
        """Hash a file in a background thread unless its current version is known (None then), so that a
        later :meth:`sha256` (a saved image's provenance) finds it ready or waits only for the rest. Errors
        are logged: the later call raises them again."""
        try:
            if self.cached(path) is not None or not Path(path).is_file():
                return None
        except OSError:
            return None

        def run() -> None:
            try:
                self.sha256(path)
            except Exception as exc:  # noqa: BLE001 - background work: logged, raised again when asked
                log.warning("hashing %s in the background failed: %s", path, exc)

        thread = threading.Thread(target=run, name=f"hash {Path(path).name}", daemon=True)
        thread.start()
        return thread

    def _remembered(self, key: FileVersion) -> str | None:
        hit = self._done.get(key)
        if hit is not None:
            self._done.move_to_end(key)
        return hit

    def _remember(self, key: FileVersion, value: str) -> None:
        self._done[key] = value
        self._done.move_to_end(key)
        while len(self._done) > self.max_entries:
            self._done.popitem(last=False)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file (or folder, see :meth:`FileHashes.sha256`), read now (nothing remembered:
    long-lived callers keep a :class:`FileHashes`)."""
    return FileHashes(max_entries=1).sha256(path)


def file_hash(path: str | os.PathLike[str]) -> FileHash:
    """sha256 and AUTOV2 of a file, read now."""
    return FileHash(file_sha256(path))


def file_autov2(path: str | os.PathLike[str]) -> str:
    """The AUTOV2 short hash (first 10 hex digits of the sha256) A1111 and Civitai show."""
    return file_hash(path).autov2


class FileMemo:
    """Small values derived from files (what a model file's header says), remembered per file version and
    per kind of value, at most ``max_entries`` (least recently used go first). Thread-safe; a value may be
    computed twice when two threads ask at once (both results are the same)."""

    def __init__(self, max_entries: int = 256) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._values: OrderedDict[tuple[str, FileVersion], object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, what: str, path: str | os.PathLike[str], compute: Callable[[Path], T]) -> T:
        """``compute(path)``, or the value it gave before for this version of the file (a folder is
        computed every time: its version does not follow its contents)."""
        resolved = Path(path).resolve()
        if resolved.is_dir():
            return compute(resolved)
        key = (what, file_version(resolved))
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]  # type: ignore[return-value]
        value = compute(resolved)
        with self._lock:
            self._values[key] = value
            while len(self._values) > self.max_entries:
                self._values.popitem(last=False)
        return value
