"""Fan-out of engine events to websocket clients, each in its protocol's format.

The worker thread publishes; each client has a bounded asyncio queue drained by its own sender task, so a
slow client never blocks the engine (when its queue is full, previews are dropped first, then the client
is disconnected). What a client hears and in which shapes is its format's business (``messages.py`` for
Atelier's, ``comfy/messages.py`` for ComfyUI's); the hub only routes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from atelier.engine import events as E

QUEUE_LIMIT = 1000
#: seconds a held job's events wait for ``release`` before they go out anyway
HOLD_LIMIT_S = 10.0

Message = str | bytes


@dataclass(eq=False)
class Client:
    queue: asyncio.Queue[Message]
    format: str  # a key of Hub.formats
    client_id: str | None = None
    jobs: set[str] | None = None  # None: every job
    dropped: int = 0
    closed: bool = False
    #: the feature flags the client announced (ComfyUI's ``feature_flags`` handshake)
    features: dict[str, Any] = field(default_factory=dict)


class Format(Protocol):
    """A websocket protocol's rendering of the server's events."""

    def render(self, ev: E.Event) -> list[Message]:
        """The messages for one event, shared by every client of the format. Called for every event,
        whether or not a client of the format is connected (a format may keep per-job state)."""
        ...

    def wants(self, client: Client, job: str, owner: str | None) -> bool:
        """Whether ``client`` hears about ``job`` (queued by client id ``owner``, or None)."""
        ...

    def for_client(self, client: Client, ev: E.Event, messages: list[Message]) -> list[Message]:
        """The rendered messages as ``client`` gets them (a format may vary them by the client's
        feature flags)."""
        ...

    def greeting(self, client: Client, queue_remaining: int, running: str | None) -> str:
        """The first message a client gets."""
        ...

    def status(self, client: Client, queue_remaining: int, running: str | None) -> str:
        """The message telling a client the queue changed."""
        ...


@dataclass
class Hub:
    loop: asyncio.AbstractEventLoop
    formats: dict[str, Format]
    clients: set[Client] = field(default_factory=set)
    #: job id -> the client id that queued it (ComfyUI clients hear only about their own prompts)
    owners: dict[str, str | None] = field(default_factory=dict)
    #: job id -> its events held back until ``release`` (see ``hold``)
    held: dict[str, list[E.Event]] = field(default_factory=dict)

    # on the event loop
    def add(self, client: Client) -> None:
        self.clients.add(client)

    def remove(self, client: Client) -> None:
        client.closed = True
        self.clients.discard(client)

    def hold(self, job_id: str) -> None:
        """Keep ``job_id``'s events until ``release(job_id)`` (or ``HOLD_LIMIT_S``): a ComfyUI client
        learns a prompt's id from the reply to ``POST /prompt`` and drops messages about prompts it does
        not know, so none may reach it before that reply, however fast the job runs."""
        self.held.setdefault(job_id, [])
        self.loop.call_later(HOLD_LIMIT_S, self.release, job_id)

    def release(self, job_id: str) -> None:
        """Send what was held for ``job_id``, in order, and stop holding it."""
        for ev in self.held.pop(job_id, None) or ():
            self._deliver(ev)

    # called from any thread (the worker, request handlers in the thread pool)
    def publish(self, ev: E.Event) -> None:
        try:
            self.loop.call_soon_threadsafe(self._dispatch, ev)
        except RuntimeError:  # the loop is closed: the server is stopping
            pass

    def job_submitted(self, job_id: str, client_id: str | None) -> None:
        self.owners[job_id] = client_id

    def queue_changed(self, queue_remaining: int, running: str | None) -> None:
        try:
            self.loop.call_soon_threadsafe(self._status, queue_remaining, running)
        except RuntimeError:
            pass

    # on the event loop
    def _dispatch(self, ev: E.Event) -> None:
        held = self.held.get(ev.job)
        if held is not None:
            held.append(ev)
            return
        self._deliver(ev)

    def _deliver(self, ev: E.Event) -> None:
        owner = self.owners.get(ev.job)
        rendered = {name: fmt.render(ev) for name, fmt in self.formats.items()}
        droppable = isinstance(ev, (E.Preview, E.Progress))
        for c in list(self.clients):
            fmt = self.formats[c.format]
            if not fmt.wants(c, ev.job, owner):
                continue
            for m in fmt.for_client(c, ev, rendered[c.format]):
                self._put(c, m, droppable=droppable)
        if isinstance(ev, (E.JobFinished, E.JobFailed, E.JobInterrupted)):
            self.owners.pop(ev.job, None)

    def _status(self, queue_remaining: int, running: str | None) -> None:
        for c in list(self.clients):
            self._put(c, self.formats[c.format].status(c, queue_remaining, running), droppable=False)

    def _put(self, c: Client, msg: Message, droppable: bool) -> None:
        q = c.queue
        if q.qsize() >= QUEUE_LIMIT:
            if droppable:
                c.dropped += 1
                return
            if q.qsize() >= QUEUE_LIMIT * 2:
                c.closed = True  # hopelessly behind: its sender task closes the socket
                return
        q.put_nowait(msg)
