"""Fan-out of engine events to websocket clients, in Atelier's shapes or ComfyUI's.

The worker thread publishes; each client has a bounded asyncio queue drained by its own sender task, so a
slow client never blocks the engine (when its queue is full, previews are dropped first, then the client
is disconnected).
"""

from __future__ import annotations

import asyncio
import json
import struct
import threading
from dataclasses import dataclass, field
from typing import Any

from atelier.engine import events as E

QUEUE_LIMIT = 1000
COMFY_PREVIEW = 1  # ComfyUI's binary event type for a preview image
COMFY_IMAGE_TYPES = {"JPEG": 1, "PNG": 2, "WEBP": 3}


@dataclass(eq=False)
class Client:
    queue: asyncio.Queue
    format: str  # "atelier" or "comfy"
    client_id: str | None = None
    jobs: set[str] | None = None  # None: every job
    dropped: int = 0
    closed: bool = False

    def wants(self, job: str, owner: str | None) -> bool:
        if self.format == "comfy":  # ComfyUI sends execution events to the submitting client, or to all
            return owner is None or owner == self.client_id
        return self.jobs is None or job in self.jobs


def atelier_preview_frame(ev: E.Preview) -> bytes:
    header = json.dumps(
        {
            "type": "preview",
            "job": ev.job,
            "node": ev.node,
            "format": ev.format,
            "width": ev.width,
            "height": ev.height,
        }
    ).encode()
    return struct.pack(">I", len(header)) + header + ev.image


def comfy_preview_frame(ev: E.Preview) -> bytes:
    return struct.pack(">II", COMFY_PREVIEW, COMFY_IMAGE_TYPES.get(ev.format.upper(), 1)) + ev.image


class ComfyRenderer:
    """Turns the engine's events into ComfyUI's websocket messages (one renderer per hub)."""

    def __init__(self) -> None:
        self._cached: dict[str, list[str]] = {}
        self._executed: dict[str, list[str]] = {}

    def render(self, ev: E.Event) -> list[str | bytes]:
        out: list[str | bytes] = []
        job = ev.job
        if not isinstance(ev, E.NodeCached) and self._cached.get(job):
            nodes = self._cached.pop(job)
            out.append(_msg("execution_cached", {"nodes": nodes, "prompt_id": job, "timestamp": _ms(ev.ts)}))
        if isinstance(ev, E.JobStarted):
            self._executed[job] = []
            out.append(_msg("execution_start", {"prompt_id": job, "timestamp": _ms(ev.ts)}))
        elif isinstance(ev, E.NodeCached):
            self._cached.setdefault(job, []).append(ev.node or "")
            self._executed.setdefault(job, []).append(ev.node or "")
        elif isinstance(ev, E.NodeStarted):
            out.append(_msg("executing", {"node": ev.node, "display_node": ev.node, "prompt_id": job}))
        elif isinstance(ev, E.Progress):
            out.append(
                _msg("progress", {"value": ev.value, "max": ev.max, "prompt_id": job, "node": ev.node})
            )
        elif isinstance(ev, E.Preview):
            out.append(comfy_preview_frame(ev))
        elif isinstance(ev, E.NodeFinished):
            self._executed.setdefault(job, []).append(ev.node or "")
            if ev.ui:
                out.append(
                    _msg(
                        "executed",
                        {"node": ev.node, "display_node": ev.node, "output": ev.ui, "prompt_id": job},
                    )
                )
        elif isinstance(ev, E.JobFinished):
            self._executed.pop(job, None)
            out.append(_msg("execution_success", {"prompt_id": job, "timestamp": _ms(ev.ts)}))
            out.append(_msg("executing", {"node": None, "prompt_id": job}))
        elif isinstance(ev, E.JobFailed):
            executed = self._executed.pop(job, [])
            out.append(
                _msg(
                    "execution_error",
                    {
                        "prompt_id": job,
                        "node_id": ev.node,
                        "node_type": ev.node_type,
                        "executed": executed,
                        "exception_message": ev.message,
                        "exception_type": ev.exception_type or "ValidationError",
                        "traceback": ev.traceback.splitlines(),
                        "current_inputs": {},
                        "current_outputs": {},
                        "timestamp": _ms(ev.ts),
                    },
                )
            )
            out.append(_msg("executing", {"node": None, "prompt_id": job}))
        elif isinstance(ev, E.JobInterrupted):
            executed = self._executed.pop(job, [])
            out.append(
                _msg(
                    "execution_interrupted",
                    {
                        "prompt_id": job,
                        "node_id": ev.node,
                        "node_type": ev.node_type,
                        "executed": executed,
                        "timestamp": _ms(ev.ts),
                    },
                )
            )
            out.append(_msg("executing", {"node": None, "prompt_id": job}))
        return out


def _msg(kind: str, data: dict[str, Any]) -> str:
    return json.dumps({"type": kind, "data": data})


def _ms(ts: float) -> int:
    return int(ts * 1000)


@dataclass
class Hub:
    loop: asyncio.AbstractEventLoop
    clients: set[Client] = field(default_factory=set)
    comfy: ComfyRenderer = field(default_factory=ComfyRenderer)
    owners: dict[str, str | None] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, client: Client) -> None:
        self.clients.add(client)

    def remove(self, client: Client) -> None:
        client.closed = True
        self.clients.discard(client)

    # called from any thread
    def publish(self, ev: E.Event) -> None:
        try:
            self.loop.call_soon_threadsafe(self._dispatch, ev)
        except RuntimeError:  # the loop is closed: the server is stopping
            pass

    def publish_status(self, queue_remaining: int, running: str | None) -> None:
        try:
            self.loop.call_soon_threadsafe(self._status, queue_remaining, running)
        except RuntimeError:
            pass

    # on the event loop
    def _dispatch(self, ev: E.Event) -> None:
        owner = self.owners.get(ev.job)
        comfy_msgs = self.comfy.render(ev)
        atelier_msg: str | bytes = atelier_preview_frame(ev) if isinstance(ev, E.Preview) else ev.to_json()
        for c in list(self.clients):
            if not c.wants(ev.job, owner):
                continue
            for m in comfy_msgs if c.format == "comfy" else [atelier_msg]:
                self._put(c, m, droppable=isinstance(ev, (E.Preview, E.Progress)))
        if isinstance(ev, (E.JobFinished, E.JobFailed, E.JobInterrupted)):
            self.owners.pop(ev.job, None)

    def _status(self, queue_remaining: int, running: str | None) -> None:
        for c in list(self.clients):
            if c.format == "comfy":
                msg = _msg(
                    "status",
                    {"status": {"exec_info": {"queue_remaining": queue_remaining}}, "sid": c.client_id},
                )
            else:
                msg = json.dumps({"type": "queue", "queue_remaining": queue_remaining, "running": running})
            self._put(c, msg, droppable=False)

    def _put(self, c: Client, msg: str | bytes, droppable: bool) -> None:
        q = c.queue
        if q.qsize() >= QUEUE_LIMIT:
            if droppable:
                c.dropped += 1
                return
            if q.qsize() >= QUEUE_LIMIT * 2:
                c.closed = True  # hopelessly behind: its sender task closes the socket
                return
        q.put_nowait(msg)
