"""The system service: what the server runs on and how loaded it is, and the maintenance actions (clear
the output cache, unload models).

``info`` counts the queue in SQLite and ``clear_cache``/``unload_models`` free memory (GPU included):
call from a worker thread.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from typing import Any

from atelier.engine.runtime import Engine

from .service_jobs import JobService


@dataclass(frozen=True)
class CacheCleared:
    entries: int
    bytes: int


class SystemService:
    def __init__(self, engine: Engine, jobs: JobService) -> None:
        self.engine = engine
        self.jobs = jobs
        self.started = time.time()

    def info(self) -> dict[str, Any]:
        """Versions, device, uptime, cache use, queue length, RAM and (on CUDA) VRAM."""
        import torch

        info: dict[str, Any] = {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "device": self.engine.device,
            "uptime_s": time.time() - self.started,
            "cache": self.engine.executor.cache.stats().model_dump(),
            "queue_remaining": self.jobs.queue_remaining(),
            "node_types": len(self.engine.registry),
            # the device budget: models and cached outputs on the device, what is loaded where
            "vram": self.engine.memory.report().model_dump(),
        }
        ram = _ram()
        if ram is not None:
            info["ram"] = {"total": ram[0], "free": ram[1]}
        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            info["gpu"] = {
                "name": torch.cuda.get_device_name(),
                "vram_total": total,
                "vram_free": free,
                "torch_allocated": torch.cuda.memory_allocated(),
            }
        return info

    def clear_cache(self) -> CacheCleared:
        cache = self.engine.executor.cache
        before = cache.stats()
        cache.clear()
        return CacheCleared(before.entries, before.bytes)

    def unload_models(self) -> None:
        self.engine.free()  # cached handles keep modules alive: both go


def _ram() -> tuple[int, int] | None:
    """(total, available) bytes of RAM: from psutil when installed, else /proc/meminfo."""
    try:
        import psutil  # type: ignore[import-not-found]

        vm = psutil.virtual_memory()
        return vm.total, vm.available
    except ImportError:
        pass
    try:
        total = free = 0
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    total = int(line.split()[1]) * 1024
                elif line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
        return total, free
    except OSError:
        return None
