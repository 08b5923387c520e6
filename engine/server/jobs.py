"""A job as the server knows it: one queued, running or finished workflow run, as the store keeps it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

JobStatus = Literal["queued", "running", "success", "failed", "interrupted", "cancelled", "invalid"]
FinishedStatus = Literal["success", "failed", "interrupted", "cancelled", "invalid"]

#: statuses of jobs that will not run again: the history
FINISHED: tuple[FinishedStatus, ...] = ("success", "failed", "interrupted", "cancelled", "invalid")


@dataclass(frozen=True)
class Job:
    """One row of the job table, its JSON columns decoded. Immutable: the store hands out copies, so a
    view built on one thread never sees another thread's update half-done."""

    id: str
    number: int
    status: JobStatus
    workflow: Any
    created: float
    priority: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)
    outputs_requested: list[str] | None = None
    client_id: str | None = None
    source: str = "atelier"
    outputs: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    started: float | None = None
    finished: float | None = None
    #: how many workers died running it (distributed workers re-queue it once)
    attempts: int = 0

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED
