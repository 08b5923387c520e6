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


def history_entry(job: Job) -> dict[str, Any]:
    messages: list[Any] = []
    if job.started:
        messages.append(["execution_start", {"prompt_id": job.id, "timestamp": int(job.started * 1000)}])
    if job.status == "success":
        messages.append(
            ["execution_success", {"prompt_id": job.id, "timestamp": int((job.finished or 0) * 1000)}]
        )
    elif job.error:
        messages.append(
            [
                "execution_error",
                {"prompt_id": job.id, **{k: v for k, v in job.error.items() if k != "traceback"}},
            ]
        )
    outputs = job.outputs or {}
    return {
        "prompt": [job.number, job.id, job.workflow, {"client_id": job.client_id}, list(outputs)],
        "outputs": outputs,
        "status": {
            "status_str": STATUS_STR.get(job.status, job.status),
            "completed": job.status == "success",
            "messages": messages,
        },
        "meta": {nid: {"node_id": nid, "display_node": nid} for nid in outputs},
    }


def queue_item(job: Job) -> list[Any]:
    return [job.number, job.id, job.workflow, {"client_id": job.client_id}, []]
