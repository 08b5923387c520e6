"""Pipelines: workflows used as nodes, expanded into one graph the executor plans (engine/pipeline.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from atelier.engine import events as E
from atelier.engine.executor import Executor
from atelier.engine.pipeline import interface
from atelier.engine.validate import check
from atelier.engine.workflow import Workflow, parse_workflow
from tests.engine.toy_nodes import RUNS, Sink, link, toy_registry, wf

REG = toy_registry()


@pytest.fixture(autouse=True)
def _reset() -> None:
    RUNS.clear()
    Sink.received.clear()


def scaler() -> dict[str, Any]:
    """x -> (x * factor) + offset: a socket input, two literal inputs, one output."""
    return wf(
        {
            "off": {"type": "Number", "inputs": {"value": 1.0}},
            "scale": {"type": "Scale", "inputs": {"factor": 2.0, "mode": "multiply"}},
            "add": {"type": "Add", "inputs": {"a": link("scale"), "b": link("off")}},
        },
        metadata={"name": "scaler", "version": "1.0.0"},
        parameters={
            "x": {"type": "NUMBER", "targets": ["scale.x"], "description": "what to scale"},
            "factor": {"type": "FLOAT", "targets": ["scale.factor"], "default": 2.0, "min": -10, "max": 10},
            "offset": {"type": "FLOAT", "targets": ["off.value"], "default": 1.0},
        },
        outputs={"result": {"type": "NUMBER", "node": "add", "output": "sum"}},
    )


def twice() -> dict[str, Any]:
    """A pipeline made of two scalers in a row (nesting)."""
    return wf(
        {
            "first": {"type": "pipeline:scaler", "inputs": {"x": link("__never__")}},
            "second": {"type": "pipeline:scaler", "inputs": {"x": link("first", "result")}},
        },
        parameters={
            "x": {"type": "NUMBER", "targets": ["first.x"]},
            "factor": {"type": "FLOAT", "targets": ["first.factor", "second.factor"], "default": 3.0},
        },
        outputs={"result": {"type": "NUMBER", "node": "second", "output": 0}},
    )


def outer(**inputs: Any) -> dict[str, Any]:
    t = twice()
    del t["nodes"]["first"]["inputs"]["x"]  # bound by the parameter instead
    return wf(
        {
            "n": {"type": "Number", "inputs": {"value": 5.0}},
            "p": {"type": "pipeline:scaler", "inputs": {"x": link("n"), **inputs}},
            "q": {"type": "pipeline:twice", "inputs": {"x": link("n")}},
            "out_p": {"type": "Sink", "inputs": {"value": link("p", "result"), "label": "p"}},
            "out_q": {"type": "Sink", "inputs": {"value": link("q", "result"), "label": "q"}},
        },
        definitions={"scaler": scaler(), "twice": t},
    )


def test_nested_pipelines_compute_what_the_flat_graph_would() -> None:
    res = Executor(REG).run(outer(factor=4.0))
    assert res.ok, res.error
    # p: 5*4+1 = 21; q: first 5*3+1 = 16, second 16*3+1 = 49
    assert sorted(Sink.received) == [("p", 21.0), ("q", 49.0)]
    assert "q:second:scale" in res.executed and "p:add" in res.executed


def test_a_node_shared_between_instances_runs_once() -> None:
    """q:first is the same computation as p at the default factor... with factor 3 everywhere, p and
    q:first have equal signatures: computed once, the twin is served from this run's own result."""
    events: list[E.Event] = []
    res = Executor(REG).run(outer(factor=3.0), on_event=events.append)
    assert res.ok
    started = [e.node for e in events if isinstance(e, E.NodeStarted)]
    assert ("p:scale" in started) != ("q:first:scale" in started)  # one of the twins ran, not both
    cached = {e.node for e in events if isinstance(e, E.NodeCached)}
    assert {"q:first:scale", "q:first:add", "q:first:off"} <= cached | set(started)
    assert RUNS["p:scale"] + RUNS["q:first:scale"] == 1
    assert sorted(Sink.received) == [("p", 16.0), ("q", 49.0)]


