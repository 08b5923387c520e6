"""The device memory budget: loaded models and cached outputs share one figure of bytes on the device.

One :class:`DeviceBudget` per engine (``Engine.memory``; the model loader and the output cache hold a
reference). It keeps an account per loaded module (a checkpoint's UNet, its text encoders and its VAE are
separate accounts, so a VAE decode needs only the VAE on the device), measured from its parameters and
buffers, in least-recently-used order. When a module must be on the device and the budget would be
exceeded, room is made in this order:

1. cached outputs on the device are spilled to host memory (the output cache already can: a later hit costs
   a copy back rather than a re-run);
2. the least recently used modules that no running node holds are offloaded to the host
   (``placement.offload(module)``: the object is kept, so bringing it back is a copy, not a file read);
3. if still short, :class:`DeviceBudgetError` names what is needed and what is held.

A node holds (pins) the modules reachable from its inputs for its run (``with budget.scope():
budget.acquire(inputs)``, done by the executor) and any registered module whose forward is called while
it runs (a pre-forward hook brings an offloaded module back: what a node loads through ``ctx.models`` and
uses at once).

Nothing here knows Stable Diffusion: loaded objects name their modules through ``__atelier_modules__``
(pairs of part name and module) or are walked (dataclass fields, tuples, lists, small dicts); a module is
anything with ``parameters``, ``buffers`` and ``to``. Without a capacity (the CPU default) the budget only
reports what is loaded and never moves anything.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from pydantic import BaseModel


class Placement(Protocol):
    """How a module moves between the device and the host (tests record or simulate the moves)."""

    def offload(self, module: Any) -> None: ...

    def reload(self, module: Any) -> None: ...


@dataclasses.dataclass(frozen=True)
class ModulePlacement:
    """``module.to(host)`` and ``module.to(device)``: the module object is kept, its tensors move. Moves
    made from a forward hook may run under ``torch.inference_mode``; they are made outside it, so that the
    weights stay ordinary tensors (a LoRA patches them in place later, outside inference mode)."""

    device: str
    host: str = "cpu"

    def offload(self, module: Any) -> None:
        _move(module, self.host)

    def reload(self, module: Any) -> None:
        _move(module, self.device)


def _move(module: Any, device: str) -> None:
    import torch

    with torch.inference_mode(False), torch.no_grad():
        module.to(device)


GIB = 1 << 30


class DeviceBudgetError(MemoryError):
    """A module cannot be brought onto the device within the budget (the message says what is held)."""


class OutputsOnDevice(Protocol):
    """What the budget needs of an output cache (engine/cache.py)."""

    #: asked how many bytes the cache may keep on the device (set by :meth:`DeviceBudget.attach`)
    device_room: Callable[[], int | None] | None

    @property
    def device_bytes(self) -> int: ...

    def spill_device(self, limit: int) -> int:
        """Spill cached outputs to the host until at most ``limit`` bytes stay on the device; returns the
        bytes left there."""
        ...


class ModuleReport(BaseModel):
    name: str
    bytes: int
    where: str  # "device" or "host"
    in_use: bool


class BudgetReport(BaseModel):
    """What ``/atelier/v1/system`` shows under ``vram``."""

    device: str
    capacity: int | None
    models_on_device: int
    models_on_host: int
    outputs_on_device: int
    offloads: int
    reloads: int
    spilled_for_models: int
    #: the most bytes models and cached outputs held on the device together, seen at each load and reload
    peak: int
    modules: list[ModuleReport]


@dataclasses.dataclass(eq=False)
class _Account:
    ref: weakref.ref[Any]
    name: str
    nbytes: int
    on_device: bool
    pins: int = 0
    used: int = 0  # a counter: larger is more recent


def is_module(obj: Any) -> bool:
    return (
        not isinstance(obj, type)
        and callable(getattr(obj, "parameters", None))
        and callable(getattr(obj, "buffers", None))
        and callable(getattr(obj, "to", None))
    )


def module_bytes(module: Any) -> int:
    """Bytes of a module's parameters and buffers."""
    try:
        return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    except Exception:
        return 0


