"""List outputs (ComfyUI's OUTPUT_IS_LIST / INPUT_IS_LIST): nodes downstream run once per element."""

from __future__ import annotations

from typing import Any

from atelier.engine.executor import Executor
from atelier.engine.node import Context, Int, Node, NodeResult, Output, Socket
from atelier.engine.node_lists import ValueList
from atelier.engine.registry import Registry
from tests.engine.toy_nodes import NUMBER, RUNS, TOY_TYPES, Sink, link, wf


class Range(Node):
    """0, 1, ..., count - 1 as a list."""

    category = "toy"
    inputs = (Int("count", 3, min=0, max=100),)
    outputs = (Output(NUMBER),)
    output_is_list = (True,)

    def run(self, ctx: Context, count: int) -> list[float]:
        RUNS[ctx.node_id] += 1
        return [float(i) for i in range(count)]


class Total(Node):
    """Takes whole lists: the sum of every element, times the (first) factor."""

    category = "toy"
    inputs = (Socket("x", NUMBER), Int("factor", 1, min=1, max=10))
    outputs = (Output(NUMBER),)
    input_is_list = True

    def run(self, ctx: Context, x: list[float], factor: list[int]) -> float:
        RUNS[ctx.node_id] += 1
        return float(sum(x)) * factor[0]


class Wrong(Node):
    category = "toy"
    inputs = ()
    outputs = (Output(NUMBER),)
    output_is_list = (True,)

    def run(self, ctx: Context) -> Any:
        return ["not a number"]


class Show(Node):
    category = "toy"
    output_node = True
    inputs = (Socket("value", NUMBER),)
    outputs = ()

    def run(self, ctx: Context, value: float) -> NodeResult:
        RUNS[ctx.node_id] += 1
        return NodeResult(ui={"value": [value]})


REG = Registry([*TOY_TYPES, Range, Total, Wrong, Show])


def graph(count: int = 3) -> dict[str, Any]:
    return wf(
        {
            "r": {"type": "Range", "inputs": {"count": count}},
            "two": {"type": "Number", "inputs": {"value": 2.0}},
            "s": {"type": "Scale", "inputs": {"x": link("r"), "factor": 10.0, "mode": "multiply"}},
            "sum": {"type": "Add", "inputs": {"a": link("s"), "b": link("two")}},
            "total": {"type": "Total", "inputs": {"x": link("sum"), "factor": 2}},
            "show_each": {"type": "Show", "inputs": {"value": link("sum")}},
            "show_total": {"type": "Show", "inputs": {"value": link("total")}},
        }
    )


def setup_function() -> None:
    RUNS.clear()
    Sink.received.clear()


def test_nodes_downstream_of_a_list_run_once_per_element_and_list_nodes_take_it_whole() -> None:
    res = Executor(REG).run(graph())
    assert res.ok, res.failure
    assert RUNS["r"] == 1 and RUNS["s"] == 3 and RUNS["sum"] == 3 and RUNS["total"] == 1
    # each element: i * 10 + 2; the output node's UI is joined over the runs
    assert res.outputs["show_each"] == {"value": [2.0, 12.0, 22.0]}
    assert res.outputs["show_total"] == {"value": [2 * (2.0 + 12.0 + 22.0)]}


def test_list_outputs_are_cached_as_lists() -> None:
    ex = Executor(REG)
    ex.run(graph())
    RUNS.clear()
    res = ex.run(graph())
    assert res.executed == [] and res.outputs["show_each"] == {"value": [2.0, 12.0, 22.0]}
    res = ex.run(graph(4))
    assert res.outputs["show_each"] == {"value": [2.0, 12.0, 22.0, 32.0]} and RUNS["sum"] == 4


def test_an_empty_list_runs_nothing_downstream() -> None:
    res = Executor(REG).run(graph(0))
    assert res.ok and RUNS["s"] == 0 and res.outputs.get("show_each") is None
    assert res.outputs["show_total"] == {"value": [0.0]}  # a list node still runs, on an empty list


def test_list_elements_are_checked_against_the_socket_carrier() -> None:
    w = wf({"w": {"type": "Wrong"}, "o": {"type": "Show", "inputs": {"value": link("w")}}})
    res = Executor(REG).run(w)
    assert res.status == "failed" and "carries" in res.failure.message and res.failure.node == "w"


def test_the_catalogue_says_which_outputs_are_lists() -> None:
    assert REG.describe("Range")["output_is_list"] == [True]
    assert REG.describe("Total")["input_is_list"] is True
    assert isinstance(ValueList([1]), list)
