"""Cheap fingerprints for cache signatures; content hashes only on demand, once per file version."""

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from atelier.engine import hashing as hashing_module
from atelier.engine.models import (
    FileHashes,
    file_fingerprint,
    file_hash,
    file_sha256,
    load_checkpoint,
    write_tiny_checkpoint,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(
        "sd15", tmp_path_factory.mktemp("hash") / "h.safetensors", seed=3, dtype=torch.float16
    )


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every content hash computed during the test (the real hashing still runs)."""
    seen: list[Path] = []
    real = hashing_module.sha256_of_file

    def counting(path: Path) -> str:
        seen.append(path)
        return real(path)

    monkeypatch.setattr(hashing_module, "sha256_of_file", counting)
    return seen


def _rewrite(path: Path, data: bytes) -> None:
    """Write new contents and make sure the modification time moves (coarse file system clocks)."""
    before = path.stat().st_mtime_ns
    path.write_bytes(data)
    if path.stat().st_mtime_ns == before:
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


def test_loading_a_checkpoint_reads_no_hash(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(path: Path) -> str:
        raise AssertionError(f"hashed {path} while loading")

    monkeypatch.setattr(hashing_module, "sha256_of_file", forbidden)
    hashes = FileHashes()
    loaded = load_checkpoint(tiny, hashes=hashes)
    assert loaded.path == tiny and loaded.fingerprint == file_fingerprint(tiny)
    assert len(hashes) == 0
    with pytest.raises(AssertionError, match="hashed"):
        loaded.sha256  # noqa: B018 - the first access is what hashes


def test_loaded_sha256_is_lazy_and_computed_once(tiny: Path, calls: list[Path]) -> None:
    expected = hashlib.sha256(tiny.read_bytes()).hexdigest()
    hashes = FileHashes()
    loaded = load_checkpoint(tiny, hashes=hashes)
    assert calls == []
    assert loaded.sha256 == expected and loaded.autov2 == expected[:10]
    assert loaded.sha256 == expected
    assert len(calls) == 1
    assert hashes.cached(tiny) == expected
    # a second load of the same file version shares the cache
    assert load_checkpoint(tiny, hashes=hashes).sha256 == expected and len(calls) == 1


def test_compute_hash_hashes_at_load(tiny: Path, calls: list[Path]) -> None:
    loaded = load_checkpoint(tiny, hashes=FileHashes(), compute_hash=True)
    assert len(calls) == 1
    assert loaded.sha256 == hashlib.sha256(tiny.read_bytes()).hexdigest() and len(calls) == 1


def test_fingerprint_is_cheap_and_changes_when_the_file_is_rewritten(
    tmp_path: Path, calls: list[Path]
) -> None:
    path = tmp_path / "f.safetensors"
    path.write_bytes(b"a" * 100)
    first = file_fingerprint(path)
    assert first == file_fingerprint(path)
    assert str(path.resolve()) in first
    _rewrite(path, b"b" * 100)  # same size, new contents
    assert file_fingerprint(path) != first
    assert calls == []  # no content was read
    # the same file through another path (a symlink) has the same fingerprint
    link = tmp_path / "link.safetensors"
    link.symlink_to(path)
    assert file_fingerprint(link) == file_fingerprint(path)


def test_sha256_is_computed_once_per_file_version(tmp_path: Path, calls: list[Path]) -> None:
    path = tmp_path / "v.bin"
    path.write_bytes(b"version one")
    hashes = FileHashes()
    one = hashes.sha256(path)
    assert one == hashes.sha256(path) == hashlib.sha256(b"version one").hexdigest()
    assert hashes.hash(path).autov2 == one[:10]
    assert len(calls) == 1
    _rewrite(path, b"version two")
    two = hashes.sha256(path)
    assert two == hashlib.sha256(b"version two").hexdigest() != one
    assert hashes.sha256(path) == two
    assert len(calls) == 2


def test_module_functions_hash_now_and_an_engines_folders_remember(tmp_path: Path, calls: list[Path]) -> None:
    from atelier.engine.folders import Folders

    path = tmp_path / "shared.bin"
    path.write_bytes(os.urandom(1000))
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert file_sha256(path) == expected
    assert file_hash(path).sha256 == expected and file_hash(path).autov2 == expected[:10]
    assert len(calls) == 3  # read each time: no process-wide cache
    one, two = Folders(), Folders()
    assert one.sha256(path) == one.sha256(path) == two.sha256(path) == expected
    assert len(calls) == 5  # once per engine


def test_concurrent_requests_hash_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.bin"
    path.write_bytes(b"concurrent")
    count = 0
    real = hashing_module.sha256_of_file

    def slow(p: Path) -> str:
        nonlocal count
        count += 1
        time.sleep(0.2)
        return real(p)

    monkeypatch.setattr(hashing_module, "sha256_of_file", slow)
    hashes = FileHashes()
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(hashes.sha256(path))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert count == 1
    assert results == [hashlib.sha256(b"concurrent").hexdigest()] * 8


def test_a_file_changing_while_hashed_is_not_remembered_under_its_old_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "moving.bin"
    path.write_bytes(b"old")
    real = hashing_module.sha256_of_file
    seen: list[str] = []

    def racing(p: Path) -> str:
        value = real(p)
        seen.append(value)
        if len(seen) == 1:
            _rewrite(p, b"new contents")  # changed right after being read
        return value

    monkeypatch.setattr(hashing_module, "sha256_of_file", racing)
    hashes = FileHashes()
    assert hashes.sha256(path) == hashlib.sha256(b"new contents").hexdigest()
    assert seen == [hashlib.sha256(b"old").hexdigest(), hashlib.sha256(b"new contents").hexdigest()]


def test_cache_is_bounded(tmp_path: Path) -> None:
    hashes = FileHashes(max_entries=2)
    files = []
    for n in range(3):
        files.append(tmp_path / f"{n}.bin")
        files[-1].write_bytes(bytes([n]))
        hashes.sha256(files[-1])
    assert len(hashes) == 2
    assert hashes.cached(files[0]) is None and hashes.cached(files[2]) is not None
    hashes.clear()
    assert len(hashes) == 0


def test_folders_fingerprint_and_hash_over_their_files(tmp_path: Path) -> None:
    folder = tmp_path / "pipe"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    weights = folder / "unet" / "w.safetensors"
    weights.write_bytes(b"1234")
    hashes = FileHashes()
    fingerprint, sha = file_fingerprint(folder), hashes.sha256(folder)
    assert fingerprint == file_fingerprint(folder) and sha == hashes.sha256(folder)
    _rewrite(weights, b"5678")
    assert file_fingerprint(folder) != fingerprint
    assert hashes.sha256(folder) != sha


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        file_fingerprint(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError):
        FileHashes().sha256(tmp_path / "nope.safetensors")
