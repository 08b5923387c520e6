"""One websocket connection: the handshake checks, the greeting, the sender task draining the client's
queue, and the messages a client may send. The route decides the protocol: Atelier's on
``/atelier/v1/ws``, ComfyUI's on ``/ws`` and ``/api/ws``.

Store reads (the queue's length for the greeting, a job for ``state``) run in a worker thread: the event
loop only moves messages.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from anyio import to_thread
from fastapi import WebSocket, WebSocketDisconnect

from .api_views import job_view
from .comfy.features import server_features
from .hub import Client, Hub
from .security import check_websocket
from .service import Services


async def websocket_session(websocket: WebSocket, services: Services, hub: Hub, fmt: str) -> None:
    """One client of the protocol ``fmt`` ("atelier" on ``/atelier/v1/ws``, "comfy" on ``/ws``)."""
    refused = check_websocket(websocket, services.settings)
    if refused is not None:
        await websocket.close(code=refused[0], reason=refused[1])
        return
    await websocket.accept()
    params = websocket.query_params
    if fmt == "comfy":
        # as ComfyUI: the client's id names the session, or the server makes one up and says it (``sid``)
        client_id: str | None = params.get("clientId") or uuid.uuid4().hex
        jobs = None
    else:
        client_id = params.get("clientId") or params.get("client_id")
        jobs_param = params.get("jobs")
        jobs = None if not jobs_param or jobs_param == "all" else set(jobs_param.split(","))
    client = Client(asyncio.Queue(), fmt, client_id, jobs)
    hub.add(client)  # before counting: no queue change falls between the greeting and the first notice
    queued, running = await to_thread.run_sync(
        lambda: (services.jobs.queue_remaining(), services.jobs.running())
    )
    greeting = hub.formats[fmt].greeting(client, queued, running)
    await websocket.send_text(greeting)  # first, before the sender drains what the hub queued meanwhile

    async def sender() -> None:
        while not client.closed:
            msg = await client.queue.get()
            if isinstance(msg, bytes):
                await websocket.send_bytes(msg)
            else:
                await websocket.send_text(msg)
        await websocket.close(code=1013, reason="client too slow")

    task = asyncio.create_task(sender())
    first = True
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if fmt == "comfy":
                reply = comfy_client_message(text, client, services, first)
            elif text is None:  # a binary frame: answer, do not crash the session
                reply = {"type": "error", "error": "messages must be JSON text"}
            else:
                reply = await handle_client_message(text, client, services)
            first = first and text is None  # only a text message can be the handshake
            if reply is not None:
                client.queue.put_nowait(json.dumps(reply))
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        hub.remove(client)
        task.cancel()


def comfy_client_message(
    text: str | None, client: Client, services: Services, first: bool
) -> dict[str, Any] | None:
    """ComfyUI reads one message from its clients: ``{"type": "feature_flags", "data": {...}}`` as the
    first, answered with the server's flags. Everything else is ignored, as ComfyUI does."""
    if not first or text is None:
        return None
    try:
        msg = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(msg, dict) or msg.get("type") != "feature_flags":
        return None
    data = msg.get("data")
    client.features = dict(data) if isinstance(data, dict) else {}
    return {"type": "feature_flags", "data": server_features(services.settings)}


async def handle_client_message(text: str, client: Client, services: Services) -> dict[str, Any] | None:
    """Messages a client may send: ``{"type": "subscribe", "jobs": [...] | "all"}`` and
    ``{"type": "state", "job": ID}`` (a job's status and live progress, for clients that connect late).
    Replies are queued behind whatever the client was sent before, so a ``state`` reply is never older
    than the events before it."""
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, an over-long integer, nested too deeply
        return {"type": "error", "error": "messages must be JSON"}
    if not isinstance(msg, dict):
        return {"type": "error", "error": "messages must be JSON objects"}
    kind = msg.get("type")
    if kind == "subscribe":
        jobs = msg.get("jobs")
        if jobs == "all" or jobs is None:
            client.jobs = None
        elif isinstance(jobs, list) and all(isinstance(j, str) for j in jobs):
            client.jobs = set(jobs)
        else:
            return {"type": "error", "error": 'jobs must be a list of job ids or "all"'}
        return {"type": "subscribed", "jobs": "all" if client.jobs is None else sorted(client.jobs)}
    if kind == "state":
        job_id = msg.get("job")
        snapshot = await to_thread.run_sync(services.jobs.get, job_id) if isinstance(job_id, str) else None
        if snapshot is None:
            return {"type": "error", "error": f"no job {repr(job_id)[:80]}"}
        return {"type": "state", "job": job_view(snapshot)}
    return {"type": "error", "error": f"unknown message type {repr(kind)[:80]}"}
