"""ComfyUI's shapes of jobs: ``/history`` entries and ``/queue`` items."""

from __future__ import annotations

from typing import Any

from ..jobs import Job

#: Atelier's finished statuses as ComfyUI's ``status_str``
STATUS_STR = {
    "success": "success",
    "failed": "error",
    "interrupted": "error",
    "cancelled": "error",
    "invalid": "error",
}


def _ms(ts: float | None) -> int:
    return int((ts or 0) * 1000)


def status_messages(job: Job) -> list[Any]:
    """The messages ComfyUI records in a prompt's history status: ``execution_start``,
    ``execution_cached``, then ``execution_success``, ``execution_error`` or ``execution_interrupted``,
    with the fields its websocket messages have."""
    messages: list[Any] = []
    if job.started:
        start = {"prompt_id": job.id, "timestamp": _ms(job.started)}
        messages.append(["execution_start", start])
        cached = {"nodes": list(job.cached), "prompt_id": job.id, "timestamp": _ms(job.started)}
        messages.append(["execution_cached", cached])
    error = job.error or {}
    stopped = {
        "prompt_id": job.id,
        "node_id": error.get("node"),
        "node_type": error.get("node_type"),
        "executed": list(job.executed) + list(job.cached),
    }
    if job.status == "success":
        messages.append(["execution_success", {"prompt_id": job.id, "timestamp": _ms(job.finished)}])
    elif job.status == "interrupted":
        messages.append(["execution_interrupted", {**stopped, "timestamp": _ms(job.finished)}])
    elif job.error and job.status != "cancelled":
        failed = {
            **stopped,
            "exception_message": error.get("message", ""),
            "exception_type": error.get("exception_type") or "ValidationError",
            "traceback": str(error.get("traceback") or "").splitlines(),
            "current_inputs": {},
            "current_outputs": {},
            "timestamp": _ms(job.finished),
        }
        if error.get("errors"):
            failed["errors"] = error["errors"]
        messages.append(["execution_error", failed])
    return messages


def history_entry(job: Job) -> dict[str, Any]:
    outputs = job.outputs or {}
    return {
        "prompt": [job.number, job.id, job.workflow, {"client_id": job.client_id}, list(outputs)],
        "outputs": outputs,
        "status": {
            "status_str": STATUS_STR.get(job.status, job.status),
            "completed": job.status == "success",
            "messages": status_messages(job),
        },
        "meta": {nid: {"node_id": nid, "display_node": nid} for nid in outputs},
    }


def queue_item(job: Job) -> list[Any]:
    return [job.number, job.id, job.workflow, {"client_id": job.client_id}, []]
