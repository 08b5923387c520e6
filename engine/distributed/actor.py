"""One worker of a Ray cluster: an engine of its own, built by the same composition root as the
single-process server (``engine/runtime.py``), running one job at a time and streaming its events back.

:class:`WorkerCore` is plain Python (tests drive it without Ray); :func:`worker_actor_class` wraps it as a
Ray actor class. The actor runs with several threads so that ``interrupt`` and ``report`` answer while a
job runs.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from atelier.engine.node import CancelToken

#: how many cache signatures a worker reports (most recently used first)
REPORTED_SIGNATURES = 4096


class WorkerCore:
    """An engine and the job it runs now. ``config`` is an ``EngineConfig`` as JSON (the server's own, so
    a worker sees the same model folders, or the ones its machine has)."""

    def __init__(self, name: str, config: dict[str, Any], threads: int | None = None) -> None:
        from atelier.engine.runtime import EngineConfig, build_engine

        if threads:  # a worker takes the CPUs Ray gave it, not every core of the machine
            import torch

            torch.set_num_threads(threads)
        self.name = name
        self.engine = build_engine(EngineConfig.model_validate(config))
        self.engine.folders.ensure()
        self._lock = threading.Lock()
        self._current: str | None = None
        self._token: CancelToken | None = None
        self.jobs_run = 0

    def run_job(self, job: dict[str, Any]) -> Iterator[tuple[str, Any]]:
        """Run one job: yields ``("event", event)`` as the executor sends them, then ``("result", result)``."""
        token = CancelToken()
        with self._lock:
            self._current, self._token = job["id"], token
        events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        done = object()
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                result["value"] = self.engine.executor.run(
                    job["workflow"],
                    job_id=job["id"],
                    overrides=job.get("overrides") or {},
                    outputs=job.get("outputs_requested"),
                    on_event=events.put,
                    source="server",
                    client_id=job.get("client_id"),
                    cancel=token,
                    previews=job.get("previews", True),
                )
            except BaseException as exc:  # handed to the caller below
                result["error"] = exc
            finally:
                events.put(done)

        thread = threading.Thread(target=work, name=f"{self.name}-job", daemon=True)
        thread.start()
        try:
            while (item := events.get()) is not done:
                yield ("event", item)
        finally:
            thread.join()
            with self._lock:
                self._current, self._token = None, None
            self.jobs_run += 1
        if "error" in result:
            raise result["error"]
        yield ("result", result["value"])

    def interrupt(self, job_id: str | None = None) -> str | None:
        with self._lock:
            if self._current is None or self._token is None or job_id not in (None, self._current):
                return None
            self._token.cancel()
            return self._current

    def report(self) -> dict[str, Any]:
        """What routing needs: the model files loaded (by file name), the cache's signatures, what runs."""
        models = []
        for key in self.engine.models.loaded():
            version = key[1] if isinstance(key, tuple) and len(key) > 1 else None
            if isinstance(version, tuple) and version and isinstance(version[0], str):
                models.append(Path(version[0]).name)
        return {
            "name": self.name,
            "pid": os.getpid(),
            "models": sorted(set(models)),
            "signatures": self.engine.cache.signatures(REPORTED_SIGNATURES),
            "running": self._current,
            "jobs_run": self.jobs_run,
            "model_loads": self.engine.models.loads,
        }

    def ping(self) -> str:
        return self.name


def worker_actor_class() -> Any:
    """:class:`WorkerCore` as a Ray actor class (imports Ray)."""
    import ray

    return ray.remote(WorkerCore)
