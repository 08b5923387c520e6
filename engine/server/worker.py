"""The job runner: one thread taking queued jobs from the store and running them on the engine."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from atelier.engine import events as E
from atelier.engine.executor import Executor, JobSpec
from atelier.engine.node import CancelToken

from .jobs import Job
from .partners import BatchPartners
from .store import Store

log = logging.getLogger(__name__)

TERMINAL_EVENTS = (E.JobFinished, E.JobFailed, E.JobInterrupted)


class LiveState:
    """What a running job is doing now, for clients that connect late."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, dict[str, Any]] = {}

    def update(self, ev: E.Event) -> None:
        with self._lock:
            if isinstance(ev, E.JobStarted):
                self._jobs[ev.job] = {
                    "status": "running",
                    "node": None,
                    "value": None,
                    "max": None,
                    "executed": [],
                    "cached": [],
                    "nodes": ev.nodes,
                    "to_run": ev.to_run,
                }
                return
            st = self._jobs.get(ev.job)
            if st is None:
                return
            if isinstance(ev, E.NodeCached):
                st["cached"].append(ev.node)
            elif isinstance(ev, E.NodeStarted):
                st.update(node=ev.node, node_type=ev.node_type, value=None, max=None)
            elif isinstance(ev, E.Progress):
                st.update(value=ev.value, max=ev.max)
            elif isinstance(ev, E.NodeFinished):
                st["executed"].append(ev.node)
            elif isinstance(ev, (E.JobFinished, E.JobFailed, E.JobInterrupted)):
                self._jobs.pop(ev.job, None)

    def get(self, job: str) -> dict[str, Any] | None:
        with self._lock:
            st = self._jobs.get(job)
            return (
                None if st is None else {**st, "executed": list(st["executed"]), "cached": list(st["cached"])}
            )


def outcome(
    res: Any, terminal: list[E.Event], on_out_of_memory: Callable[[], None] | None = None
) -> tuple[str, Any]:
    """A job's final status and the error the store keeps for it, from the executor's result and the
    terminal event it sent."""
    error: Any = None
    if res.failure is not None:
        f = res.failure
        error = {
            "node": f.node,
            "node_type": f.node_type,
            "message": f.message,
            "exception_type": f.exception_type,
            "traceback": f.traceback,
        }
        if "OutOfMemory" in f.exception_type and on_out_of_memory is not None:
            on_out_of_memory()
    elif res.errors:
        error = {"message": "the workflow is not valid", "errors": [e.model_dump() for e in res.errors]}
    elif res.status == "interrupted":
        stop = next((ev for ev in terminal if isinstance(ev, E.JobInterrupted)), None)
        error = {"message": "interrupted"}
        if stop is not None:
            error.update(node=stop.node, node_type=stop.node_type)
    return ("success" if res.ok else res.status), error


