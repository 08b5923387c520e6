"""The incremental executor: what runs, what is cached, failures, interrupts, events."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from atelier.engine import events as E
from atelier.engine.cache import OutputCache
from atelier.engine.executor import Executor
from tests.engine.toy_nodes import RUNS, Sink, Slow, link, toy_registry, wf


@pytest.fixture(autouse=True)
def _reset() -> None:
    RUNS.clear()
    Sink.received.clear()


def chain(value: float = 2.0, factor: float = 3.0) -> dict:
    return wf(
        {
            "a": {"type": "Number", "inputs": {"value": value}},
            "b": {"type": "Number", "inputs": {"value": 10}},
            "s": {"type": "Scale", "inputs": {"x": link("a"), "factor": factor, "mode": "multiply"}},
            "sum": {"type": "Add", "inputs": {"a": link("s"), "b": link("b")}},
            "out": {"type": "Sink", "inputs": {"value": link("sum", "sum")}},
        }
    )


def test_first_run_computes_in_dependency_order() -> None:
    ex = Executor(toy_registry())
    events: list[E.Event] = []
    res = ex.run(chain(), on_event=events.append)
    assert res.ok
    assert Sink.received == [("out", 16.0)]
    order = res.executed
    assert order.index("a") < order.index("s") < order.index("sum") < order.index("out")
    assert order.index("b") < order.index("sum")
    assert res.outputs == {"out": {"value": [16.0]}}
    kinds = [e.type for e in events]
    assert kinds[0] == "job_started" and kinds[-1] == "job_finished"
    assert kinds.count("node_started") == kinds.count("node_finished") == 5
    for e in events:
        assert e.job == res.job
        if e.type.startswith("node_"):
            assert e.node in {"a", "b", "s", "sum", "out"}


def test_identical_rerun_is_all_cached() -> None:
    ex = Executor(toy_registry())
    ex.run(chain())
    RUNS.clear()
    events: list[E.Event] = []
    res = ex.run(chain(), on_event=events.append)
    assert res.ok and res.executed == []
    assert sorted(res.cached) == ["a", "b", "out", "s", "sum"]
    assert {e.node for e in events if e.type == "node_cached"} == {"a", "b", "s", "sum", "out"}
    assert not [e for e in events if e.type == "node_started"]
    assert not RUNS
    assert res.outputs == {"out": {"value": [16.0]}}  # UI results come back from the cache


def test_edit_reruns_exactly_the_node_and_its_descendants() -> None:
    ex = Executor(toy_registry())
    ex.run(chain(factor=3.0))
    RUNS.clear()
    res = ex.run(chain(factor=4.0))
    assert sorted(res.executed) == ["out", "s", "sum"]
    assert sorted(res.cached) == ["a", "b"]
    assert Sink.received[-1] == ("out", 18.0)
    assert dict(RUNS) == {"s": 1, "sum": 1, "out": 1}


def test_signature_ignores_node_ids_so_two_workflows_share_entries() -> None:
    ex = Executor(toy_registry())
    ex.run(chain())
    other = wf(
        {
            "x1": {"type": "Number", "inputs": {"value": 2.0}},
            "x2": {"type": "Scale", "inputs": {"x": link("x1", "NUMBER"), "factor": 3.0, "mode": "multiply"}},
            "x3": {"type": "Add", "inputs": {"a": link("x2"), "b": link("x2")}},
            "x4": {"type": "Sink", "inputs": {"value": link("x3"), "label": "other"}},
        }
    )
    RUNS.clear()
    res = ex.run(other)
    assert sorted(res.executed) == ["x3", "x4"]
    assert sorted(res.cached) == ["x1", "x2"]
    assert Sink.received[-1] == ("other", 12.0)


def test_defaults_and_explicit_defaults_share_a_signature() -> None:
    ex = Executor(toy_registry())
    w1 = wf(
        {
            "n": {"type": "Number", "inputs": {"value": 1}},
            "o": {"type": "Sink", "inputs": {"value": link("n")}},
        }
    )
    w2 = wf(
        {
            "n": {"type": "Number", "inputs": {"value": 1.0}},
            "o": {"type": "Sink", "inputs": {"value": link("n"), "label": "out"}},
        }
    )
    ex.run(w1)
    assert ex.run(w2).executed == []


def test_branch_no_output_needs_never_runs() -> None:
    w = chain()
    w["nodes"]["dead"] = {"type": "Scale", "inputs": {"x": link("a"), "factor": 2.0, "mode": "divide"}}
    w["nodes"]["dead2"] = {"type": "Fail", "inputs": {"x": link("dead")}}
    res = Executor(toy_registry()).run(w)
    assert res.ok
    assert "dead" not in RUNS and "dead2" not in RUNS


def test_requested_outputs_limit_the_run() -> None:
    w = chain()
    w["nodes"]["out2"] = {"type": "Sink", "inputs": {"value": link("b"), "label": "b only"}}
    res = Executor(toy_registry()).run(w, outputs=["out2"])
    assert res.ok and sorted(res.executed) == ["b", "out2"]
    assert Sink.received == [("b only", 10.0)]


def test_cached_downstream_means_evicted_upstream_need_not_run() -> None:
    ex = Executor(toy_registry())
    w = chain()
    ex.run(w)
    plan = ex.plan(ex_check(ex, w))
    ex.cache.discard([plan.signatures["a"], plan.signatures["s"]])
    RUNS.clear()
    res = ex.run(w)
    assert res.executed == [] and not RUNS


def ex_check(ex: Executor, w: dict):
    from atelier.engine.validate import check

    return check(w, ex.registry).graph


def test_eviction_under_a_small_budget_stays_correct() -> None:
    cache = OutputCache(max_bytes=5000)
    ex = Executor(toy_registry(), cache)

    def blobs(fill: int) -> dict:
        return wf(
            {
                "big": {"type": "Blob", "inputs": {"size": 3000, "fill": fill}},
                "len": {"type": "BlobLen", "inputs": {"blob": link("big")}},
                "o": {"type": "Sink", "inputs": {"value": link("len")}},
            }
        )

    for fill in (1, 2, 3, 1, 2):
        res = ex.run(blobs(fill))
        assert res.ok
        assert Sink.received[-1][1] == 3000.0 + fill
    stats = cache.stats()
    assert stats.bytes <= 5000
    assert stats.evictions > 0
    # the most recent blob is still there: its rerun is fully cached
    RUNS.clear()
    assert ex.run(blobs(2)).executed == []
    # an output larger than the whole budget is used for the job but not kept
    huge = wf(
        {
            "big": {"type": "Blob", "inputs": {"size": 9000, "fill": 7}},
            "len": {"type": "BlobLen", "inputs": {"blob": link("big")}},
            "o": {"type": "Sink", "inputs": {"value": link("len")}},
        }
    )
    assert ex.run(huge).ok and Sink.received[-1][1] == 9007.0
    assert cache.stats().rejected >= 1


def test_cache_reports_hits_misses_and_bytes() -> None:
    cache = OutputCache()
    ex = Executor(toy_registry(), cache)
    w = wf(
        {
            "big": {"type": "Blob", "inputs": {"size": 1234, "fill": 0}},
            "len": {"type": "BlobLen", "inputs": {"blob": link("big")}},
            "o": {"type": "Sink", "inputs": {"value": link("len")}},
        }
    )
    ex.run(w)
    ex.run(w)
    s = cache.stats()
    assert s.entries == 3 and s.bytes >= 1234 and s.hits >= 1


def test_failure_reports_node_and_keeps_earlier_outputs_and_engine_healthy() -> None:
    ex = Executor(toy_registry())
    w = chain()
    w["nodes"]["f"] = {"type": "Fail", "inputs": {"x": link("s"), "message": "kaput"}}
    w["nodes"]["out"]["inputs"]["value"] = link("f")
    events: list[E.Event] = []
    res = ex.run(w, on_event=events.append)
    assert res.status == "failed"
    assert res.failure is not None
    assert (res.failure.node, res.failure.node_type, res.failure.message) == ("f", "Fail", "kaput")
    assert "RuntimeError: kaput" in res.failure.traceback
    failed = [e for e in events if e.type == "node_failed"]
    assert len(failed) == 1 and failed[0].node == "f"
    assert events[-1].type == "job_failed" and events[-1].node == "f" and "kaput" in events[-1].message
    # outputs computed before the failure stay cached; the next job runs normally
    RUNS.clear()
    res2 = ex.run(chain())
    assert res2.ok
    assert "a" not in RUNS and "s" not in RUNS
    assert ex.current_job is None


def test_wrong_number_of_outputs_fails_the_node() -> None:
    from atelier.engine.node import Context, Node, Output

    class Bad(Node):
        outputs = (Output("NUMBER"), Output("NUMBER", "other"))

        def run(self, ctx: Context) -> float:
            return 1.0

    reg = toy_registry()
    reg.add(Bad)
    w = wf({"b": {"type": "Bad"}, "o": {"type": "Sink", "inputs": {"value": link("b", "other")}}})
    res = Executor(reg).run(w)
    assert res.status == "failed" and res.failure.node == "b"
    assert "declares 2 outputs" in res.failure.message


def test_invalid_workflow_is_refused_before_anything_runs() -> None:
    events: list[E.Event] = []
    w = chain()
    w["nodes"]["s"]["inputs"]["factor"] = 1000
    res = Executor(toy_registry()).run(w, on_event=events.append)
    assert res.status == "invalid" and not RUNS
    assert [e.code for e in res.errors] == ["out_of_range"]
    assert events[-1].type == "job_failed" and events[-1].errors[0]["node"] == "s"


def slow_workflow(steps: int = 1000) -> dict:
    return wf(
        {
            "n": {"type": "Number", "inputs": {"value": 1}},
            "slow": {"type": "Slow", "inputs": {"x": link("n"), "steps": steps}},
            "after": {"type": "Scale", "inputs": {"x": link("slow"), "factor": 2.0, "mode": "multiply"}},
            "o": {"type": "Sink", "inputs": {"value": link("after")}},
        }
    )


def test_interrupt_inside_a_long_node() -> None:
    ex = Executor(toy_registry())
    Slow.started.clear()
    Slow.gate.clear()
    events: list[E.Event] = []
    box = {}
    t = threading.Thread(
        target=lambda: box.setdefault("res", ex.run(slow_workflow(), on_event=events.append))
    )
    t.start()
    assert Slow.started.wait(5)
    assert ex.interrupt()
    Slow.gate.set()
    t.join(5)
    res = box["res"]
    assert res.status == "interrupted"
    assert "after" not in RUNS and "o" not in RUNS
    assert events[-1].type == "job_interrupted" and events[-1].node == "slow"
    progress = [e for e in events if e.type == "progress"]
    assert len(progress) <= 2
    # the engine runs the next job normally
    Slow.gate.set()
    res2 = ex.run(slow_workflow(steps=3))
    assert res2.ok and Sink.received[-1][1] == 8.0


def test_interrupt_between_nodes() -> None:
    ex = Executor(toy_registry())
    seen: list[str] = []

    def on_event(e: E.Event) -> None:
        seen.append(e.type)
        if e.type == "node_finished" and e.node == "s":
            ex.interrupt()

    res = ex.run(chain(), on_event=on_event)
    assert res.status == "interrupted"
    assert "sum" not in RUNS and "out" not in RUNS
    assert seen[-1] == "job_interrupted"


def test_interrupt_for_another_job_is_ignored() -> None:
    ex = Executor(toy_registry())
    assert ex.interrupt() is False
    assert ex.interrupt("nope") is False


def test_progress_events_carry_value_and_max() -> None:
    Slow.gate.set()
    events: list[E.Event] = []
    Executor(toy_registry()).run(slow_workflow(steps=4), on_event=events.append)
    progress = [(e.node, e.value, e.max) for e in events if isinstance(e, E.Progress)]
    assert progress == [("slow", 1, 4), ("slow", 2, 4), ("slow", 3, 4), ("slow", 4, 4)]


def test_file_content_is_part_of_the_signature(tmp_path: Path) -> None:
    f = tmp_path / "note.txt"
    f.write_text("hello")
    w = wf(
        {
            "r": {"type": "ReadFile", "inputs": {"path": str(f)}},
            "o": {"type": "Sink", "inputs": {"value": link("r")}},
        }
    )
    ex = Executor(toy_registry())
    ex.run(w)
    assert ex.run(w).executed == []
    f.write_text("changed")
    res = ex.run(w)
    assert sorted(res.executed) == ["o", "r"]
    assert Sink.received[-1][1] == "changed"


def test_fingerprint_failure_fails_the_job_on_that_node(tmp_path: Path) -> None:
    w = wf(
        {
            "r": {"type": "ReadFile", "inputs": {"path": str(tmp_path / "missing.txt")}},
            "o": {"type": "Sink", "inputs": {"value": link("r")}},
        }
    )
    res = Executor(toy_registry()).run(w)
    assert res.status == "failed" and res.failure.node == "r" and "missing.txt" in res.failure.message


def test_broken_event_consumer_does_not_break_the_job() -> None:
    def bad(e: E.Event) -> None:
        raise ValueError("consumer bug")

    assert Executor(toy_registry()).run(chain(), on_event=bad).ok


def test_events_serialise_to_json_lines() -> None:
    import json

    events: list[E.Event] = []
    Executor(toy_registry()).run(chain(), on_event=events.append)
    for e in events:
        data = json.loads(e.to_json())
        assert data["type"] == e.type and data["job"] == e.job
        assert E.parse_event(data) == e
    finished = [e for e in events if e.type == "node_finished"]
    assert all(e.elapsed_ms >= 0 for e in finished)


def test_device_budget_spills_least_recently_used_outputs_to_host() -> None:
    import torch

    moved: list[tuple[int, ...]] = []

    def to_host(t: torch.Tensor) -> torch.Tensor:  # meta tensors stand in for GPU ones on this CPU machine
        moved.append(tuple(t.shape))
        return torch.zeros(t.shape, dtype=t.dtype)

    cache = OutputCache(max_device_bytes=3000, spill=to_host)
    a = torch.empty(250, device="meta")  # 1000 bytes each
    b = torch.empty(250, device="meta")
    c = torch.empty(250, device="meta")
    cache.put("a", ({"samples": a},))
    cache.put("b", ([b, 1],))
    cache.get("a")  # a is now more recently used than b
    cache.put("c", (c,))
    assert cache.stats().device_bytes == 3000 and moved == []
    cache.put("d", (torch.empty(500, device="meta"),))  # 2000 more: two entries must go to the host
    s = cache.stats()
    assert s.device_bytes <= 3000 and s.spills == 2 and s.entries == 4 and s.evictions == 0
    assert moved == [(250,), (250,)]
    assert cache.get("b").outputs[0][0].device.type == "cpu"  # b went first (least recently used)
    assert cache.get("b").outputs[0][1] == 1
    assert cache.get("d").outputs[0].device.type == "meta"  # the newest entry stays


def test_typed_values_are_measured_and_spilled_field_by_field() -> None:
    """Conditioning entries and other frozen dataclass values: their tensors count against the budgets and
    move to the host like any other (a new value is made; the cached original is never mutated)."""
    from dataclasses import dataclass

    import torch

    @dataclass(frozen=True)
    class Entry:
        embedding: torch.Tensor
        strength: float = 1.0
        pooled: torch.Tensor | None = None

    def to_host(t: torch.Tensor) -> torch.Tensor:
        return torch.zeros(t.shape, dtype=t.dtype)

    cache = OutputCache(max_device_bytes=1500, spill=to_host)
    first = Entry(torch.empty(250, device="meta"), 0.5, torch.empty(50, device="meta"))
    cache.put("a", ([first],))
    assert cache.stats().device_bytes == 1200  # both tensors of the entry counted
    cache.put("b", ([Entry(torch.empty(250, device="meta"))],))
    spilled = cache.get("a").outputs[0][0]
    assert spilled.embedding.device.type == "cpu" and spilled.pooled.device.type == "cpu"
    assert spilled.strength == 0.5 and first.embedding.device.type == "meta"


# -- cancel tokens, volatile nodes, carriers --------------------------------------------------------


def test_a_token_cancelled_before_the_run_stops_the_job_before_its_first_node() -> None:
    from atelier.engine.node import CancelToken

    RUNS.clear()
    token = CancelToken()
    token.cancel()
    ex = Executor(toy_registry())
    graph = {
        "n": {"type": "Number", "inputs": {"value": 1}},
        "o": {"type": "Sink", "inputs": {"value": link("n")}},
    }
    res = ex.run(wf(graph), cancel=token)
    assert res.status == "interrupted" and res.executed == [] and not RUNS
    assert ex.run(wf(graph)).ok  # the next job has its own token


def test_cancelling_one_jobs_token_leaves_the_next_job_alone() -> None:
    from atelier.engine.node import CancelToken

    ex = Executor(toy_registry())
    first, second = CancelToken(), CancelToken()
    Slow.gate.clear()

    def cancel_when_running(ev: E.Event) -> None:
        if isinstance(ev, E.Progress):
            first.cancel()
            Slow.gate.set()

    slow = wf(
        {
            "n": {"type": "Number", "inputs": {"value": 0}},
            "s": {"type": "Slow", "inputs": {"x": link("n"), "steps": 50}},
            "o": {"type": "Sink", "inputs": {"value": link("s")}},
        }
    )
    assert ex.run(slow, cancel=first, on_event=cancel_when_running).status == "interrupted"
    assert ex.run(slow, cancel=second).ok


def _volatile_registry():
    from atelier.engine.node import Context, Float, Node, Output
    from atelier.engine.registry import Registry
    from tests.engine.toy_nodes import NUMBER, TOY_TYPES

    class Clock(Node):
        """Not cacheable: a new value on every job."""

        cacheable = False
        inputs = (Float("offset", 0.0),)
        outputs = (Output(NUMBER),)
        ticks = 0

        def run(self, ctx: Context, offset: float) -> float:
            Clock.ticks += 1
            RUNS[ctx.node_id] += 1
            return offset + Clock.ticks

    return Registry([*TOY_TYPES, Clock])


def test_nodes_that_opt_out_of_caching_run_every_job_and_so_does_what_depends_on_them() -> None:
    RUNS.clear()
    ex = Executor(_volatile_registry())
    graph = wf(
        {
            "n": {"type": "Number", "inputs": {"value": 2}},
            "c": {"type": "Clock", "inputs": {"offset": 10}},
            "a": {"type": "Add", "inputs": {"a": link("n"), "b": link("c")}},
            "o": {"type": "Sink", "inputs": {"value": link("a")}},
        }
    )
    first = ex.run(graph)
    second = ex.run(graph)
    assert first.ok and second.ok
    assert RUNS == {"n": 1, "c": 2, "a": 2, "o": 2}  # the constant is cached, the rest runs again
    assert first.outputs["o"] != second.outputs["o"]
    assert "n" in second.cached


def test_an_output_of_the_wrong_carrier_fails_on_that_node_by_name() -> None:
    from atelier.engine.node import Context, Node, Output, String
    from atelier.engine.registry import Registry
    from tests.engine.toy_nodes import NUMBER, TOY_TYPES

    class Liar(Node):
        inputs = (String("text", "x"),)
        outputs = (Output(NUMBER),)

        def run(self, ctx: Context, text: str) -> str:
            return text

    ex = Executor(Registry([*TOY_TYPES, Liar]))
    res = ex.run(wf({"l": {"type": "Liar"}, "o": {"type": "Sink", "inputs": {"value": link("l")}}}))
    assert res.status == "failed" and res.failure is not None and res.failure.node == "l"
    assert (
        "Liar node l returned str for its output 'NUMBER', but NUMBER carries int or float"
        in res.failure.message
    )


def test_observers_see_every_output_that_ran() -> None:
    ex = Executor(toy_registry())
    seen: list[tuple[str, str, tuple]] = []
    ex.observers.append(lambda nid, t, outs: seen.append((nid, t, outs)))
    ex.run(
        wf(
            {
                "n": {"type": "Number", "inputs": {"value": 3}},
                "o": {"type": "Sink", "inputs": {"value": link("n")}},
            }
        )
    )
    assert seen == [("n", "Number", (3.0,)), ("o", "Sink", ())]
