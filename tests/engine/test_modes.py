"""Node modes: bypassed nodes pass their inputs through by socket type, muted nodes do not run."""

from __future__ import annotations

from typing import Any

import pytest

from atelier.engine.executor import Executor
from atelier.engine.modes import bypass_input, types_meet
from atelier.engine.node import Context, Node, Output, Socket
from atelier.engine.registry import Registry
from atelier.engine.validate import check
from atelier.engine.workflow import Workflow
from tests.engine.toy_nodes import NUMBER, RUNS, Sink, link, toy_registry, wf


class Swap(Node):
    """Takes a number and a text, gives them back in the other order (types at crossed indices)."""

    category = "toy"
    inputs = (Socket("n", NUMBER), Socket("t", "TEXT"))
    outputs = (Output("TEXT", "t"), Output(NUMBER, "n"))

    def run(self, ctx: Context, n: float, t: str) -> tuple[str, float]:
        RUNS[ctx.node_id] += 1
        return t + "!", n + 1


def registry() -> Registry:
    reg = toy_registry()
    reg.add(Swap)
    return reg


@pytest.fixture(autouse=True)
def _reset() -> None:
    RUNS.clear()
    Sink.received.clear()


def chain(scale_mode: str = "active", **extra: Any) -> dict[str, Any]:
    return wf(
        {
            "a": {"type": "Number", "inputs": {"value": 2.0}},
            "s": {
                "type": "Scale",
                "mode": scale_mode,
                "inputs": {"x": link("a"), "factor": 3.0, "mode": "multiply"},
            },
            "out": {"type": "Sink", "inputs": {"value": link("s"), "label": "main"}},
            **extra,
        }
    )


def run(data: dict[str, Any], **kw: Any) -> Any:
    res = Executor(registry()).run(data, **kw)
    assert res.ok, [str(e) for e in res.errors]
    return res


def test_bypassed_node_passes_its_input_through_and_does_not_run() -> None:
    res = run(chain("bypass"))
    assert Sink.received == [("main", 2.0)]  # not 6.0: the scale is bypassed
    assert "s" not in res.executed and RUNS["s"] == 0
    run(chain("active"))
    assert Sink.received[-1] == ("main", 6.0)


def test_bypassed_node_signs_as_the_graph_it_becomes() -> None:
    reg = registry()
    bypassed = check(chain("bypass"), reg).graph
    direct = wf(
        {
            "a": {"type": "Number", "inputs": {"value": 2.0}},
            "out": {"type": "Sink", "inputs": {"value": link("a"), "label": "main"}},
        }
    )
    active = check(chain("active"), reg).graph
    ex = Executor(reg)
    assert bypassed is not None and active is not None
    sig = ex.plan(bypassed).signatures["out"]
    assert sig == ex.plan(check(direct, reg).graph).signatures["out"]
    assert sig != ex.plan(active).signatures["out"]
    assert "s" not in bypassed.nodes


def test_bypass_picks_the_input_of_the_outputs_type() -> None:
    # Swap's output 0 is TEXT but its input 0 is a NUMBER: the first TEXT input stands in, and so on
    data = wf(
        {
            "num": {"type": "Number", "inputs": {"value": 5.0}},
            "txt": {"type": "Text", "inputs": {"text": "hi", "repeat": 2}},
            "sw": {"type": "Swap", "mode": "bypass", "inputs": {"n": link("num"), "t": link("txt")}},
            "o1": {"type": "Sink", "inputs": {"value": link("sw", "t"), "label": "t"}},
            "o2": {"type": "Sink", "inputs": {"value": link("sw", "n"), "label": "n"}},
            "o3": {"type": "Scale", "inputs": {"x": link("sw", "n"), "factor": 2.0, "mode": "multiply"}},
            "o4": {"type": "Sink", "inputs": {"value": link("o3"), "label": "scaled"}},
        }
    )
    run(data)
    assert sorted(Sink.received) == [("n", 5.0), ("scaled", 10.0), ("t", "hihi")]
    data["nodes"]["sw"]["mode"] = "active"
    Sink.received.clear()
    run(data)
    assert sorted(Sink.received) == [("n", 6.0), ("scaled", 12.0), ("t", "hihi!")]


