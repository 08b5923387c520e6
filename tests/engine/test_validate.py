"""Validation: every problem in one pass, each naming node, type, input and code."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atelier.engine.validate import check
from tests.engine.toy_nodes import link, toy_registry, wf

REG = toy_registry()


def codes(data: Any, **kw: Any) -> list[tuple[str, str | None, str | None]]:
    res = check(data, REG, **kw)
    return sorted(
        ((e.code, e.node, e.input) for e in res.errors if e.severity == "error"),
        key=lambda t: tuple(x or "" for x in t),
    )


def good() -> dict:
    return wf(
        {
            "n": {"type": "Number", "inputs": {"value": 1.5}},
            "s": {"type": "Scale", "inputs": {"x": link("n"), "factor": 2, "mode": "divide"}},
            "o": {"type": "Sink", "inputs": {"value": link("s")}},
        }
    )


def test_valid_workflow_coerces_and_fills_defaults() -> None:
    res = check(good(), REG)
    assert res.ok and res.errors == []
    s = res.graph.nodes["s"]
    assert s.literals == {"factor": 2.0, "mode": "divide", "negate": False}
    assert isinstance(s.literals["factor"], float)
    assert s.links == {"x": ("n", 0)}
    assert res.graph.outputs == ["o"]


def test_every_problem_is_reported_in_one_pass() -> None:
    w = wf(
        {
            "n": {"type": "Number", "inputs": {"value": "three"}},
            "u": {"type": "NoSuchNode", "inputs": {}},
            "s": {"type": "Scale", "inputs": {"x": link("ghost"), "factor": 500, "mode": "cube"}},
            "t": {"type": "Text", "inputs": {"text": 5, "repeat": 0.5}},
            "a": {"type": "Add", "inputs": {"a": link("n", "nope"), "b": link("t")}},
            "o": {"type": "Sink", "inputs": {}},
        }
    )
    res = check(w, REG)
    assert not res.ok
    got = sorted(((e.code, e.node, e.input) for e in res.errors), key=lambda t: tuple(x or "" for x in t))
    assert got == [
        ("invalid_type", "n", "value"),
        ("invalid_type", "t", "repeat"),
        ("invalid_type", "t", "text"),
        ("link_missing_node", "s", "x"),
        ("link_missing_output", "a", "a"),
        ("missing_input", "o", "value"),
        ("not_in_choices", "s", "mode"),
        ("out_of_range", "s", "factor"),
        ("type_mismatch", "a", "b"),
        ("unknown_node_type", "u", None),
    ]
    by = {(e.code, e.node): e for e in res.errors}
    assert by[("unknown_node_type", "u")].node_type == "NoSuchNode"
    assert "NUMBER" in by[("type_mismatch", "a")].message and "TEXT" in by[("type_mismatch", "a")].message
    assert "0:NUMBER" in by[("link_missing_output", "a")].message
    assert (
        "'cube'" in by[("not_in_choices", "s")].message and "multiply" in by[("not_in_choices", "s")].message
    )
    assert "100" in by[("out_of_range", "s")].message
    assert all(e.node_type for e in res.errors)


def test_cycle_names_its_nodes() -> None:
    w = wf(
        {
            "a": {"type": "Add", "inputs": {"a": link("b"), "b": link("c")}},
            "b": {"type": "Scale", "inputs": {"x": link("a"), "factor": 1, "mode": "multiply"}},
            "c": {"type": "Number", "inputs": {"value": 1}},
            "o": {"type": "Sink", "inputs": {"value": link("a")}},
        }
    )
    res = check(w, REG)
    cycles = [e for e in res.errors if e.code == "cycle"]
    assert len(cycles) == 1 and "a, b" in cycles[0].message


def test_self_loop_is_a_cycle() -> None:
    w = wf(
        {
            "a": {"type": "Add", "inputs": {"a": link("a"), "b": link("a")}},
            "o": {"type": "Sink", "inputs": {"value": link("a")}},
        }
    )
    assert ("cycle", "a", None) in codes(w)


def test_socket_input_refuses_literals_and_widget_accepts_matching_link() -> None:
    w = good()
    w["nodes"]["s"]["inputs"]["x"] = 3.0
    assert codes(w) == [("invalid_type", "s", "x")]
    w = good()
    w["nodes"]["k"] = {"type": "Text", "inputs": {"text": "x"}}
    w["nodes"]["s"]["inputs"]["mode"] = link("k")  # TEXT into a COMBO widget is refused
    assert codes(w) == [("type_mismatch", "s", "mode")]


def test_booleans_are_not_numbers_and_integral_floats_are_ints() -> None:
    w = wf(
        {
            "t": {"type": "Text", "inputs": {"text": "a", "repeat": True}},
            "o": {"type": "Sink", "inputs": {"value": link("t")}},
        }
    )
    assert codes(w) == [("invalid_type", "t", "repeat")]
    w["nodes"]["t"]["inputs"]["repeat"] = 3.0
    res = check(w, REG)
    assert res.ok and res.graph.nodes["t"].literals["repeat"] == 3
    w["nodes"]["t"]["inputs"]["repeat"] = float("nan")
    assert codes(w) == [("invalid_type", "t", "repeat")]


def test_unknown_input_is_a_warning_not_an_error() -> None:
    w = good()
    w["nodes"]["n"]["inputs"]["colour"] = "red"
    res = check(w, REG)
    assert res.ok
    assert [(e.code, e.severity, e.input) for e in res.errors] == [("unknown_input", "warning", "colour")]


def test_node_version_major_mismatch_is_a_warning() -> None:
    w = good()
    w["nodes"]["s"]["version"] = "2.0.0"
    res = check(w, REG)
    assert res.ok and [e.code for e in res.warnings] == ["node_version"]
    w["nodes"]["s"]["version"] = "1.9.0"
    assert check(w, REG).errors == []


def test_parameters_and_overrides() -> None:
    w = good()
    w["parameters"] = {
        "factor": {"type": "FLOAT", "default": 4, "targets": ["s.factor"], "min": 0, "max": 10},
        "start": {"type": "FLOAT", "targets": ["n.value"]},
    }
    res = check(w, REG)
    assert res.ok and res.graph.nodes["s"].literals["factor"] == 4.0
    assert res.graph.parameters == {"factor": 4.0}
    res = check(w, REG, overrides={"factor": 8, "start": 2, "s.mode": "multiply"})
    assert res.ok
    assert res.graph.nodes["s"].literals["factor"] == 8.0 and res.graph.nodes["n"].literals["value"] == 2.0
    assert res.graph.nodes["s"].literals["mode"] == "multiply"
    assert codes(w, overrides={"factor": 11}) == [("out_of_range", None, "factor")]
    assert codes(w, overrides={"nope": 1, "s.nope": 2, "zz.value": 3}) == [
        ("unknown_override", None, None),
        ("unknown_override", None, None),
        ("unknown_override", "s", "nope"),
    ]
    assert codes(w, overrides={"s.factor": 1000}) == [("out_of_range", "s", "factor")]


def test_invalid_parameter_declarations() -> None:
    w = good()
    w["parameters"] = {
        "a": {"type": "FLOAT", "targets": ["ghost.value"]},
        "b": {"type": "FLOAT", "targets": ["s.nothing"]},
        "c": {"type": "STRING", "targets": ["s.factor"]},
        "d": {"type": "MODEL", "targets": ["s.x"], "default": 1},  # wrong socket type, and a default
    }
    got = codes(w)
    assert [c for c, _, _ in got] == ["invalid_parameter"] * 5


def test_requested_outputs_must_exist_and_workflow_needs_an_output() -> None:
    assert codes(good(), outputs=["zz"]) == [("unknown_output", "zz", None)]
    w = good()
    del w["nodes"]["o"]
    assert codes(w) == [("no_outputs", None, None)]


def test_malformed_structures_become_errors() -> None:
    assert codes("just text")[0][0] == "malformed"
    assert codes({"format": "atelier/workflow", "version": 99, "nodes": {}})[0][0] == "malformed"
    assert codes({"format": "atelier/workflow", "nodes": []})[0][0] == "malformed"
    bad_node = check({"format": "atelier/workflow", "nodes": {"x": {"inputs": {}}}}, REG)
    assert bad_node.errors[0].code == "malformed" and bad_node.errors[0].node == "x"
    ui_format = check({"nodes": [], "links": []}, REG)  # UI format, converted: nothing in it
    assert [e.code for e in ui_format.errors] == ["empty"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=25,
)
type_names = st.sampled_from(["Number", "Add", "Scale", "Split", "Text", "Sink", "Fail", "Nope", ""])
node_ids = st.sampled_from(["a", "b", "c", "1", "2"])
input_values = json_values | st.builds(
    lambda n, o: {"node": n, "output": o},
    node_ids | st.integers(),
    st.sampled_from(["NUMBER", "sum", 0, 1, -1, 7, "x"]),
)
nodes = st.dictionaries(
    node_ids,
    st.fixed_dictionaries(
        {"type": type_names},
        optional={
            "inputs": st.dictionaries(
                st.sampled_from(["a", "b", "x", "value", "factor", "mode", "text", "repeat", "label", "zz"]),
                input_values,
                max_size=5,
            )
            | json_values,
            "version": json_values,
            "title": json_values,
        },
    )
    | json_values,
    max_size=5,
)
workflows = st.fixed_dictionaries(
    {"format": st.sampled_from(["atelier/workflow", "atelier/workflow", "other"])},
    optional={
        "version": json_values,
        "nodes": nodes | json_values,
        "parameters": st.dictionaries(st.text(max_size=4), json_values, max_size=3) | json_values,
        "metadata": json_values,
    },
)
comfy = st.dictionaries(
    node_ids,
    st.fixed_dictionaries(
        {"class_type": type_names | json_values},
        optional={
            "inputs": st.dictionaries(
                st.text(max_size=6), json_values | st.tuples(node_ids, st.integers()).map(list)
            )
        },
    ),
    max_size=4,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=workflows | comfy | json_values,
    overrides=st.dictionaries(st.text(max_size=8), json_values, max_size=3),
)
def test_validation_never_raises_on_arbitrary_json(data: Any, overrides: dict) -> None:
    res = check(data, REG, overrides=overrides)
    assert isinstance(res.errors, list)
    for e in res.errors:
        assert e.code and e.message
        json.dumps(e.model_dump())
    if res.ok:
        assert res.graph is not None


def test_a_node_may_check_its_literal_values_against_the_engines_folders(tmp_path) -> None:
    from atelier.engine.folders import Folders
    from atelier.engine.node import Context, Node, Output, String
    from atelier.engine.registry import Registry

    class Greet(Node):
        output_node = True
        inputs = (String("name", "x"),)
        outputs = (Output("STRING"),)

        @classmethod
        def check_inputs(cls, files: Folders, name: str) -> list[tuple[str | None, str]]:
            if not (files.input / name).exists():
                return [("name", f"no file {name!r} in the input folder")]
            return []

        def run(self, ctx: Context, name: str) -> str:
            return name

    (tmp_path / "ann").write_text("")
    files = Folders(input=tmp_path)
    reg = Registry([Greet])
    ok = check(
        {
            "format": "atelier/workflow",
            "version": 1,
            "nodes": {"g": {"type": "Greet", "inputs": {"name": "ann"}}},
        },
        reg,
        files=files,
    )
    assert ok.ok
    bad = check(
        {
            "format": "atelier/workflow",
            "version": 1,
            "nodes": {"g": {"type": "Greet", "inputs": {"name": "bob"}}},
        },
        reg,
        files=files,
    )
    assert not bad.ok
    assert [(e.node, e.input, e.code, e.message) for e in bad.errors if e.severity == "error"] == [
        ("g", "name", "invalid_value", "no file 'bob' in the input folder")
    ]
