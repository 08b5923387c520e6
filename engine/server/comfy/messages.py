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
from .features import supports

COMFY_PREVIEW = 1  # ComfyUI's binary event type for a preview image
COMFY_PREVIEW_WITH_METADATA = 4  # ... and for one preceded by JSON metadata (clients that support it)
COMFY_IMAGE_TYPES = {"JPEG": 1, "PNG": 2, "WEBP": 3}


def preview_frame(ev: E.Preview) -> bytes:
    """Event 1: ``>I`` event type, ``>I`` image type (1 JPEG, 2 PNG), the image."""
    return struct.pack(">II", COMFY_PREVIEW, COMFY_IMAGE_TYPES.get(ev.format.upper(), 1)) + ev.image


def image_frame(ev: E.ImageOutput) -> bytes:
    """An image output as ComfyUI sends SaveImageWebsocket's (UNENCODED_PREVIEW_IMAGE, encoded): the
    preview frame with the image's format."""
    return struct.pack(">II", COMFY_PREVIEW, COMFY_IMAGE_TYPES.get(ev.format.upper(), 2)) + ev.image


def preview_metadata_frame(ev: E.Preview) -> bytes:
    """Event 4: ``>I`` event type, ``>I`` metadata length, the metadata as JSON (the node and prompt the
    preview belongs to, its MIME type), the image. Atelier has no subgraphs: every node is its own
    display and real node, with no parent."""
    metadata = {
        "node_id": ev.node,
        "prompt_id": ev.job,
        "display_node_id": ev.node,
        "parent_node_id": None,
        "real_node_id": ev.node,
        "image_type": "image/" + ev.format.lower(),
    }
    header = json.dumps(metadata).encode()
    return struct.pack(">II", COMFY_PREVIEW_WITH_METADATA, len(header)) + header + ev.image


def queue_info(queue_remaining: int) -> dict[str, Any]:
    """ComfyUI's queue info (``GET /prompt``, ``status`` messages)."""
    return {"exec_info": {"queue_remaining": queue_remaining}}


def status_message(queue_remaining: int, sid: str | None = None) -> str:
    """``status``: with the client's ``sid`` in the greeting only, as ComfyUI sends it."""
    data: dict[str, Any] = {"status": queue_info(queue_remaining)}
    if sid is not None:
        data["sid"] = sid
    return message("status", data)


def message(kind: str, data: dict[str, Any]) -> str:
    return json.dumps({"type": kind, "data": data})


def _ms(ts: float) -> int:
    return int(ts * 1000)


class ComfyFormat:
    """One per hub: it remembers, per running prompt, the nodes served from the cache (ComfyUI reports
    them in one ``execution_cached`` message right after ``execution_start``, every time, then
    ``executed`` with the cached UI output of the output nodes among them) and those executed (listed in
    ``execution_error``). The executor reports every cached node right after ``job_started``, so the
    job's first other event sends the lot."""

    def __init__(self) -> None:
        self._pending: dict[str, tuple[list[str], list[str]]] = {}
        self._executed: dict[str, list[str]] = {}

    def wants(self, client: Client, job: str, owner: str | None) -> bool:
        return owner is None or owner == client.client_id

    def for_client(self, client: Client, ev: E.Event, messages: list[Message]) -> list[Message]:
        if isinstance(ev, E.Preview) and supports(client.features, "supports_preview_metadata"):
            return [preview_metadata_frame(ev)]
        return messages

    def greeting(self, client: Client, queue_remaining: int, running: str | None) -> str:
        return status_message(queue_remaining, client.client_id)

    def status(self, client: Client, queue_remaining: int, running: str | None) -> str:
        return status_message(queue_remaining)

    def _flush(self, job: str, ts: float) -> list[Message]:
        pending = self._pending.pop(job, None)
        if pending is None:
            return []
        nodes, executed = pending
        cached = message("execution_cached", {"nodes": nodes, "prompt_id": job, "timestamp": _ms(ts)})
        return [cached, *executed]

    def render(self, ev: E.Event) -> list[Message]:
        job = ev.job
        if isinstance(ev, E.JobStarted):
            self._pending[job] = ([], [])
            self._executed[job] = []
            return [message("execution_start", {"prompt_id": job, "timestamp": _ms(ev.ts)})]
        if isinstance(ev, E.NodeCached):
            node = ev.node or ""
            self._executed.setdefault(job, []).append(node)
            pending = self._pending.get(job)
            if pending is not None:
                pending[0].append(node)
                if ev.ui is not None:
                    data = {"node": node, "display_node": node, "output": ev.ui, "prompt_id": job}
                    pending[1].append(message("executed", data))
            return []
        out = self._flush(job, ev.ts)
        if isinstance(ev, E.NodeStarted):
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