def test_bypassed_nodes_in_a_row_pass_through_each_other() -> None:
    data = chain(
        "bypass",
        s2={"type": "Scale", "mode": "bypass", "inputs": {"x": link("s"), "factor": 5.0, "mode": "multiply"}},
    )
    data["nodes"]["out"]["inputs"]["value"] = link("s2")
    run(data)
    assert Sink.received == [("main", 2.0)]


def test_a_bypassed_output_with_nothing_to_pass_through_names_the_node() -> None:
    # Text has only widget inputs: its TEXT output has no linked input to stand in for it
    data = wf(
        {
            "txt": {"type": "Text", "mode": "bypass", "inputs": {"text": "hi", "repeat": 1}},
            "out": {"type": "Sink", "inputs": {"value": link("txt"), "label": "x"}},
        }
    )
    res = check(data, registry())
    assert not res.ok
    [err] = [e for e in res.errors if e.severity == "error"]
    assert (err.code, err.node, err.node_type) == ("bypass_no_input", "txt", "Text")
    assert "'out'" not in err.message and "node out" in err.message and "'value'" in err.message


def test_muted_node_and_what_needs_it_do_not_run_other_outputs_do() -> None:
    data = chain(
        "mute",
        b={"type": "Number", "inputs": {"value": 7.0}},
        other={"type": "Sink", "inputs": {"value": link("b"), "label": "other"}},
    )
    res = Executor(registry()).run(data)
    assert res.ok
    assert Sink.received == [("other", 7.0)]
    assert RUNS["s"] == 0 and RUNS["a"] == 0 and RUNS["out"] == 0
    warned = {(e.code, e.node) for e in check(data, registry()).warnings}
    assert ("not_run", "out") in warned


def test_muted_output_node_is_not_a_goal() -> None:
    data = chain(
        "active",
        other={"type": "Sink", "mode": "mute", "inputs": {"value": link("a"), "label": "other"}},
    )
    run(data)
    assert Sink.received == [("main", 6.0)]
    # asked for by name, it says why it cannot run
    res = check(data, registry(), outputs=["other"])
    assert [(e.code, e.node) for e in res.errors] == [("not_run", "other")]
    # every output muted: nothing to run
    data["nodes"]["out"]["mode"] = "mute"
    assert "no_outputs" in [e.code for e in check(data, registry()).errors]


def test_mode_is_saved_and_an_unknown_mode_is_an_error() -> None:
    saved = Workflow.model_validate(chain("bypass")).to_dict()
    assert saved["nodes"]["s"]["mode"] == "bypass"
    assert "mode" not in saved["nodes"]["a"]  # active is the default and is not written
    res = check(chain("sleep"), registry())
    assert [(e.code, e.node) for e in res.errors] == [("invalid_mode", "s")]


def test_bypass_rule() -> None:
    # the output's own index when it fits, else the first exact type, else the first that fits
    assert bypass_input(["MODEL", "CLIP"], "CLIP", 1, "CLIP") == 1
    assert bypass_input(["NUMBER", "TEXT"], "TEXT", 0, "TEXT") == 1
    assert bypass_input(["IMAGE,MASK", "LATENT"], "IMAGE", 0, "IMAGE") == 0
    assert bypass_input(["LATENT", "IMAGE,MASK"], "IMAGE", 0, "IMAGE") == 1
    assert bypass_input(["LATENT"], "IMAGE", 0, "IMAGE") is None
    assert bypass_input([], "IMAGE", 0, "*") is None
    assert bypass_input(["A", "X"], "X", 0, "*") == 1
    assert bypass_input(["A", "B"], "*", 1, "*") == 1
    assert types_meet("IMAGE, MASK", "mask") and not types_meet("IMAGE", "LATENT")


def test_comfyui_api_export_resolves_modes() -> None:
    from atelier.engine.workflow import parse_workflow, to_comfy_api

    data = chain(
        "bypass",
        b={"type": "Number", "inputs": {"value": 7.0}},
        other={"type": "Sink", "mode": "mute", "inputs": {"value": link("b"), "label": "other"}},
    )
    api = to_comfy_api(parse_workflow(data), registry())
    assert set(api) == {"a", "b", "out"}
    assert api["out"]["inputs"]["value"] == ["a", 0]
    assert all("mode" not in entry for entry in api.values())
