"""Cross-job batching: several jobs that reach the same kind of node with compatible inputs run it once.

The executor runs a job as a generator of its nodes (``Executor._steps``). When a job reaches a node that
can batch (its class implements :meth:`~atelier.engine.node.Node.run_batch`) and the node's
:meth:`~atelier.engine.node.Node.batch_key` for the resolved inputs is not None, the job pauses there with
a :class:`BatchRequest`. :func:`drive` advances several such jobs: every job runs its own nodes up to its
next request; requests with the same (node type, version, key) run as one ``run_batch`` and each job gets
its own outputs back; a request without a partner, or a batch that raises, is answered "run it yourself"
and that job runs the node alone as it would have without batching (so one job's bad input fails that job
only). Nothing here knows what the nodes do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from .node import CancelToken, Context, Node, cancel_scope

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchRequest:
    """A job paused at a node that may run in a batch: the node, its context and resolved inputs."""

    node_type: str
    version: str
    key: Hashable
    instance: Node
    ctx: Context
    inputs: dict[str, Any]

    @property
    def group(self) -> tuple[str, str, Hashable]:
        return (self.node_type, self.version, self.key)


@dataclass(frozen=True)
class BatchReply:
    """What a job paused at a :class:`BatchRequest` gets back: the node's return value for this job (as
    ``run`` would have returned it), how long the batch took, and how many jobs shared it."""

    value: Any
    elapsed_ms: float
    size: int


#: a job's steps: yields requests, receives a :class:`BatchReply` or None (run the node alone), returns
#: the job's result
JobSteps = Generator[BatchRequest, BatchReply | None, Any]


def batch_key(instance: Node, inputs: dict[str, Any]) -> Hashable | None:
    """The node's batch key for these inputs, or None (not batchable, or the key could not be made)."""
    try:
        key = instance.batch_key(**inputs)
        hash(key)
    except Exception:  # a key that cannot be made is no reason to fail: the node runs alone
        log.debug("batch key of %s failed", type(instance).__name__, exc_info=True)
        return None
    return key


def drive(
    jobs: Sequence[JobSteps],
    tokens: Sequence[CancelToken],
    *,
    max_batch: int = 8,
    on_result: Callable[[int, Any], None] | None = None,
) -> list[Any]:
    """Run ``jobs`` (generators of :class:`BatchRequest`) to the end, batching their compatible requests
    (at most ``max_batch`` jobs in one). Each job advances under its own cancel token. Returns each job's
    result in order; ``on_result(i, result)`` is told of each job's result as soon as it is known."""
    results: list[Any] = [None] * len(jobs)
    pending: dict[int, BatchRequest] = {}

    def advance(i: int, reply: BatchReply | None) -> None:
        with cancel_scope(tokens[i]):
            try:
                pending[i] = jobs[i].send(reply)
                return
            except StopIteration as stop:
                results[i] = stop.value
        if on_result is not None:
            on_result(i, results[i])

    for i in range(len(jobs)):
        advance(i, None)
    while pending:
        first = min(pending)
        group = pending[first].group
        members = [i for i in sorted(pending) if pending[i].group == group][: max(1, max_batch)]
        requests = [pending.pop(i) for i in members]
        replies = _run_batch(requests) if len(members) > 1 else [None]
        for i, reply in zip(members, replies, strict=True):
            advance(i, reply)
    return results


class AnyCancelled(CancelToken):
    """The cancel token of a batch, as code deep in a node sees it (``interrupt_point``): it trips when any
    job of the batch is cancelled, so the batch stops within one network block and its jobs run alone (the
    cancelled one stops at once, the others finish)."""

    __slots__ = ("_tokens",)

    def __init__(self, tokens: Sequence[CancelToken]) -> None:
        super().__init__()
        self._tokens = tuple(tokens)

    @property
    def cancelled(self) -> bool:
        return any(t.cancelled for t in self._tokens)

    def check(self, where: str = "") -> None:
        for token in self._tokens:
            token.check(where)


def _run_batch(requests: list[BatchRequest]) -> list[BatchReply | None]:
    """One ``run_batch`` for the requests; all None (each runs alone) when it raises or answers wrongly."""
    started = time.perf_counter()
    try:
        with cancel_scope(AnyCancelled([r.ctx.cancel for r in requests])):
            values = requests[0].instance.run_batch([r.ctx for r in requests], [r.inputs for r in requests])
        if not isinstance(values, (list, tuple)) or len(values) != len(requests):
            raise TypeError(f"run_batch returned {type(values).__name__}, not one value per job")
    except Exception as exc:
        log.info(
            "a batch of %d %s failed (%s): each job runs it alone", len(requests), requests[0].node_type, exc
        )
        return [None] * len(requests)
    elapsed = (time.perf_counter() - started) * 1000.0
    return [BatchReply(v, elapsed, len(requests)) for v in values]
