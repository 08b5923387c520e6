"""The generic batching seam with toy nodes: jobs pause at a node that can batch, compatible ones run it as
one ``run_batch``, each keeps its events, result and errors; the server worker takes queued partners."""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import pytest

from atelier.engine import events as E
from atelier.engine.executor import Executor, JobSpec
from atelier.engine.node import Context, Int, Node, Output, Socket
from atelier.engine.registry import Registry
from atelier.engine.server.partners import workflow_shape
from atelier.engine.server.store import Store
from atelier.engine.server.worker import Worker
from tests.engine.toy_nodes import NUMBER, RUNS, TOY_TYPES, Sink, link, wf

BATCHES: list[list[float]] = []


class Triple(Node):
    """x * 3, batched across jobs of the same ``group``; a negative x is an error (alone or batched)."""

    category = "toy"
    inputs = (Socket("x", NUMBER), Int("group", 0, min=0, max=9))
    outputs = (Output(NUMBER),)

    def run(self, ctx: Context, x: float, group: int) -> float:
        RUNS["alone"] += 1
        ctx.progress(1, 1)
        if x < 0:
            raise ValueError(f"x must not be negative, got {x}")
        return x * 3

    def batch_key(self, **inputs: Any) -> Hashable | None:
        return inputs["group"]

    def run_batch(self, ctxs: Sequence[Context], inputs: Sequence[dict[str, Any]]) -> list[Any]:
        xs = [i["x"] for i in inputs]
        BATCHES.append(xs)
        for ctx in ctxs:
            ctx.progress(1, 1)
        if any(x < 0 for x in xs):
            raise ValueError("a negative x in the batch")
        return [x * 3 for x in xs]


def registry() -> Registry:
    return Registry([*TOY_TYPES, Triple])


def job(x: float, group: int = 0) -> dict:
    return wf(
        {
            "a": {"type": "Number", "inputs": {"value": x}},
            "t": {"type": "Triple", "inputs": {"x": link("a"), "group": group}},
            "out": {"type": "Sink", "inputs": {"value": link("t")}},
        }
    )


@pytest.fixture(autouse=True)
def _reset() -> None:
    RUNS.clear()
    BATCHES.clear()
    Sink.received.clear()


def test_compatible_jobs_run_the_node_once_and_keep_their_own_events() -> None:
    ex = Executor(registry())
    events: dict[str, list[E.Event]] = {n: [] for n in ("j1", "j2", "j3")}
    specs = [
        JobSpec(job(x), job_id=n, on_event=events[n].append)
        for n, x in zip(events, (1.0, 2.0, 5.0), strict=True)
    ]
    results = ex.run_many(specs)
    assert [r.status for r in results] == ["success"] * 3
    assert BATCHES == [[1.0, 2.0, 5.0]] and RUNS["alone"] == 0
    assert sorted(v for _, v in Sink.received) == [3.0, 6.0, 15.0]
    for n, evs in events.items():
        assert all(e.job == n for e in evs)
        assert [type(e).__name__ for e in evs if e.node == "t"] == ["NodeStarted", "Progress", "NodeFinished"]
        assert isinstance(evs[-1], E.JobFinished)


def test_a_lone_job_and_different_keys_run_alone() -> None:
    ex = Executor(registry())
    assert ex.run(job(1.0)).ok
    results = ex.run_many([JobSpec(job(1.0, group=1)), JobSpec(job(2.0, group=2))])
    assert all(r.ok for r in results)
    assert BATCHES == [] and RUNS["alone"] == 3


def test_a_failing_batch_falls_back_and_only_the_bad_job_fails() -> None:
    ex = Executor(registry())
    results = ex.run_many([JobSpec(job(1.0)), JobSpec(job(-1.0)), JobSpec(job(2.0))])
    assert [r.status for r in results] == ["success", "failed", "success"]
    assert results[1].failure.node == "t" and "negative" in results[1].failure.message
    assert BATCHES == [[1.0, -1.0, 2.0]] and RUNS["alone"] == 3
    assert sorted(v for _, v in Sink.received) == [3.0, 6.0]


def test_invalid_jobs_among_valid_ones_are_answered_in_order() -> None:
    ex = Executor(registry())
    told: list[tuple[int, str]] = []
    results = ex.run_many(
        [JobSpec(job(1.0)), JobSpec({"nodes": {"x": {"type": "Nope"}}}), JobSpec(job(2.0))],
        on_result=lambda n, r: told.append((n, r.status)),
    )
    assert [r.status for r in results] == ["success", "invalid", "success"]
    assert sorted(told) == [(0, "success"), (1, "invalid"), (2, "success")]
    assert BATCHES == [[1.0, 2.0]]


def test_max_batch_splits_a_large_group() -> None:
    ex = Executor(registry())
    ex.max_batch = 2
    assert all(r.ok for r in ex.run_many([JobSpec(job(float(x))) for x in range(5)]))
    assert [len(b) for b in BATCHES] == [2, 2] and RUNS["alone"] == 1