def modules_of(obj: Any, prefix: str = "", depth: int = 0) -> Iterator[tuple[str, Any]]:
    """(part name, module) pairs reachable from ``obj``: its ``__atelier_modules__``, else a module itself,
    else the fields of a dataclass value, the elements of tuples and lists and the values of small dicts."""
    if depth > 6 or obj is None or isinstance(obj, (str, bytes, int, float, bool)):
        return
    named = getattr(type(obj), "__atelier_modules__", None)
    if named is not None:
        for name, sub in named(obj):
            yield from modules_of(sub, f"{prefix}.{name}" if prefix else name, depth + 1)
        return
    if is_module(obj):
        yield prefix, obj
        return
    if hasattr(obj, "untyped_storage"):  # a tensor
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj[:64]):
            yield from modules_of(v, f"{prefix}[{i}]", depth + 1)
    elif isinstance(obj, dict) and len(obj) <= 64:
        for k, v in obj.items():
            yield from modules_of(v, f"{prefix}[{k}]", depth + 1)
    elif dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from modules_of(getattr(obj, f.name, None), f"{prefix}.{f.name}", depth + 1)


def _device_of(module: Any) -> str | None:
    for t in itertools.chain(module.parameters(), module.buffers()):
        return str(t.device)
    return None


def default_capacity(device: str, reserve_fraction: float = 0.25, min_reserve: int = 2 * GIB) -> int | None:
    """On a CUDA device its total memory less a reserve for the work of a node (a quarter, at least
    2 GiB: activations, a VAE decode); elsewhere None (no budget)."""
    if not str(device).startswith("cuda"):
        return None
    try:
        import torch

        _free, total = torch.cuda.mem_get_info(torch.device(device))
    except Exception:
        return None
    return max(0, int(total - max(total * reserve_fraction, min_reserve)))


def capacity_from(gib: float | None, device: str) -> int | None:
    """The budget in bytes: ``gib`` (0 or less: none) when given, else ``$ATELIER_VRAM_BUDGET``, else the
    device's default. Raises ValueError for a bad environment value."""
    if gib is None:
        env = os.environ.get("ATELIER_VRAM_BUDGET")
        if env:
            try:
                gib = float(env)
            except ValueError:
                raise ValueError(f"ATELIER_VRAM_BUDGET={env!r} is not a number of GiB") from None
    if gib is None:
        return default_capacity(device)
    return int(gib * GIB) if gib > 0 else None


