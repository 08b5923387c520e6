"""Atelier's JSON shape of a job, for ``/atelier/v1`` and the websocket's ``state`` replies."""

from __future__ import annotations

from typing import Any

from .service_jobs import JobSnapshot


def job_view(snapshot: JobSnapshot, *, full: bool = False) -> dict[str, Any]:
    """A job's status, timing, outputs and error; ``live`` (what it does now) while it runs; the
    workflow itself only when ``full``."""
    job = snapshot.job
    view: dict[str, Any] = {
        "id": job.id,
        "number": job.number,
        "priority": job.priority,
        "status": job.status,
        "client_id": job.client_id,
        "source": job.source,
        "created": job.created,
        "started": job.started,
        "finished": job.finished,
        "outputs": job.outputs or {},
        "error": job.error,
        "executed": job.executed or [],
        "cached": job.cached or [],
        "overrides": job.overrides or {},
    }
    if job.status == "running":
        view["live"] = snapshot.live
    if full:
        view["workflow"] = job.workflow
    return view
