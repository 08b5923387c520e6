"""One worker of a Ray cluster: an engine of its own, built by the same composition root as the
single-process server (``engine/runtime.py``), running one job, or one batch of jobs, at a time and streaming
their events back.

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

from atelier.engine.executor import JobSpec
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
        #: the jobs running now (several when batched) and their cancel tokens
        self._tokens: dict[str, CancelToken] = {}
        self.jobs_run = 0

    def run_jobs(self, jobs: list[dict[str, Any]]) -> Iterator[tuple[str, Any]]:
        """Run jobs together, as one batch where their nodes can batch (``Executor.run_many``): yields
        ``("event", event)`` as the executor sends them (each event names its job) and ``("result", (n,
        result))`` as soon as job ``n`` has ended, which may be before its partners."""
        tokens = {job["id"]: CancelToken() for job in jobs}
        with self._lock:
            self._tokens = dict(tokens)
        items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        done = object()
        failure: dict[str, BaseException] = {}
        specs = [
            JobSpec(
                job["workflow"],
                job_id=job["id"],
                overrides=job.get("overrides") or {},
                outputs=job.get("outputs_requested"),
                on_event=lambda ev: items.put(("event", ev)),
                source="server",
                client_id=job.get("client_id"),
                cancel=tokens[job["id"]],
                previews=job.get("previews", True),
            )
            for job in jobs
        ]

        def work() -> None:
            try:
                self.engine.executor.run_many(specs, on_result=lambda n, res: items.put(("result", (n, res))))
            except BaseException as exc:  # handed to the caller below
                failure["error"] = exc
            finally:
                items.put(done)

        thread = threading.Thread(target=work, name=f"{self.name}-job", daemon=True)
        thread.start()
        try:
            while (item := items.get()) is not done:
                yield item
        finally:
            thread.join()
            with self._lock:
                self._tokens = {}
            self.jobs_run += len(jobs)
        if "error" in failure:
            raise failure["error"]

    def interrupt(self, job_id: str | None = None) -> str | None:
        """Interrupt ``job_id`` (None: every job running here); returns the id interrupted (the first one
        for None), or None when it does not run here."""
        with self._lock:
            hit = [jid for jid in self._tokens if job_id in (None, jid)]
            for jid in hit:
                self._tokens[jid].cancel()
        return hit[0] if hit else None

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
            "running": next(iter(self._tokens), None),
            "running_jobs": list(self._tokens),
            "jobs_run": self.jobs_run,
            "model_loads": self.engine.models.loads,
        }

    def ping(self) -> str:
        return self.name


def worker_actor_class() -> Any:
    """:class:`WorkerCore` as a Ray actor class (imports Ray)."""
    import ray

    return ray.remote(WorkerCore)