def test_editing_one_inner_value_reruns_only_its_dependants() -> None:
    ex = Executor(REG)
    ex.run(outer(factor=4.0))
    RUNS.clear()
    res = ex.run(outer(factor=4.0), overrides={"p:off.value": 2.0})
    assert res.ok
    assert sorted(res.executed) == ["out_p", "p:add", "p:off"]
    assert ("p", 22.0) in Sink.received


def test_overrides_reach_pipeline_inputs_and_inner_nodes() -> None:
    res = check(outer(), REG, overrides={"p.factor": 5.0, "q:second:off.value": 7.0})
    assert res.ok, [str(e) for e in res.errors]
    nodes = res.graph.nodes
    assert nodes["p:scale"].literals["factor"] == 5.0
    assert nodes["q:second:off"].literals["value"] == 7.0
    assert nodes["q:first:scale"].links["x"] == ("n", 0)


def test_errors_inside_name_the_path_and_pipeline_inputs_keep_their_limits() -> None:
    res = check(outer(offset=1e10), REG)
    err = next(e for e in res.errors if e.node == "p:off")
    assert err.input == "value" and err.code == "out_of_range"
    assert "node p › off (Number), input 'value'" in str(err)
    res = check(outer(factor=50.0), REG)  # Scale takes 50, the pipeline's input stops at 10
    assert [(e.code, e.node, e.input) for e in res.errors] == [("out_of_range", "p", "factor")]


def test_cycles_between_definitions_are_refused_with_the_chain() -> None:
    a = wf({"b": {"type": "pipeline:b"}}, outputs={})
    b = wf({"a": {"type": "pipeline:a"}}, outputs={})
    top = wf({"x": {"type": "pipeline:a"}}, definitions={"a": a, "b": b})
    res = check(top, REG)
    cycle = [e for e in res.errors if e.code == "pipeline_cycle"]
    assert len(cycle) == 1 and "a › b › a" in cycle[0].message and cycle[0].node == "x:b:a"


def test_unknown_pipelines_inputs_and_unconnected_sockets_are_reported() -> None:
    top = wf(
        {
            "u": {"type": "pipeline:nope"},
            "p": {"type": "pipeline:scaler", "inputs": {"bogus": 1}},
        },
        definitions={"scaler": scaler()},
    )
    got = {(e.code, e.node, e.input) for e in check(top, REG).errors}
    assert ("unknown_pipeline", "u", None) in got
    assert ("unknown_input", "p", "bogus") in got
    assert ("missing_input", "p", "x") in got


def test_a_library_resolver_supplies_definitions_and_sees_the_pinned_version() -> None:
    asked: list[tuple[str, str | None]] = []

    def library(name: str, version: str | None, node_inputs: dict[str, Any]) -> Workflow:
        asked.append((name, version))
        if name != "scaler":
            raise LookupError(f"no pipeline {name!r} in the library")
        return parse_workflow(scaler())

    top = wf(
        {
            "n": {"type": "Number", "inputs": {"value": 2.0}},
            "p": {"type": "pipeline:scaler", "version": "1.0.0", "inputs": {"x": link("n")}},
            "o": {"type": "Sink", "inputs": {"value": link("p", "result")}},
        }
    )
    res = check(top, REG, pipelines=library)
    assert res.ok and asked == [("scaler", "1.0.0")]


def test_node_ids_that_collide_with_paths_inside_pipelines_are_refused() -> None:
    w = copy.deepcopy(outer())
    w["nodes"]["p:scale"] = {"type": "Number", "inputs": {"value": 1.0}}
    assert any(e.code == "invalid_node_id" and e.node == "p:scale" for e in check(w, REG).errors)


def test_flat_ids_with_the_separator_still_take_overrides() -> None:
    """ComfyUI names the nodes of its expanded subgraphs "5:0": such a flat graph is no pipeline, and
    "5:0.value" overrides that node."""
    w = wf(
        {
            "5:0": {"type": "Number", "inputs": {"value": 1.0}},
            "o": {"type": "Sink", "inputs": {"value": link("5:0")}},
        }
    )
    res = check(w, REG, overrides={"5:0.value": 4.0})
    assert res.ok and res.graph.nodes["5:0"].literals["value"] == 4.0


