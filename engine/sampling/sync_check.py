"""Proof that a step loop never waits for the device: a guard that makes every host-device sync raise.

A value read back from a tensor (``.item()``, ``float(t)``, ``int(t)``, ``bool(t)``, ``.tolist()``,
``.numpy()``, ``.cpu()``) makes the host wait for every queued GPU kernel, so a step loop with one per step
cannot queue step n+1 while step n runs. Inside :func:`no_host_sync` (armed with :meth:`SyncGuard.arm`,
typically from the first step's callback) those calls raise :class:`HostSync`. On the CPU this proves the
loop's code takes no such path; on CUDA the guard also turns on ``torch.cuda.set_sync_debug_mode("error")``,
which catches the syncs the method patches cannot see (pageable host-to-device copies, ``nonzero``).
For diagnosis and tests (``tests/sd/test_sd_fast_path.py``, ``bench/gpu_check.sh``), not production.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["HostSync", "SyncGuard", "no_host_sync"]

_READS = ("item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__", "__index__")


class HostSync(RuntimeError):
    """A tensor was read back on the host while the guard was armed."""


class SyncGuard:
    """Armed or not; counts the reads it refused."""

    def __init__(self) -> None:
        self.armed = False
        self.refused: list[str] = []
        self._cuda_mode: Any = None

    def arm(self) -> None:
        if self.armed:
            return
        self.armed = True
        if torch.cuda.is_available():
            self._cuda_mode = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode("error")

    def disarm(self) -> None:
        if not self.armed:
            return
        self.armed = False
        if self._cuda_mode is not None:
            torch.cuda.set_sync_debug_mode(self._cuda_mode)
            self._cuda_mode = None


@contextmanager
def no_host_sync(armed: bool = False) -> Iterator[SyncGuard]:
    """Within the block, reading a tensor back on the host raises :class:`HostSync` while the guard is
    armed (from the start with ``armed``, else from :meth:`SyncGuard.arm`)."""
    guard = SyncGuard()
    originals = {name: getattr(torch.Tensor, name) for name in _READS}

    def refusing(name: str, original: Any) -> Any:
        def method(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if guard.armed:
                guard.refused.append(name)
                raise HostSync(f"Tensor.{name}() inside the step loop: the host waits for the device")
            return original(self, *args, **kwargs)

        return method

    for name, original in originals.items():
        setattr(torch.Tensor, name, refusing(name, original))
    try:
        if armed:
            guard.arm()
        yield guard
    finally:
        guard.disarm()
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