class DeviceBudget:
    """Bytes on ``device`` shared by loaded modules and cached outputs (``capacity`` None: unbounded).

    ``placement`` moves modules (default :class:`ModulePlacement`: ``module.to``); ``host`` is where
    offloaded modules go. Thread-safe; the pins of a node's run are per thread (``scope``)."""

    def __init__(
        self,
        capacity: int | None = None,
        device: str = "cpu",
        host: str = "cpu",
        placement: Placement | None = None,
    ) -> None:
        self.capacity = capacity
        self.device = device
        self.host = host
        self.placement: Placement = placement or ModulePlacement(device, host)
        #: the output caches sharing the budget (engines built over one model loader share its budget)
        self._outputs: weakref.WeakSet[OutputsOnDevice] = weakref.WeakSet()
        self._accounts: dict[int, _Account] = {}
        self._lock = threading.RLock()
        self._clock = itertools.count(1)
        self._local = threading.local()
        self.offloads = 0
        self.reloads = 0
        self.spilled_for_models = 0
        self.peak = 0

    @property
    def enabled(self) -> bool:
        return self.capacity is not None

    # -- accounts -----------------------------------------------------------------------------------

    def _live(self) -> list[tuple[_Account, Any]]:
        """(account, module) for the modules still alive; forgets the others."""
        out = []
        for key, acc in list(self._accounts.items()):
            m = acc.ref()
            if m is None:
                del self._accounts[key]
            else:
                out.append((acc, m))
        return out

    def _account(self, module: Any) -> _Account | None:
        acc = self._accounts.get(id(module))
        if acc is not None and acc.ref() is module:
            return acc
        return None

    @property
    def models_on_device(self) -> int:
        """Bytes of registered modules on the device (read without the lock: the cache asks while it holds
        its own)."""
        return sum(a.nbytes for a in list(self._accounts.values()) if a.on_device and a.ref() is not None)

    def attach(self, outputs: OutputsOnDevice) -> None:
        """Share the budget with an output cache: it spills past the room the models leave it."""
        self._outputs.add(outputs)
        outputs.device_room = lambda: self.room_for_outputs(outputs)

    @property
    def outputs_on_device(self) -> int:
        return sum(o.device_bytes for o in list(self._outputs))

    def room_for_outputs(self, outputs: OutputsOnDevice) -> int | None:
        """How many bytes ``outputs`` may keep on the device now, beside the models and the other caches
        (None: no limit)."""
        if self.capacity is None:
            return None
        others = sum(o.device_bytes for o in list(self._outputs) if o is not outputs)
        return max(0, self.capacity - self.models_on_device - others)

    def register(self, obj: Any, label: str) -> list[Any]:
        """Account for the modules of a loaded object (once each), as on the device unless their weights
        are on the host while the device is not; then fit the budget by offloading the least recently used
        (the new ones count as just used). Returns the modules."""
        found = [(f"{label}:{name}" if name else label, m) for name, m in modules_of(obj)]
        with self._lock:
            self._live()
            for name, m in found:
                if self._account(m) is not None:
                    continue
                where = _device_of(m)
                on_device = not (where is not None and where.startswith("cpu") and self.device != self.host)
                try:
                    ref = weakref.ref(m)
                except TypeError:
                    continue
                self._accounts[id(m)] = _Account(
                    ref, name, module_bytes(m), on_device, used=next(self._clock)
                )
                hook = getattr(m, "register_forward_pre_hook", None)
                if self.enabled and hook is not None:
                    hook(self._before_forward)  # a module called while offloaded comes back first
            if self.enabled:
                self._fit(0, keep=set())
            self._note_peak()
        return [m for _, m in found]

    def make_room(self, nbytes: int) -> None:
        """Best effort before a load of about ``nbytes``: spill outputs, offload the least recently used."""
        if not self.enabled or nbytes <= 0:
            return
        with self._lock:
            self._live()
            self._fit(min(nbytes, self.capacity or 0), keep=set())

    # -- use ----------------------------------------------------------------------------------------

    @contextmanager
    def scope(self) -> Iterator[None]:
        """A node's run: what is acquired inside stays on the device until it ends."""
        stack = self._pins_stack()
        stack.append([])
        try:
            yield
        finally:
            pinned = stack.pop()
            with self._lock:
                for acc in pinned:
                    acc.pins -= 1

    def _pins_stack(self) -> list[list[_Account]]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def acquire(self, obj: Any) -> None:
        """Bring the registered modules reachable from ``obj`` onto the device (making room, or raising
        :class:`DeviceBudgetError`), pin them for the current scope and mark them used."""
        if not self.enabled:
            return
        modules = [m for _, m in modules_of(obj)]
        if modules:
            self._acquire(modules)

    def _acquire(self, modules: list[Any]) -> None:
        with self._lock:
            self._live()
            accs: list[_Account] = []
            seen: set[int] = set()
            for m in modules:
                acc = self._account(m)
                if acc is not None and id(acc) not in seen:
                    seen.add(id(acc))
                    accs.append(acc)
            if not accs:
                return
            stack = self._pins_stack()
            for acc in accs:
                if stack:
                    acc.pins += 1
                    stack[-1].append(acc)
                acc.used = next(self._clock)
            needed = sum(a.nbytes for a in accs if not a.on_device)
            if needed == 0:
                return
            keep = {id(a) for a in accs}
            self._fit(needed, keep)
            free = self._free()
            if needed > free:
                raise DeviceBudgetError(self._shortage(needed, free, accs))
            for acc in accs:
                m = acc.ref()
                if not acc.on_device and m is not None:
                    self.placement.reload(m)
                    acc.on_device = True
                    self.reloads += 1
            self._note_peak()

    def _before_forward(self, module: Any, _args: Any) -> None:
        acc = self._accounts.get(id(module))
        if acc is not None and not acc.on_device:
            self._acquire([module])

    # -- making room --------------------------------------------------------------------------------

    def _note_peak(self) -> None:
        self.peak = max(self.peak, self.models_on_device + self.outputs_on_device)

    def _free(self) -> int:
        return (self.capacity or 0) - self.models_on_device - self.outputs_on_device

    def _fit(self, needed: int, keep: set[int]) -> None:
        """Make ``needed`` bytes free: spill cached outputs first, then offload the least recently used
        modules that are not pinned nor in ``keep``."""
        free = self._free()
        if free >= needed:
            return
        before = self.outputs_on_device
        if before > 0:
            limit = max(0, (self.capacity or 0) - self.models_on_device - needed)
            for outputs in sorted(self._outputs, key=lambda o: -o.device_bytes):
                excess = self.outputs_on_device - limit
                if excess <= 0:
                    break
                outputs.spill_device(max(0, outputs.device_bytes - excess))
            self.spilled_for_models += max(0, before - self.outputs_on_device)
            free = self._free()
        if free >= needed:
            return
        candidates = sorted(
            (
                (acc, m)
                for acc, m in self._live()
                if acc.on_device and acc.pins == 0 and id(acc) not in keep and acc.nbytes > 0
            ),
            key=lambda am: am[0].used,
        )
        for acc, m in candidates:
            if free >= needed:
                break
            self.placement.offload(m)
            acc.on_device = False
            self.offloads += 1
            free += acc.nbytes

    def _shortage(self, needed: int, free: int, wanted: list[_Account]) -> str:
        names = ", ".join(a.name for a in wanted if not a.on_device)
        held = [a for a, _ in self._live() if a.on_device and a.pins > 0 and a not in wanted]
        outputs = self.outputs_on_device
        text = (
            f"not enough device memory in the budget of {_size(self.capacity or 0)} on {self.device}: "
            f"{names} need {_size(needed)}, {_size(max(0, free))} can be freed"
        )
        if held:
            text += "; in use by the running node: " + ", ".join(
                f"{a.name} ({_size(a.nbytes)})" for a in held
            )
        if outputs:
            text += f"; cached outputs that cannot be spilled: {_size(outputs)}"
        return text + " (raise --vram-budget / ATELIER_VRAM_BUDGET, or use a smaller model or dtype)"

    # -- reporting ----------------------------------------------------------------------------------

    def where(self, module: Any) -> str | None:
        """ "device", "host", or None for a module the budget does not know."""
        acc = self._account(module)
        return None if acc is None else ("device" if acc.on_device else "host")

    def report(self) -> BudgetReport:
        with self._lock:
            live = self._live()
            order = sorted(live, key=lambda am: -am[0].used)
            return BudgetReport(
                device=self.device,
                capacity=self.capacity,
                models_on_device=sum(a.nbytes for a, _ in live if a.on_device),
                models_on_host=sum(a.nbytes for a, _ in live if not a.on_device),
                outputs_on_device=self.outputs_on_device,
                offloads=self.offloads,
                reloads=self.reloads,
                spilled_for_models=self.spilled_for_models,
                peak=self.peak,
                modules=[
                    ModuleReport(
                        name=a.name,
                        bytes=a.nbytes,
                        where="device" if a.on_device else "host",
                        in_use=a.pins > 0,
                    )
                    for a, _ in order
                ],
            )


def _size(n: int) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} bytes"
