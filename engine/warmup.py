"""Start-up work done in the background: what a process will need for its first job, prepared before it
comes (imports of model libraries, content hashes of model files), without holding the process up.

Plugins say what to warm (``Plugin.warmup(engine)``: named steps); :func:`start_warmup` runs the steps in
order on one daemon thread. A failing step is logged and the next one runs: warming up is an optimisation,
never a reason for a server not to start or a job to fail (whatever failed fails again, with its real
error, when a job needs it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

#: (what it does, the work)
WarmupStep = tuple[str, Callable[[], object]]


def run_warmup(steps: Sequence[WarmupStep]) -> dict[str, float | None]:
    """Run each step, logging its time or its error; returns step name -> seconds (None: it failed)."""
    times: dict[str, float | None] = {}
    for name, step in steps:
        started = time.perf_counter()
        try:
            step()
        except Exception:  # noqa: BLE001 - logged, never raised: see the module docstring
            log.warning("warm-up step %r failed", name, exc_info=True)
            times[name] = None
            continue
        times[name] = time.perf_counter() - started
        log.info("warm-up: %s in %.2f s", name, times[name])
    return times


def start_warmup(steps: Sequence[WarmupStep], name: str = "atelier-warmup") -> threading.Thread:
    """Run the steps on a daemon thread (started here) and return it."""
    thread = threading.Thread(target=run_warmup, args=(list(steps),), name=name, daemon=True)
    thread.start()
    return thread
