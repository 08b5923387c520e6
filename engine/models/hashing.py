"""Content hashes of model files: sha256 and the AUTOV2 short form A1111 and Civitai show.

Hashing streams the whole file, so results are cached per file version (resolved path, size, mtime_ns).
"""

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FileHash:
    sha256: str

    @property
    def autov2(self) -> str:
        return self.sha256[:10]


_hash_cache: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()
_CHUNK = 8 * 1024 * 1024


def _sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_hash(path: str | Path) -> FileHash:
    """sha256 of a file (streamed), cached by (path, size, mtime_ns). For a folder: sha256 over the
    sorted relative paths and sha256 of every file in it."""
    path = Path(path).resolve()
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
            digest.update(file_hash(file).sha256.encode() + b"\n")
        return FileHash(digest.hexdigest())
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _hash_lock:
        cached = _hash_cache.get(key)
    if cached is None:
        cached = _sha256_of_file(path)
        with _hash_lock:
            _hash_cache[key] = cached
    return FileHash(cached)


def file_sha256(path: str | Path) -> str:
    return file_hash(path).sha256
