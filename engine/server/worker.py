"""The job runner: one thread taking queued jobs from the store and running them on the engine."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from atelier.engine import events as E
from atelier.engine.executor import Executor
from atelier.engine.node import CancelToken

from .jobs import Job
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
    def __init__(
        self,
        store: Store,
        executor: Executor,
        publish: Callable[[E.Event], None],
        on_queue_change: Callable[[], None],
        on_out_of_memory: Callable[[], None] | None = None,
        previews: bool = True,
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
        self.current: str | None = None
        self._token: CancelToken | None = None
        self._early_cancel: str | None = None

    def interrupt(self, job_id: str | None = None) -> str | None:
        """Interrupt the running job (or only if it is ``job_id``); returns its id, or None if none runs.

        Each job has its own cancel token, made before the job is taken, so a request holds whatever
        the job is doing (validation, planning, a node) and can never reach the next job."""
        current, token = self.current, self._token
        if current is None or token is None or (job_id is not None and job_id != current):
            if job_id is not None and self._is_running(job_id):
                # taken from the queue a moment ago, not started yet: it starts cancelled
                self._early_cancel = job_id
                return job_id
            return None
        token.cancel()
        return current

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
            self._run_job(job)

    def _run_job(self, job: Job) -> None:
        job_id = job.id
        token = CancelToken()
        self._token = token
        self.current = job_id
        if self._early_cancel == job_id:
            token.cancel()
        self.on_queue_change()

        # The terminal event goes out only once the store has the job's final state: a client that
        # reads /history or /atelier/v1/jobs/{id} on ``executing: null`` or ``job_finished`` must find it.
        terminal: list[E.Event] = []

        def on_event(ev: E.Event) -> None:
            if isinstance(ev, TERMINAL_EVENTS):
                terminal.append(ev)
                return
            self.live.update(ev)
            self.publish(ev)

        try:
            res = self.executor.run(
                job.workflow,
                job_id=job_id,
                overrides=job.overrides or {},
                outputs=job.outputs_requested,
                on_event=on_event,
                source="server",
                client_id=job.client_id,
                cancel=token,
                previews=self.previews,
            )
            status, error = outcome(res, terminal, self.on_out_of_memory)
            if self.stopping.is_set() and status == "interrupted":
                # the server is stopping: leave it for recovery to mark it (or the user to re-queue)
                error = {"message": "the server stopped while this job was running"}
            self.store.finish_job(
                job_id, status, outputs=res.outputs, error=error, executed=res.executed, cached=res.cached
            )
        except Exception as exc:  # the engine never raises for a job, but the worker must survive anything
            log.exception("job %s crashed the worker loop", job_id)
            message = f"{type(exc).__name__}: {exc}"
            self.store.finish_job(job_id, "failed", error={"message": message})
            if not terminal:
                terminal.append(E.JobFailed(job=job_id, message=message, exception_type=type(exc).__name__))
        finally:
            self.current = None
            self._token = None
            self._early_cancel = None
            for ev in terminal:
                self.live.update(ev)
                self.publish(ev)
            self.on_queue_change()
            time.sleep(0)
