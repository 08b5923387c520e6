"""The signature-keyed output cache: LRU under a memory budget, with statistics.

Entries hold node outputs as they are: a tensor produced on the GPU stays on the GPU. Sizes are measured
once when an entry is stored (tensors by their storage, shared storage counted once; other objects may
report their own size through ``__atelier_nbytes__``). An entry larger than the whole budget is not kept.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


class CacheStats(BaseModel):
    hits: int
    misses: int
    entries: int
    bytes: int
    device_bytes: int
    max_bytes: int | None
    evictions: int
    rejected: int
    spills: int = 0
    max_device_bytes: int | None = None


@dataclass(slots=True)
class CacheEntry:
    outputs: tuple[Any, ...]
    ui: dict[str, Any] | None
    nbytes: int
    device_bytes: int


def measure(obj: Any) -> tuple[int, int]:
    """(total bytes, bytes on an accelerator) of an output value."""
    seen: set[int] = set()
    return _measure(obj, seen, 0)


def _measure(obj: Any, seen: set[int], depth: int) -> tuple[int, int]:
    if obj is None or isinstance(obj, (bool, int, float)):
        return 0, 0
    if depth > 8:
        return sys.getsizeof(obj), 0
    sizer = getattr(type(obj), "__atelier_nbytes__", None)
    if sizer is not None:
        n = int(sizer(obj))
        return n, 0
    if isinstance(obj, (str, bytes, bytearray)):
        return sys.getsizeof(obj), 0
    if isinstance(obj, dict):
        total = dev = 0
        for v in obj.values():
            a, b = _measure(v, seen, depth + 1)
            total += a
            dev += b
        return total, dev
    if isinstance(obj, (list, tuple, set, frozenset)):
        total = dev = 0
        for v in obj:
            a, b = _measure(v, seen, depth + 1)
            total += a
            dev += b
        return total, dev
    if _is_data(obj):  # typed values such as conditioning entries: their tensors count
        total = dev = 0
        for f in dataclasses.fields(obj):
            a, b = _measure(getattr(obj, f.name), seen, depth + 1)
            total += a
            dev += b
        return total, dev
    storage = getattr(obj, "untyped_storage", None)
    if storage is not None and hasattr(obj, "device"):  # a torch tensor
        try:
            st = storage()
            key = st.data_ptr()
            if key in seen and key != 0:
                return 0, 0
            seen.add(key)
            n = st.nbytes()
        except Exception:
            n = obj.numel() * obj.element_size()
        return n, (n if obj.device.type != "cpu" else 0)
    nbytes = getattr(obj, "nbytes", None)
    if isinstance(nbytes, int):  # numpy arrays and the like
        return nbytes, 0
    return sys.getsizeof(obj), 0


def default_budget() -> int:
    """A quarter of this machine's RAM, at most 8 GiB: what a long-lived engine may keep by default."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 16 << 30
    return min(total // 4, 8 << 30)


def _is_device_tensor(obj: Any) -> bool:
    return hasattr(obj, "untyped_storage") and hasattr(obj, "device") and obj.device.type != "cpu"


def _is_data(obj: Any) -> bool:
    """A dataclass value (not a class) that does not size itself: model handles report their own size
    and are never taken apart."""
    return (
        dataclasses.is_dataclass(obj)
        and not isinstance(obj, type)
        and getattr(type(obj), "__atelier_nbytes__", None) is None
    )


def _map_tensors(obj: Any, fn: Callable[[Any], Any]) -> Any:
    """``obj`` with every accelerator tensor inside dicts, lists, tuples and dataclass values (such as
    conditioning entries) replaced by ``fn(tensor)``; containers without one are returned as they are."""
    if _is_device_tensor(obj):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, list):
        return type(obj)(_map_tensors(v, fn) for v in obj)  # a list output keeps its kind (node_lists.py)
    if isinstance(obj, tuple):
        return tuple(_map_tensors(v, fn) for v in obj)
    if _is_data(obj):
        changes = {}
        for f in dataclasses.fields(obj):
            if not f.init:
                continue
            value = getattr(obj, f.name)
            mapped = _map_tensors(value, fn)
            if mapped is not value:
                changes[f.name] = mapped
        return dataclasses.replace(obj, **changes) if changes else obj
    return obj


def default_device_budget(device: str) -> int | None:
    """A fifth of the accelerator's memory for cached outputs (the rest is for models and work), or None
    on the CPU."""
    if not str(device).startswith("cuda"):
        return None
    try:
        import torch

        return int(torch.cuda.get_device_properties(torch.device(device)).total_memory * 0.2)
    except Exception:
        return None


