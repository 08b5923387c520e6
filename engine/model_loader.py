"""Loaded models, kept for reuse: what nodes reach as ``ctx.models``.

Generic: the loader function says how a file becomes an object (a Stable Diffusion checkpoint, an upscaler,
a detector); this class loads it onto the engine's device in the engine's weight dtype once and hands out
the same object while the file is unchanged (same path, size and modification time). The least recently
used are dropped past ``max_loaded`` (their memory is freed once no cached output holds them).

Device memory: the loader's :class:`~.memory.DeviceBudget` (the engine's) makes room before a load and
accounts for the modules of what it loads (the ``-- device budget`` section below).

Host memory: models dropped past ``max_loaded`` go into the loader's host cache when it has one
(``host_cache.py``): loading the same file again then takes it from host memory instead of reading the file.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .hashing import file_version
from .host_cache import HostCache
from .memory import DeviceBudget

T = TypeVar("T")

#: dtype names accepted by ``--dtype`` and the configuration
DTYPE_NAMES = {
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float32": "float32",
    "fp32": "float32",
}


def parse_dtype(name: str | None) -> Any:
    """A torch dtype from its name (None stays None: each loader then picks its device's default)."""
    if name is None:
        return None
    canonical = DTYPE_NAMES.get(name.lower())
    if canonical is None:
        raise ValueError(f"unknown dtype {name!r}; use one of float16, bfloat16, float32")
    import torch

    return getattr(torch, canonical)


@dataclass(frozen=True)
class LoadOptions:
    """What a loader function is asked for: where to put the weights and in which dtype."""

    device: str
    dtype: Any  # torch.dtype | None
    #: the fast sampling path's settings (engine/models/fast_path.FastPath), None when off
    fast: Any = None


Loader = Callable[[Path, LoadOptions], T]


class ModelLoader:
    """Loads model files onto one device once and hands out the same objects while files are unchanged."""

    def __init__(
        self,
        device: str = "cpu",
        dtype: Any = None,
        max_loaded: int = 2,
        budget: DeviceBudget | None = None,
        fast: Any = None,
        host: HostCache | None = None,
    ) -> None:
        self.device = device
        self.dtype = dtype
        self.fast = fast  # FastPath | None: loaders prepare models for it
        self.max_loaded = max_loaded
        #: the device memory shared with the output cache (by default one without a capacity: report only)
        self.budget = budget if budget is not None else DeviceBudget(None, device)
        #: where dropped models go, to be taken back without reading their file (None: nowhere)
        self.host = host
        self._loaded: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # how many files were actually loaded (for tests and statistics)

    @property
    def options(self) -> LoadOptions:
        return LoadOptions(self.device, self.dtype, self.fast)

    def load(self, path: Path, loader: Loader[T], *, key: Hashable = None) -> T:
        """``loader(path, options)``, or the object it gave before for this file version. ``key`` tells
        apart different loaders (or settings) of the same file; by default the loader function itself."""
        cache_key = (key if key is not None else loader, file_version(path), self.device, str(self.dtype))
        with self._lock:
            hit = self._loaded.pop(cache_key, None)
            if hit is None and self.host is not None:
                hit = self.host.take(cache_key)
            if hit is None:
                self._before_load(path)
                hit = loader(path, self.options)
                self.loads += 1
            self._loaded[cache_key] = hit
            while len(self._loaded) > self.max_loaded:
                dropped_key, dropped = self._loaded.popitem(last=False)
                if self.host is not None:
                    self.host.put(dropped_key, dropped)
        self._account(path, hit)
        return hit

    # -- device budget (engine/memory.py) -------------------------------------------------------------

    def _before_load(self, path: Path) -> None:
        """Room for about the file's size before it is read onto the device."""
        if self.budget.enabled:
            try:
                self.budget.make_room(path.stat().st_size if path.is_file() else 0)
            except OSError:
                pass

    def _account(self, path: Path, obj: Any) -> None:
        """Account for ``obj``'s modules (once). They come back onto the device when a node is handed them
        or calls one, not here: a checkpoint larger than the budget works part by part."""
        self.budget.register(obj, path.name)

    # -- what is loaded ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold off loads while work that loading depends on runs: the warm-up imports the model libraries
        under it, so that a job's first load never imports them at the same time (two threads importing
        diffusers at once can see a half-initialised module)."""
        with self._lock:
            yield

    def loaded(self) -> list[Hashable]:
        """Keys of what is loaded now, least recently used first."""
        with self._lock:
            return list(self._loaded)

    def unload_all(self) -> None:
        with self._lock:
            self._loaded.clear()
            if self.host is not None:
                self.host.clear()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
