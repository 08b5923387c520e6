"""ComfyUI's websocket format: the engine's events as ComfyUI's ``execution_*``/``executing``/``progress``
messages and binary preview frames. A ComfyUI client hears the prompts it queued (by ``clientId``) and
those queued without one, as ComfyUI does.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from atelier.engine import events as E

from ..hub import Client, Message

COMFY_PREVIEW = 1  # ComfyUI's binary event type for a preview image
COMFY_IMAGE_TYPES = {"JPEG": 1, "PNG": 2, "WEBP": 3}


def preview_frame(ev: E.Preview) -> bytes:
    return struct.pack(">II", COMFY_PREVIEW, COMFY_IMAGE_TYPES.get(ev.format.upper(), 1)) + ev.image


def image_frame(ev: E.ImageOutput) -> bytes:
    """An image output as ComfyUI sends SaveImageWebsocket's (UNENCODED_PREVIEW_IMAGE, encoded): the
    preview frame with the image's format."""
    return struct.pack(">II", COMFY_PREVIEW, COMFY_IMAGE_TYPES.get(ev.format.upper(), 2)) + ev.image


def status_message(queue_remaining: int, sid: str | None) -> str:
    return message("status", {"status": {"exec_info": {"queue_remaining": queue_remaining}}, "sid": sid})


def message(kind: str, data: dict[str, Any]) -> str:
    return json.dumps({"type": kind, "data": data})


def _ms(ts: float) -> int:
    return int(ts * 1000)


class ComfyFormat:
    """One per hub: it remembers, per running prompt, the nodes served from the cache (ComfyUI reports
    them in one ``execution_cached`` message) and those executed (listed in ``execution_error``)."""

    def __init__(self) -> None:
        self._cached: dict[str, list[str]] = {}
        self._executed: dict[str, list[str]] = {}

    def wants(self, client: Client, job: str, owner: str | None) -> bool:
        return owner is None or owner == client.client_id

    def greeting(self, client: Client, queue_remaining: int, running: str | None) -> str:
        return status_message(queue_remaining, client.client_id)

    def status(self, client: Client, queue_remaining: int, running: str | None) -> str:
        return status_message(queue_remaining, client.client_id)

    def render(self, ev: E.Event) -> list[Message]:
        out: list[Message] = []
        job = ev.job
        if not isinstance(ev, E.NodeCached) and self._cached.get(job):
            nodes = self._cached.pop(job)
            out.append(
                message("execution_cached", {"nodes": nodes, "prompt_id": job, "timestamp": _ms(ev.ts)})
            )
        if isinstance(ev, E.JobStarted):
            self._executed[job] = []
            out.append(message("execution_start", {"prompt_id": job, "timestamp": _ms(ev.ts)}))
        elif isinstance(ev, E.NodeCached):
            self._cached.setdefault(job, []).append(ev.node or "")
            self._executed.setdefault(job, []).append(ev.node or "")
        elif isinstance(ev, E.NodeStarted):
            out.append(message("executing", {"node": ev.node, "display_node": ev.node, "prompt_id": job}))
        elif isinstance(ev, E.Progress):
            out.append(
                message("progress", {"value": ev.value, "max": ev.max, "prompt_id": job, "node": ev.node})
            )
        elif isinstance(ev, E.Preview):
            out.append(preview_frame(ev))
        elif isinstance(ev, E.ImageOutput):
            out.append(image_frame(ev))
        elif isinstance(ev, E.NodeFinished):
            self._executed.setdefault(job, []).append(ev.node or "")
            if ev.ui:
                out.append(
                    message(
                        "executed",
                        {"node": ev.node, "display_node": ev.node, "output": ev.ui, "prompt_id": job},
                    )
                )
        elif isinstance(ev, E.JobFinished):
            self._executed.pop(job, None)
            out.append(message("execution_success", {"prompt_id": job, "timestamp": _ms(ev.ts)}))
            out.append(message("executing", {"node": None, "prompt_id": job}))
        elif isinstance(ev, E.JobFailed):
            out.append(
                message(
                    "execution_error",
                    {
                        "prompt_id": job,
                        "node_id": ev.node,
                        "node_type": ev.node_type,
                        "executed": self._executed.pop(job, []),
                        "exception_message": ev.message,
                        "exception_type": ev.exception_type or "ValidationError",
                        "traceback": ev.traceback.splitlines(),
                        "current_inputs": {},
                        "current_outputs": {},
                        "timestamp": _ms(ev.ts),
                    },
                )
            )
            out.append(message("executing", {"node": None, "prompt_id": job}))
        elif isinstance(ev, E.JobInterrupted):
            out.append(
                message(
                    "execution_interrupted",
                    {
                        "prompt_id": job,
                        "node_id": ev.node,
                        "node_type": ev.node_type,
                        "executed": self._executed.pop(job, []),
                        "timestamp": _ms(ev.ts),
                    },
                )
            )
            out.append(message("executing", {"node": None, "prompt_id": job}))
        return out