class OutputCache:
    """LRU store of node outputs keyed by signature.

    ``max_bytes`` bounds the total size (None: unbounded), ``max_entries`` the number of entries.
    ``max_device_bytes`` bounds what stays on an accelerator: past it, the least recently used entries are
    spilled to host memory (``spill`` moves one tensor; by default ``.to("cpu")``) instead of being dropped,
    so a later hit costs a copy back rather than a re-run. ``device_room`` (set by the engine's device
    budget, engine/memory.py) says how many bytes outputs may keep on the device beside the loaded models,
    and the budget spills outputs (``spill_device``) before it offloads a model. Thread-safe; lookups are
    O(1).
    """

    def __init__(
        self,
        max_bytes: int | None = None,
        max_entries: int | None = None,
        *,
        max_device_bytes: int | None = None,
        spill: Callable[[Any], Any] | None = None,
        device_room: Callable[[], int | None] | None = None,
    ) -> None:
        self.device_room = device_room
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.max_device_bytes = max_device_bytes
        self._spill_tensor = spill or (lambda t: t.to("cpu"))
        self.spills = 0
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._lock = threading.RLock()
        self._bytes = 0
        self._device_bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.rejected = 0

    def get(self, signature: str) -> CacheEntry | None:
        with self._lock:
            entry = self._entries.get(signature)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(signature)
            self.hits += 1
            return entry

    def __contains__(self, signature: object) -> bool:
        return signature in self._entries

    def put(self, signature: str, outputs: tuple[Any, ...], ui: dict[str, Any] | None = None) -> bool:
        """Store outputs; returns False when they are larger than the whole budget (not kept)."""
        nbytes, device_bytes = measure(outputs)
        with self._lock:
            old = self._entries.pop(signature, None)
            if old is not None:
                self._bytes -= old.nbytes
                self._device_bytes -= old.device_bytes
            if self.max_bytes is not None and nbytes > self.max_bytes:
                self.rejected += 1
                return False
            self._entries[signature] = CacheEntry(outputs, ui, nbytes, device_bytes)
            self._bytes += nbytes
            self._device_bytes += device_bytes
            self._spill(keep=signature)
            self._evict(keep=signature)
            return True

    def _device_limit(self) -> int | None:
        room = self.device_room() if self.device_room is not None else None
        if room is None:
            return self.max_device_bytes
        return room if self.max_device_bytes is None else min(room, self.max_device_bytes)

    @property
    def device_bytes(self) -> int:
        return self._device_bytes

    def spill_device(self, limit: int) -> int:
        """Spill the least recently used entries to the host until at most ``limit`` bytes stay on the
        device (the device budget's call before it offloads a model); returns the bytes left there."""
        with self._lock:
            self._spill(keep=None, limit=limit)
            return self._device_bytes

    def _spill(self, keep: str | None, limit: int | None = None) -> None:
        if limit is None:
            limit = self._device_limit()
        if limit is None or self._device_bytes <= limit:
            return
        for sig in list(self._entries):
            if self._device_bytes <= limit:
                break
            entry = self._entries[sig]
            if sig == keep or entry.device_bytes == 0:
                continue
            entry.outputs = _map_tensors(entry.outputs, self._spill_tensor)
            nbytes, device_bytes = measure(entry.outputs)
            self._bytes += nbytes - entry.nbytes
            self._device_bytes += device_bytes - entry.device_bytes
            entry.nbytes, entry.device_bytes = nbytes, device_bytes
            self.spills += 1

    def _evict(self, keep: str) -> None:
        while self._entries and (
            (self.max_bytes is not None and self._bytes > self.max_bytes)
            or (self.max_entries is not None and len(self._entries) > self.max_entries)
        ):
            sig = next(iter(self._entries))
            if sig == keep:
                if len(self._entries) == 1:
                    break
                self._entries.move_to_end(sig)
                continue
            self._drop(sig)
            self.evictions += 1

    def _drop(self, signature: str) -> None:
        entry = self._entries.pop(signature)
        self._bytes -= entry.nbytes
        self._device_bytes -= entry.device_bytes

    def discard(self, signatures: Iterable[str]) -> None:
        with self._lock:
            for sig in signatures:
                if sig in self._entries:
                    self._drop(sig)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self._device_bytes = 0

    def signatures(self, limit: int | None = None) -> list[str]:
        """The signatures held, most recently used first (at most ``limit``): what a scheduler routing jobs
        to the worker whose cache already holds their upstream results compares against."""
        with self._lock:
            keys = reversed(self._entries)
            return [k for _, k in zip(range(limit), keys, strict=False)] if limit is not None else list(keys)

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                hits=self.hits,
                misses=self.misses,
                entries=len(self._entries),
                bytes=self._bytes,
                device_bytes=self._device_bytes,
                max_bytes=self.max_bytes,
                evictions=self.evictions,
                rejected=self.rejected,
                spills=self.spills,
                max_device_bytes=self.max_device_bytes,
            )
