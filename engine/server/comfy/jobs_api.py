"""ComfyUI's jobs API (``GET /jobs``, ``GET /jobs/{id}``): one list of pending, running and finished
prompts, which ComfyUI's frontend reads for its queue and history panels.

Shapes only: jobs come from the job service, as for ``/queue`` and ``/history``. Atelier's statuses map to
ComfyUI's ``pending``, ``in_progress``, ``completed``, ``failed`` and ``cancelled`` (interrupted or
cancelled).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from ..deps import services_of
from ..jobs import Job
from ..responses import documented, error
from ..service import Services
from .history import history_entry

router = APIRouter(tags=["comfyui"])
Svc = Depends(services_of)

COMFY_STATUS = {
    "queued": "pending",
    "running": "in_progress",
    "success": "completed",
    "failed": "failed",
    "invalid": "failed",
    "interrupted": "cancelled",
    "cancelled": "cancelled",
}
ALL_STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")
#: output kinds the frontend can show as a job's preview
PREVIEWABLE = ("images", "video", "audio")
#: the most finished jobs one listing looks through (ComfyUI keeps 10000 in its history)
MAX_HISTORY = 10000


def _ms(ts: float | None) -> int | None:
    return None if ts is None else int(ts * 1000)


def outputs_summary(outputs: dict[str, Any]) -> tuple[int, int, dict[str, Any] | None]:
    """(outputs, previewable outputs, the preview): the first previewable ``output`` file, else the first
    previewable one, with its node and kind."""
    count = previewable = 0
    preview = fallback = None
    for node, ui in outputs.items():
        if not isinstance(ui, dict):
            continue
        for kind, items in ui.items():
            if kind == "animated" or not isinstance(items, list):
                continue
            for item in items:
                if not isinstance(item, dict):
                    continue
                count += 1
                if kind not in PREVIEWABLE:
                    continue
                previewable += 1
                enriched = {**item, "nodeId": node, "mediaType": kind}
                if preview is None and item.get("type") == "output":
                    preview = enriched
                elif fallback is None:
                    fallback = enriched
    return count, previewable, preview or fallback


def job_item(job: Job) -> dict[str, Any]:
    """A job as the list shows it."""
    count, previewable, preview = outputs_summary(job.outputs or {})
    item: dict[str, Any] = {
        "id": job.id,
        "status": COMFY_STATUS[job.status],
        "priority": job.number,
        "create_time": _ms(job.created),
        "outputs_count": count,
        "previewable_outputs_count": previewable,
    }
    if job.started is not None:
        item["execution_start_time"] = _ms(job.started)
    if job.is_finished and job.finished is not None:
        item["execution_end_time"] = _ms(job.finished)
    if preview is not None:
        item["preview_output"] = preview
    if job.status in ("failed", "invalid") and job.error:
        item["execution_error"] = execution_error(job)
    return item


def execution_error(job: Job) -> dict[str, Any]:
    """A failed job's error as ComfyUI's ``execution_error`` message."""
    err = job.error or {}
    traceback = err.get("traceback") or ""
    return {
        "prompt_id": job.id,
        "node_id": err.get("node") or "",
        "node_type": err.get("node_type") or "",
        "executed": list(job.executed),
        "exception_message": err.get("message") or "",
        "exception_type": err.get("exception_type") or "ValidationError",
        "traceback": traceback.splitlines() if isinstance(traceback, str) else list(traceback),
        "timestamp": _ms(job.finished),
    }


def job_detail(job: Job) -> dict[str, Any]:
    """One job with its outputs, ComfyUI's execution status and the prompt it ran."""
    entry = history_entry(job)
    return {
        **job_item(job),
        "outputs": job.outputs or {},
        "execution_status": entry["status"],
        "workflow": {"prompt": job.workflow, "extra_data": {"client_id": job.client_id}},
    }


def _sort_key(sort_by: str) -> Any:
    if sort_by == "execution_duration":

        def duration(item: dict[str, Any]) -> int:
            start, end = item.get("execution_start_time"), item.get("execution_end_time")
            return end - start if start and end else 0

        return duration
    return lambda item: (item["create_time"], item["priority"])


@router.get("/jobs", responses=documented(400, 422))
def list_jobs(
    status: str = "",
    workflow_id: str = "",
    sort_by: str = "created_at",
    sort_order: str = "desc",
    limit: int | None = None,
    offset: int = 0,
    services: Services = Svc,
) -> Any:
    """Jobs of the statuses asked for (comma-separated; all by default), newest first unless
    ``sort_order=asc``, paginated."""
    wanted = [s for s in status.split(",") if s] or list(ALL_STATUSES)
    unknown = [s for s in wanted if s not in ALL_STATUSES]
    if unknown:
        return error(400, f"unknown status {unknown[0]!r}: one of {', '.join(ALL_STATUSES)}")
    if sort_by not in ("created_at", "execution_duration"):
        return error(400, "sort_by must be created_at or execution_duration")
    if sort_order not in ("asc", "desc"):
        return error(400, "sort_order must be asc or desc")
    if (limit is not None and limit < 0) or offset < 0:
        return error(400, "limit and offset must not be negative")
    jobs: list[Job] = []
    if "in_progress" in wanted or "pending" in wanted:
        queue = services.jobs.queue()
        jobs += [s.job for s in queue.running] + list(queue.queued)
    if {"completed", "failed", "cancelled"} & set(wanted):
        jobs += services.jobs.history(offset=0, limit=MAX_HISTORY).jobs
    items = [job_item(j) for j in jobs if COMFY_STATUS[j.status] in wanted]
    if workflow_id:  # prompts carry no frontend workflow ids here: none matches
        items = []
    items.sort(key=_sort_key(sort_by), reverse=sort_order == "desc")
    total = len(items)
    page = items[offset:] if limit is None else items[offset : offset + limit]
    return {
        "jobs": page,
        "pagination": {
            "offset": offset,
            "limit": limit if limit is not None else total,
            "total": total,
            "has_more": offset + len(page) < total,
        },
    }


@router.get("/jobs/{job_id}", responses=documented(404))
def get_job(job_id: str, services: Services = Svc) -> Any:
    snapshot = services.jobs.get(job_id)
    if snapshot is None:
        return error(404, f"no job {job_id!r}")
    return job_detail(snapshot.job)