def test_workflow_shape_ignores_values_not_structure() -> None:
    assert workflow_shape(job(1.0)) == workflow_shape(job(7.0, group=3))
    assert workflow_shape(job(1.0)) != workflow_shape(wf({"a": {"type": "Number", "inputs": {"value": 1}}}))


def make_worker(tmp_path: Path, window: float, published: list[E.Event]) -> tuple[Store, Worker]:
    store = Store(tmp_path / "jobs.db")
    worker = Worker(store, Executor(registry()), published.append, lambda: None, batch_window_s=window)
    return store, worker


def test_worker_runs_queued_jobs_of_one_shape_as_a_batch(tmp_path: Path) -> None:
    published: list[E.Event] = []
    store, worker = make_worker(tmp_path, 0.0, published)
    for n, x in enumerate((1.0, 2.0, 4.0)):
        store.add_job(f"j{n}", job(x), {})
    store.add_job("other", wf({"a": {"type": "Number", "inputs": {"value": 1}}}), {})  # another shape
    first = store.next_queued()
    assert first is not None
    worker._run_jobs([first, *worker.partners.take(first)])
    assert BATCHES == [[1.0, 2.0, 4.0]]
    for n in range(3):
        assert store.get_job(f"j{n}").status == "success"
    assert store.get_job("other").status == "queued"
    finished = [e.job for e in published if isinstance(e, E.JobFinished)]
    assert sorted(finished) == ["j0", "j1", "j2"]
    assert worker.current is None
    store.close()


def test_a_batch_size_caps_the_partners_taken_and_one_takes_none_without_waiting(tmp_path: Path) -> None:
    """The Ray scheduler asks for a batch per idle worker: the partners beyond it stay queued."""
    store, worker = make_worker(tmp_path, 5.0, [])
    for n in range(5):
        store.add_job(f"j{n}", job(float(n)), {})
    first = store.next_queued()
    assert [p.id for p in worker.partners.take(first, 3)] == ["j1", "j2"]
    assert store.get_job("j3").status == "queued"
    second = store.next_queued()
    started = time.monotonic()
    assert worker.partners.take(second, 1) == [] and time.monotonic() - started < 1.0
    assert store.get_job("j4").status == "queued"
    store.close()


def test_a_lone_job_waits_no_longer_than_the_window_and_takes_a_partner_that_comes(tmp_path: Path) -> None:
    store, worker = make_worker(tmp_path, 0.3, [])
    store.add_job("lone", job(1.0), {})
    lone = store.next_queued()
    started = time.monotonic()
    assert worker.partners.take(lone) == []
    waited = time.monotonic() - started
    assert 0.25 <= waited < 1.5

    def queue_one() -> None:
        time.sleep(0.05)
        store.add_job("late", job(2.0), {})
        worker.wakeup.set()

    thread = threading.Thread(target=queue_one)
    started = time.monotonic()
    thread.start()
    partners = worker.partners.take(lone)
    thread.join()
    assert [p.id for p in partners] == ["late"] and time.monotonic() - started < 1.5
    store.close()


def test_interrupting_one_batched_job_by_id(tmp_path: Path) -> None:
    published: list[E.Event] = []
    store, worker = make_worker(tmp_path, 0.0, published)
    store.add_job("a", job(1.0), {})
    store.add_job("b", job(2.0), {})
    first = store.next_queued()
    partners = worker.partners.take(first)
    assert [p.id for p in partners] == ["b"]
    assert worker.interrupt("b") == "b"  # taken from the queue, not started: it starts cancelled
    worker._run_jobs([first, *partners])
    assert store.get_job("a").status == "success"
    assert store.get_job("b").status == "interrupted"
    assert worker._early_cancel == set() and worker.interrupt("b") is None
    store.close()


def test_worker_offers_partners_by_batch_signature_only(tmp_path: Path) -> None:
    """A queued job of another group (a literal of the batching node) is not taken; a job without a node
    that can batch takes no partner and does not wait."""
    store, worker = make_worker(tmp_path, 0.5, [])
    store.add_job("a", job(1.0, group=1), {})
    store.add_job("b", job(2.0, group=2), {})
    store.add_job("c", job(3.0, group=1), {})
    first = store.next_queued()
    assert [p.id for p in worker.partners.take(first)] == ["c"]
    assert store.get_job("b").status == "queued"
    plain = wf(
        {
            "a": {"type": "Number", "inputs": {"value": 1}},
            "o": {"type": "Sink", "inputs": {"value": link("a")}},
        }
    )
    store.add_job("plain", plain, {})
    store.add_job("plain2", plain, {})
    assert store.next_queued().id == "b"
    lone = store.next_queued()
    started = time.monotonic()
    assert lone.id == "plain" and worker.partners.take(lone) == []
    assert time.monotonic() - started < 0.4
    assert worker.executor.batch_signature(plain) is None
    assert worker.executor.batch_signature(job(1.0)) == worker.executor.batch_signature(job(5.0))
    store.close()
