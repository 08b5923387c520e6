"""The event types: one typed stream for the CLI, the server and workers.

Every event has ``type``, ``job`` and, where it concerns one node, ``node``; ``ts`` is the wall-clock
time it was emitted (seconds since the epoch). ``to_json()`` gives the JSON line that
``atelier run --events`` writes and the websocket sends; a preview's or image output's bytes travel separately
(binary websocket frames), never inside the JSON.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field


class Event(BaseModel):
    type: str
    job: str
    node: str | None = None
    ts: float = Field(default_factory=time.time)

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)


class JobStarted(Event):
    type: Literal["job_started"] = "job_started"
    workflow: str = ""
    nodes: int = 0
    to_run: int = 0


class NodeStarted(Event):
    type: Literal["node_started"] = "node_started"
    node_type: str
    title: str | None = None


class NodeCached(Event):
    type: Literal["node_cached"] = "node_cached"
    node_type: str


class Progress(Event):
    type: Literal["progress"] = "progress"
    value: float
    max: float | None = None


class Preview(Event):
    type: Literal["preview"] = "preview"
    format: str = "JPEG"
    width: int = 0
    height: int = 0
    image: bytes = Field(default=b"", exclude=True, repr=False)


class ImageOutput(Event):
    """An image a node sends to the job's client as a result, not saved anywhere (SaveImageWebsocket).
    Unlike a preview it is never dropped for a slow client."""

    type: Literal["image_output"] = "image_output"
    format: str = "PNG"
    width: int = 0
    height: int = 0
    image: bytes = Field(default=b"", exclude=True, repr=False)


class NodeFinished(Event):
    type: Literal["node_finished"] = "node_finished"
    node_type: str
    elapsed_ms: float
    ui: dict[str, Any] | None = None


class NodeFailed(Event):
    type: Literal["node_failed"] = "node_failed"
    node_type: str
    message: str
    exception_type: str
    traceback: str = ""


class JobFinished(Event):
    type: Literal["job_finished"] = "job_finished"
    elapsed_ms: float
    executed: int = 0
    cached: int = 0
    outputs: dict[str, dict[str, Any]] = Field(default_factory=dict)


class JobFailed(Event):
    type: Literal["job_failed"] = "job_failed"
    message: str
    node_type: str | None = None
    exception_type: str | None = None
    traceback: str = ""
    errors: list[dict[str, Any]] = Field(default_factory=list)


class JobInterrupted(Event):
    type: Literal["job_interrupted"] = "job_interrupted"
    node_type: str | None = None


EVENT_TYPES: dict[str, type[Event]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        JobStarted,
        NodeStarted,
        NodeCached,
        Progress,
        Preview,
        ImageOutput,
        NodeFinished,
        NodeFailed,
        JobFinished,
        JobFailed,
        JobInterrupted,
    )
}

EventSink = Callable[[Event], None]


def parse_event(data: dict[str, Any]) -> Event:
    """Rebuild a typed event from its JSON form (for clients and tests)."""
    cls = EVENT_TYPES.get(data.get("type", ""))
    if cls is None:
        raise ValueError(f"unknown event type {data.get('type')!r}")
    return cls.model_validate(data)
