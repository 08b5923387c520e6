"""Recently used models kept in host memory, so that loading one again does not read its file.

The model loader (``model_loader.py``) keeps a few models ready on its device; when it drops one, it hands
it here. What is kept depends on where the device is:

* **the device is the host (CPU)**: the dropped object itself. Its tensors are already in host memory, so
  keeping it costs nothing more than not freeing it, and a copy would double the memory. A second load
  returns the very same object.
* **another device (CUDA, MPS)**: a host copy of the object, made when it is dropped: its torch modules are
  cloned with their tensors copied to host memory (pinned on CUDA, for fast transfers back), everything else
  (configs, tokenizers, descriptions) shared. The device object is left alone, so outputs cached elsewhere
  that still hold it keep working, and it is freed once nothing does. A second load moves a fresh clone to
  the device: no file read, no key conversion, no random initialisation.

Entries are bounded by a budget in bytes (the size of their tensors) and dropped least recently used first;
an object larger than the whole budget is not kept. Generic: objects are taken apart only as far as torch
modules found on the object itself, in its attributes, or in lists / tuples / dicts among them; an object
without any module is not kept.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Any

__all__ = ["HostCache", "clone_to", "host_bytes", "modules_of"]


def _modules_in(value: Any) -> Iterator[Any]:
    import torch

    if isinstance(value, torch.nn.Module):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            if isinstance(item, torch.nn.Module):
                yield item
    elif isinstance(value, dict):
        for item in value.values():
            if isinstance(item, torch.nn.Module):
                yield item


def modules_of(obj: Any) -> list[Any]:
    """The torch modules an object is made of: itself, or those among its attributes (one level, lists,
    tuples and dicts included)."""
    import torch

    if isinstance(obj, torch.nn.Module):
        return [obj]
    found: list[Any] = []
    for value in getattr(obj, "__dict__", {}).values():
        found.extend(_modules_in(value))
    return found


def host_bytes(obj: Any) -> int:
    """Bytes of the parameters and buffers of an object's modules (each tensor counted once)."""
    seen: set[int] = set()
    total = 0
    for module in modules_of(obj):
        for tensor in [*module.parameters(), *module.buffers()]:
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


def _clone_module(module: Any, device: Any, pin: bool) -> Any:
    """A copy of a module whose parameters and buffers are copies on ``device`` (nothing is copied on the
    module's own device)."""
    import torch

    memo: dict[int, Any] = {}
    for tensor in [*module.parameters(), *module.buffers()]:
        if id(tensor) in memo:
            continue
        data = tensor.detach()
        if pin and torch.device(device).type == "cpu" and data.device.type == "cuda":
            moved = torch.empty(data.shape, dtype=data.dtype, pin_memory=True).copy_(data)
        else:
            moved = data.to(device, non_blocking=data.is_pinned(), copy=True)  # a copy even on one device
        if isinstance(tensor, torch.nn.Parameter):
            moved = torch.nn.Parameter(moved, requires_grad=tensor.requires_grad)
        memo[id(tensor)] = moved
    clone = copy.deepcopy(module, memo)
    return clone


def _clone_value(value: Any, device: Any, pin: bool) -> Any:
    import torch

    if isinstance(value, torch.nn.Module):
        return _clone_module(value, device, pin)
    if isinstance(value, list | tuple) and any(isinstance(v, torch.nn.Module) for v in value):
        return type(value)(
            _clone_module(v, device, pin) if isinstance(v, torch.nn.Module) else v for v in value
        )
    if isinstance(value, dict) and any(isinstance(v, torch.nn.Module) for v in value.values()):
        return {
            k: _clone_module(v, device, pin) if isinstance(v, torch.nn.Module) else v
            for k, v in value.items()
        }
    return value


def clone_to(obj: Any, device: Any, *, pin: bool = False) -> Any:
    """A copy of ``obj`` whose modules (see :func:`modules_of`) are clones on ``device``; its other attributes
    are shared. ``pin``: page-locked host memory when copying from CUDA to the host."""
    import torch

    if isinstance(obj, torch.nn.Module):
        return _clone_module(obj, device, pin)
    clone = copy.copy(obj)
    for name, value in list(vars(obj).items()):
        new = _clone_value(value, device, pin)
        if new is not value:
            clone.__dict__[name] = new
    return clone


class HostCache:
    """Models in host memory, least recently used dropped first past ``budget_bytes`` (0 keeps nothing).

    ``device`` is the model loader's device: on the host (``cpu``) the objects themselves are kept; on
    another device, host copies made by :func:`clone_to`, and :meth:`take` returns a fresh clone on it
    (``keep_objects=False`` copies on the host too, for callers that change what they are handed)."""

    def __init__(self, budget_bytes: int, device: str = "cpu", keep_objects: bool | None = None) -> None:
        if budget_bytes < 0:
            raise ValueError("the host cache budget cannot be negative")
        self.budget_bytes = budget_bytes
        self.device = device
        #: keep the objects themselves (default: when the device is the host) rather than host copies
        self.keep_objects = str(device).split(":")[0] == "cpu" if keep_objects is None else keep_objects
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    @property
    def on_host(self) -> bool:
        """Whether objects are kept as they are (the device is the host), not as host copies."""
        return self.keep_objects

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(size for _, size in self._entries.values())

    def keys(self) -> list[Hashable]:
        """What is kept, least recently used first."""
        with self._lock:
            return list(self._entries)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def put(self, key: Hashable, obj: Any) -> bool:
        """Keep an object the loader dropped from its device (a host copy off the host). False when it is not
        kept: no modules in it, or larger than the budget."""
        if self.budget_bytes <= 0 or not modules_of(obj):
            return False
        with self._lock:
            if key in self._entries and not self.on_host:
                self._entries.move_to_end(key)  # its host copy is still here: nothing to copy again
                return True
        size = host_bytes(obj)
        if size > self.budget_bytes:
            return False
        if not self.on_host:
            import torch

            obj = clone_to(obj, "cpu", pin=torch.cuda.is_available())
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = (obj, size)
            self._shrink()
        return True

    def take(self, key: Hashable) -> Any | None:
        """The object kept under ``key``, ready on the device (None if not kept). On the host the entry
        leaves the cache (the loader holds the object again); off the host the host copy stays, most
        recently used, and a fresh clone on the device is returned."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self.hits += 1
            if self.on_host:
                del self._entries[key]
                return entry[0]
            self._entries.move_to_end(key)
            host = entry[0]
        return clone_to(host, self.device)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _shrink(self) -> None:
        total = sum(size for _, size in self._entries.values())
        while total > self.budget_bytes and self._entries:
            _, (_, size) = self._entries.popitem(last=False)
            total -= size
