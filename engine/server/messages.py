"""Atelier's websocket format: every event as its JSON line (``events.py``), previews and image outputs as binary frames
with a JSON header, and ``hello``/``queue`` notices. A client hears every job, or those it subscribed to.
"""

from __future__ import annotations

import json
import struct

from atelier.engine import events as E

from .hub import Client, Message


def preview_frame(ev: E.Preview | E.ImageOutput) -> bytes:
    """``>I`` header length, the JSON header (type, job, node, format, size), then the image bytes."""
    header = json.dumps(
        {
            "type": ev.type,
            "job": ev.job,
            "node": ev.node,
            "format": ev.format,
            "width": ev.width,
            "height": ev.height,
        }
    ).encode()
    return struct.pack(">I", len(header)) + header + ev.image


class AtelierFormat:
    def render(self, ev: E.Event) -> list[Message]:
        return [preview_frame(ev) if isinstance(ev, (E.Preview, E.ImageOutput)) else ev.to_json()]

    def wants(self, client: Client, job: str, owner: str | None) -> bool:
        return client.jobs is None or job in client.jobs

    def greeting(self, client: Client, queue_remaining: int, running: str | None) -> str:
        return json.dumps({"type": "hello", "queue_remaining": queue_remaining, "running": running})

    def status(self, client: Client, queue_remaining: int, running: str | None) -> str:
        return json.dumps({"type": "queue", "queue_remaining": queue_remaining, "running": running})