class Worker(threading.Thread):
    """Takes queued jobs and runs them. With ``max_batch`` above 1 it takes, with a job that has a node that
    can batch, up to ``max_batch - 1`` more queued jobs with the same batch signature (same graph and sampler
    settings; other seeds, cfg, prompts: ``Executor.batch_signature``), waiting up to ``batch_window_s`` for
    one when none is queued, and runs them together: nodes that can batch (KSampler) run once for all of them
    (``Executor.run_many``); each job keeps its own events, result and errors."""

    def __init__(
        self,
        store: Store,
        executor: Executor,
        publish: Callable[[E.Event], None],
        on_queue_change: Callable[[], None],
        on_out_of_memory: Callable[[], None] | None = None,
        previews: bool = True,
        *,
        max_batch: int = 8,
        batch_window_s: float = 0.005,
    ) -> None:
        super().__init__(name="atelier-worker", daemon=True)
        self.store = store
        self.executor = executor
        self.publish = publish
        self.on_queue_change = on_queue_change
        self.on_out_of_memory = on_out_of_memory
        self.previews = previews
        self.live = LiveState()
        self.wakeup = threading.Event()
        self.stopping = threading.Event()
        #: the first job of what runs now (None when nothing runs)
        self.current: str | None = None
        #: every job that runs now (several when batched) and its cancel token
        self._tokens: dict[str, CancelToken] = {}
        self._early_cancel: set[str] = set()
        self.partners = BatchPartners(store, executor, max_batch, batch_window_s, self.wakeup, self.stopping)

    def interrupt(self, job_id: str | None = None) -> str | None:
        """Interrupt the running jobs (or only ``job_id``); returns the id interrupted (the first running
        one when ``job_id`` is None), or None if none runs.

        Each job has its own cancel token, made before the job is taken, so a request holds whatever
        the job is doing (validation, planning, a node) and can never reach the next job."""
        tokens = dict(self._tokens)
        if job_id is None:
            for token in tokens.values():
                token.cancel()
            return next(iter(tokens), None)
        token = tokens.get(job_id)
        if token is None:
            if self._is_running(job_id):
                # taken from the queue a moment ago, not started yet: it starts cancelled
                self._early_cancel.add(job_id)
                return job_id
            return None
        token.cancel()
        return job_id

    def _is_running(self, job_id: str) -> bool:
        job = self.store.get_job(job_id)
        return job is not None and job.status == "running"

    def stop(self) -> None:
        self.stopping.set()
        self.wakeup.set()
        self.interrupt()

    def run(self) -> None:
        while not self.stopping.is_set():
            job = self.store.next_queued()
            if job is None:
                self.wakeup.wait(1.0)
                self.wakeup.clear()
                continue
            self._run_jobs([job, *self.partners.take(job)])

    def _run_job(self, job: Job) -> None:
        self._run_jobs([job])

    def _run_jobs(self, jobs: list[Job]) -> None:
        tokens = {job.id: CancelToken() for job in jobs}
        self._tokens = dict(tokens)
        self.current = jobs[0].id
        for job_id in self._early_cancel & set(tokens):
            tokens[job_id].cancel()
        self.on_queue_change()

        # A job's terminal event goes out only once the store has its final state: a client that reads
        # /history or /atelier/v1/jobs/{id} on ``executing: null`` or ``job_finished`` must find it.
        terminals: dict[str, list[E.Event]] = {job.id: [] for job in jobs}
        finished: set[str] = set()

        def sink(job_id: str) -> Callable[[E.Event], None]:
            terminal = terminals[job_id]

            def on_event(ev: E.Event) -> None:
                if isinstance(ev, TERMINAL_EVENTS):
                    terminal.append(ev)
                    return
                self.live.update(ev)
                self.publish(ev)

            return on_event

        def done(job_id: str, res: Any) -> None:
            status, error = outcome(res, terminals[job_id], self.on_out_of_memory)
            if self.stopping.is_set() and status == "interrupted":
                # the server is stopping: leave it for recovery to mark it (or the user to re-queue)
                error = {"message": "the server stopped while this job was running"}
            self.store.finish_job(
                job_id, status, outputs=res.outputs, error=error, executed=res.executed, cached=res.cached
            )
            self._close(job_id, terminals[job_id], finished)

        specs = [
            JobSpec(
                job.workflow,
                job_id=job.id,
                overrides=job.overrides or {},
                outputs=job.outputs_requested,
                on_event=sink(job.id),
                source="server",
                client_id=job.client_id,
                cancel=tokens[job.id],
                previews=self.previews,
            )
            for job in jobs
        ]
        try:
            self.executor.run_many(specs, on_result=lambda n, res: done(jobs[n].id, res))
        except Exception as exc:  # the engine never raises for a job, but the worker must survive anything
            log.exception("jobs %s crashed the worker loop", ", ".join(tokens))
            message = f"{type(exc).__name__}: {exc}"
            for job in jobs:
                if job.id in finished:
                    continue
                self.store.finish_job(job.id, "failed", error={"message": message})
                if not terminals[job.id]:
                    terminals[job.id].append(
                        E.JobFailed(job=job.id, message=message, exception_type=type(exc).__name__)
                    )
                self._close(job.id, terminals[job.id], finished)
        finally:
            for job in jobs:  # a job the executor never answered for (it cannot happen; be safe)
                if job.id not in finished:
                    self.store.finish_job(job.id, "failed", error={"message": "the job did not run"})
                    self._close(job.id, terminals[job.id], finished)
            self.current = None
            self._tokens = {}
            self._early_cancel -= set(tokens)
            self.on_queue_change()
            time.sleep(0)

    def _close(self, job_id: str, terminal: list[E.Event], finished: set[str]) -> None:
        """Publish a job's terminal event (its state is in the store) and stop counting it as running."""
        finished.add(job_id)
        self._tokens.pop(job_id, None)
        if self.current == job_id:
            self.current = next(iter(self._tokens), None)
        for ev in terminal:
            self.live.update(ev)
            self.publish(ev)
        if self._tokens:  # others still run (the last one's change is told when the round ends)
            self.on_queue_change()
