"""Which queued jobs run in one batch with a job: the server's worker thread and its Ray workers both ask.

Two jobs can run as one batch when they have the same batch signature (``Executor.batch_signature``: the
same graph and sampler settings; seeds, cfg and prompts may differ). The finder takes such jobs from the
queue, those queued now or, when there are none, the first to come within a short window, and marks them
running (``Store.take_queued``). Each queued job is validated once for its signature, and only when its
workflow has the shape of the job's (a cheap test first).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from atelier.engine.executor import Executor

from .jobs import Job
from .store import Store

#: queued jobs whose signature is remembered at most (a memo of what waits, not a history)
MEMO = 256


def workflow_shape(workflow: Any) -> Any:
    """A workflow's structure without its values (keys kept, every string or number replaced by its type):
    jobs queued from one workflow with other seeds, prompts or settings share it: a cheap first test before
    the worker validates a queued job for its batch signature."""
    if isinstance(workflow, dict):
        return tuple(sorted((str(k), workflow_shape(v)) for k, v in workflow.items()))
    if isinstance(workflow, (list, tuple)):
        return tuple(workflow_shape(v) for v in workflow)
    return type(workflow).__name__


class BatchPartners:
    """Finds the partners of a job (see the module's description): up to ``max_batch - 1`` of them, waiting
    up to ``window_s`` on ``wakeup`` (set when a job is queued) when none is queued; never once ``stopping``
    is set."""

    def __init__(
        self,
        store: Store,
        executor: Executor,
        max_batch: int,
        window_s: float,
        wakeup: threading.Event,
        stopping: threading.Event,
    ) -> None:
        self.store = store
        self.executor = executor
        self.max_batch = max_batch
        self.window_s = window_s
        self.wakeup = wakeup
        self.stopping = stopping
        self._signatures: dict[str, Any] = {}

    def take(self, job: Job, size: int | None = None) -> list[Job]:
        """Queued jobs with ``job``'s batch signature, taken from the queue (none when it cannot batch), for
        a batch of ``size`` jobs at most (default and cap: ``max_batch``)."""
        size = self.max_batch if size is None else min(size, self.max_batch)
        if size <= 1:
            return []
        signature = self.signature(job)
        if signature is None:  # nothing in it can batch: no partner, no wait
            return []
        shape = workflow_shape(job.workflow)

        def accept(other: Job) -> bool:  # the shape first: it is cheap, a signature validates the job
            return workflow_shape(other.workflow) == shape and self.signature(other) == signature

        def take() -> list[Job]:
            return self.store.take_queued(size - 1, accept)

        partners = take()
        deadline = time.monotonic() + self.window_s
        while not partners and not self.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if self.wakeup.wait(left):
                self.wakeup.clear()
                partners = take()
        return partners

    def signature(self, job: Job) -> Any:
        """The job's batch signature (``Executor.batch_signature``; None: it cannot batch), once per job."""
        if job.id in self._signatures:
            return self._signatures[job.id]
        signature = self.executor.batch_signature(job.workflow, job.overrides or {}, job.outputs_requested)
        if len(self._signatures) >= MEMO:
            self._signatures.clear()
        self._signatures[job.id] = signature
        return signature
