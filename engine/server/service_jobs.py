"""The job service: submit, inspect, cancel and forget jobs. Every protocol (Atelier's API, the websocket,
the ComfyUI-compatible routes) calls this and gets domain results back, never HTTP responses, so the
rules live once and each protocol only translates.

Every method may block (SQLite, workflow validation walking the model folders): call them from a worker
thread, never on the event loop.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from atelier.engine.comfy_ui import is_ui_format
from atelier.engine.limits import Limits
from atelier.engine.runtime import Engine
from atelier.engine.validate import NodeError

from .jobs import FinishedStatus, Job, JobStatus
from .store import Store
from .worker import Worker

# -- outcomes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submitted:
    """The workflow is valid and queued."""

    id: str
    number: int
    warnings: list[NodeError]


@dataclass(frozen=True)
class Invalid:
    """The workflow was refused; nothing was queued. ``errors`` holds warnings too, in check order."""

    errors: list[NodeError]


@dataclass(frozen=True)
class Refused(Invalid):
    """The workflow is valid but the job would not fit the limits or the machine's memory (admission
    control, ``engine/admission.py``); nothing was queued. ``errors`` names each node, input and limit."""


@dataclass(frozen=True)
class QueueFull(Invalid):
    """The queue holds as many jobs as the server takes (``max_queued``); nothing was queued. Try later."""


@dataclass(frozen=True)
class Checked:
    """A validation without queueing."""

    ok: bool
    errors: list[NodeError]


@dataclass(frozen=True)
class Cancelled:
    """A queued job was taken out of the queue."""

    id: str


@dataclass(frozen=True)
class Interrupting:
    """The job is running (or was taken from the queue a moment ago): it stops at its next check."""

    id: str


@dataclass(frozen=True)
class NoSuchJob:
    id: str


@dataclass(frozen=True)
class NotCancellable:
    """The job is finished: there is nothing to cancel."""

    id: str
    status: JobStatus


@dataclass(frozen=True)
class Deleted:
    id: str


@dataclass(frozen=True)
class NotFinished:
    """Only finished jobs leave the history."""

    id: str
    status: JobStatus


SubmitOutcome = Submitted | Invalid  # | Refused, an Invalid
CancelOutcome = Cancelled | Interrupting | NoSuchJob | NotCancellable
DeleteOutcome = Deleted | NoSuchJob | NotFinished


@dataclass(frozen=True)
class JobSnapshot:
    """A job and, while it runs, what it is doing now (``live`` from the worker; None otherwise or in the
    moment before its first event)."""

    job: Job
    live: dict[str, Any] | None = None


@dataclass(frozen=True)
class QueueView:
    running: list[JobSnapshot]
    queued: list[Job]  # in the order they will run


@dataclass(frozen=True)
class HistoryPage:
    jobs: list[Job]  # newest first
    total: int


class QueueListener(Protocol):
    """Who hears about submissions and queue changes (the websocket hub)."""

    def job_submitted(self, job_id: str, client_id: str | None) -> None: ...

    def queue_changed(self, queue_remaining: int, running: str | None) -> None: ...


# -- the service -----------------------------------------------------------------------------------


class JobService:
    """Jobs over the store, the engine's validation and the worker. ``attach`` connects the worker and
    the listener when the server starts; before that, submissions queue and nobody is told."""

    def __init__(
        self, engine: Engine, store: Store, limits: Limits | None = None, max_queued: int | None = None
    ) -> None:
        self.engine = engine
        self.store = store
        #: what a job may ask for (default: the engine's limits)
        self.limits = limits
        #: the most jobs queued or running at once (None: no bound)
        self.max_queued = max_queued
        self._admitting = threading.Lock()  # the count and the insert of a submission, together
        self.worker: Worker | None = None
        self.listener: QueueListener | None = None

    def attach(self, worker: Worker, listener: QueueListener) -> None:
        """Start reporting to ``listener``; jobs queued before a restart keep reporting to their client."""
        self.worker, self.listener = worker, listener
        for job in self.store.queue()[1]:
            listener.job_submitted(job.id, job.client_id)

    # -- submitting --------------------------------------------------------------------------------

    def submit(
        self,
        workflow: Any,
        *,
        overrides: dict[str, Any] | None = None,
        outputs: list[str] | None = None,
        priority: int = 0,
        client_id: str | None = None,
        source: str = "atelier",
        job_id: str | None = None,
    ) -> SubmitOutcome:
        """Validate and queue. ``source`` records which protocol queued it ("atelier", "comfy");
        ``job_id``: the id to give the job (a ComfyUI client may choose its prompt's), else a new one."""
        overrides = overrides or {}
        result = self.engine.check(workflow, overrides, outputs)
        if not result.ok:
            return Invalid(list(result.errors))
        assert result.graph is not None
        if is_ui_format(workflow) and result.workflow is not None:
            workflow = result.workflow.to_dict()  # the job keeps what runs: Atelier's format, converted once
        admission = self.engine.admit(result.graph, self.limits)
        if not admission.ok:
            return Refused(admission.problems + list(result.warnings))
        with self._admitting:
            if self.max_queued is not None and self.store.count_queued() >= self.max_queued:
                message = f"the queue is full ({self.max_queued} jobs, the limit max_queued): try again later"
                return QueueFull([NodeError(code="queue_full", message=message)])
            job_id = job_id or uuid.uuid4().hex
            if self.listener is not None:  # before the job exists: its first event must find its owner
                self.listener.job_submitted(job_id, client_id)
            number = self.store.add_job(
                job_id,
                workflow,
                overrides,
                priority=priority,
                outputs_requested=outputs,
                client_id=client_id,
                source=source,
            )
        self.queue_changed()
        return Submitted(job_id, number, list(result.warnings))

    def check(self, workflow: Any, *, overrides: dict[str, Any], outputs: list[str] | None) -> Checked:
        result = self.engine.check(workflow, overrides, outputs)
        if result.graph is None:
            return Checked(False, list(result.errors))
        problems = self.engine.admit(result.graph, self.limits).problems
        return Checked(not problems, problems + list(result.errors))

    # -- looking ----------------------------------------------------------------------------------

    def get(self, job_id: str) -> JobSnapshot | None:
        job = self.store.get_job(job_id)
        return None if job is None else self._snapshot(job)

    def queue(self) -> QueueView:
        running, queued = self.store.queue()
        return QueueView([self._snapshot(j) for j in running], queued)

    def history(
        self, *, offset: int = 0, limit: int = 50, status: FinishedStatus | None = None
    ) -> HistoryPage:
        jobs, total = self.store.history(offset=offset, limit=limit, status=status)
        return HistoryPage(jobs, total)

    def queue_remaining(self) -> int:
        """Jobs queued or running: what clients show as the queue's length."""
        return self.store.count_queued()

    def running(self) -> str | None:
        return self.worker.current if self.worker is not None else None

    def _snapshot(self, job: Job) -> JobSnapshot:
        live = self.worker.live.get(job.id) if job.status == "running" and self.worker else None
        return JobSnapshot(job, live)

    # -- stopping and forgetting -------------------------------------------------------------------

    def cancel(self, job_id: str) -> CancelOutcome:
        """Take a queued job out of the queue, or interrupt it if it is running."""
        job = self.store.get_job(job_id)
        if job is None:
            return NoSuchJob(job_id)
        if job.status == "queued" and self.store.cancel_queued(job_id):
            self.queue_changed()
            return Cancelled(job_id)
        # not queued (any more: the worker may have just taken it): interrupt it if it is the running job
        if self.worker is not None and self.worker.interrupt(job_id):
            return Interrupting(job_id)
        job = self.store.get_job(job_id) or job
        return NotCancellable(job_id, job.status)

    def interrupt(self) -> str | None:
        """Interrupt whatever runs; its id, or None when nothing does."""
        return self.worker.interrupt() if self.worker is not None else None

    def cancel_queued(self, job_ids: Iterable[str], *, everything: bool = False) -> None:
        """Take jobs out of the queue (those not queued are left alone); ``everything``: all queued jobs."""
        if everything:
            self.store.cancel_all_queued()
        for job_id in job_ids:
            self.store.cancel_queued(job_id)
        self.queue_changed()

    def delete(self, job_id: str) -> DeleteOutcome:
        """Remove a finished job from the history (its files stay)."""
        if self.store.delete_job(job_id):
            return Deleted(job_id)
        job = self.store.get_job(job_id)
        return NoSuchJob(job_id) if job is None else NotFinished(job_id, job.status)

    def forget(self, job_ids: Iterable[str], *, everything: bool = False) -> None:
        """Delete finished jobs from the history (others are left alone); ``everything``: the whole history."""
        if everything:
            self.store.clear_history()
        for job_id in job_ids:
            self.store.delete_job(job_id)

    # -- telling -----------------------------------------------------------------------------------

    def queue_changed(self) -> None:
        """Tell the listener the queue's new length and wake the worker (any thread)."""
        if self.listener is not None:
            self.listener.queue_changed(self.store.count_queued(), self.running())
        if self.worker is not None:
            self.worker.wakeup.set()