def test_socket_parameters_cannot_be_given_values() -> None:
    res = check(scaler(), REG, overrides={"x": 3})
    assert any(e.code == "invalid_parameter" and e.input == "x" for e in res.errors)


def test_interface_describes_inputs_and_outputs() -> None:
    desc = interface(parse_workflow(scaler()))
    assert desc["name"] == "scaler" and desc["version"] == "1.0.0"
    assert desc["inputs"]["x"] == {
        "type": "NUMBER",
        "description": "what to scale",
        "socket": True,
        "required": True,
    }
    assert desc["inputs"]["factor"]["default"] == 2.0 and desc["inputs"]["factor"]["socket"] is False
    assert desc["outputs"] == {"result": {"type": "NUMBER", "description": ""}}


def test_save_load_round_trip_keeps_definitions_and_outputs() -> None:
    w = parse_workflow(outer())
    again = parse_workflow(w.to_dict())
    assert again.to_dict() == w.to_dict()
    assert set(again.definitions) == {"scaler", "twice"}


def test_a_connected_socket_input_replaces_the_inner_wiring_and_what_fed_only_it() -> None:
    """A definition that runs alone (a Number feeds the scale) takes a link instead when used as a node; the
    inner source that no longer feeds anything is dropped, so it neither runs nor needs valid inputs."""
    alone = scaler()
    alone["nodes"]["src"] = {"type": "Number", "inputs": {"value": 4.0}}
    alone["nodes"]["scale"]["inputs"]["x"] = link("src")
    alone["nodes"]["show"] = {"type": "Sink", "inputs": {"value": link("add", "sum")}}
    assert Executor(REG).run(copy.deepcopy(alone)).ok and Sink.received == [("out", 9.0)]
    assert interface(parse_workflow(alone))["inputs"]["x"]["required"] is False

    Sink.received.clear()
    top = wf(
        {
            "n": {"type": "Number", "inputs": {"value": 10.0}},
            "p": {"type": "pipeline:alone", "inputs": {"x": link("n")}},
            "q": {"type": "pipeline:alone"},  # not connected: its own source feeds it
        },
        definitions={"alone": alone},
    )
    res = check(top, REG)
    assert res.ok and "p:src" not in res.graph.nodes and "q:src" in res.graph.nodes
    Executor(REG).run(top)
    assert sorted(Sink.received) == [("out", 9.0), ("out", 21.0)]


def test_the_flat_graph_shares_no_value_with_a_library_definition() -> None:
    """A library keeps its parsed definitions between checks: the flat graph's list and dict values (inner
    literals, inputs of nested pipeline nodes, parameter defaults) are copies, so nothing done to one
    expansion reaches the definition or the next expansion."""
    from atelier.engine.pipeline import expand

    inner = parse_workflow(
        wf(
            {
                "t": {"type": "Text", "inputs": {"text": ["a", "b"], "repeat": 1}},
                "u": {"type": "Text", "inputs": {"text": "x", "repeat": 1}},
                "o": {"type": "Sink", "inputs": {"value": link("t")}},
            },
            parameters={"words": {"type": "STRING", "targets": ["u.text"], "default": ["c"]}},
        )
    )
    top = parse_workflow(wf({"p": {"type": "pipeline:lib", "inputs": {}}}))

    def library(name: str, version: str | None, node_inputs: dict[str, Any]) -> Workflow:
        return inner

    first = expand(top, library).workflow
    first.nodes["p:t"].inputs["text"].append("mutated")
    first.nodes["p:u"].inputs["text"].append("mutated")
    assert inner.nodes["t"].inputs["text"] == ["a", "b"] and inner.parameters["words"].default == ["c"]
    second = expand(top, library).workflow
    assert second.nodes["p:t"].inputs["text"] == ["a", "b"] and second.nodes["p:u"].inputs["text"] == ["c"]
