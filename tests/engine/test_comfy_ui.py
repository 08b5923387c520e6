"""ComfyUI's UI format -> Atelier's workflow: each rule of the converter on small hand-written graphs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, PngImagePlugin

from atelier.engine import cli, runtime
from atelier.engine.comfy_ui import UiFormatError, from_comfy_ui
from atelier.engine.node import Boolean, Context, Int, Node, Output
from atelier.engine.registry import Registry
from atelier.engine.validate import check
from atelier.engine.workflow import read_workflow_data, to_comfy_api
from tests.engine.toy_nodes import NUMBER, RUNS, TOY_TYPES, Sink


class Seeded(Node):
    """A number from a seed (a seed-like input: the canvas adds a control-after-generate widget)."""

    category = "toy"
    inputs = (Int("seed", 0, min=0, max=2**32, control_after_generate=True), Boolean("odd", False))
    outputs = (Output(NUMBER),)

    def run(self, ctx: Context, seed: int, odd: bool) -> int:
        return seed * 2 + (1 if odd else 0)


REG = Registry([*TOY_TYPES, Seeded])


def node(nid: int, type: str, widgets: Any = None, inputs: Any = (), outputs: Any = (), **extra: Any) -> dict:
    """A UI-format node; ``inputs`` as (name, type, link id or None)."""
    out: dict[str, Any] = {"id": nid, "type": type, "pos": [nid * 10, 5], "size": [200, 80], "mode": 0}
    out["inputs"] = [{"name": n, "type": t, "link": lk} for n, t, lk in inputs]
    out["outputs"] = [{"name": n, "type": t, "links": []} for n, t in outputs]
    if widgets is not None:
        out["widgets_values"] = widgets
    out.update(extra)
    return out


def ui(nodes: list[dict], links: list[list], **extra: Any) -> dict:
    return {"last_node_id": 99, "last_link_id": 99, "nodes": nodes, "links": links, "version": 0.4, **extra}


def api(data: dict) -> dict[str, Any]:
    """The converted workflow as ComfyUI's API format, inputs only."""
    return {k: [v["class_type"], v["inputs"]] for k, v in to_comfy_api(from_comfy_ui(data, REG), REG).items()}


def test_widgets_by_position_links_by_id_titles_and_layout() -> None:
    data = ui(
        [
            node(3, "Number", [2.5], outputs=[("NUMBER", "NUMBER")]),
            node(7, "Scale", [3, "divide", True], [("x", "NUMBER", 11)], title="Halve"),
            node(9, "Sink", ["label!"], [("value", "*", 12)]),
        ],
        [
            [11, 3, 0, 7, 0, "NUMBER"],
            {"id": 12, "origin_id": 7, "origin_slot": 0, "target_id": 9, "target_slot": 0},
        ],
        groups=[{"title": "G", "bounding": [0, 0, 100, 100]}],
    )
    wf = from_comfy_ui(data, REG)
    assert api(data) == {
        "3": ["Number", {"value": 2.5}],
        "7": ["Scale", {"factor": 3, "mode": "divide", "negate": True, "x": ["3", 0]}],
        "9": ["Sink", {"label": "label!", "value": ["7", 0]}],
    }
    assert wf.nodes["7"].title == "Halve" and wf.nodes["7"].inputs["x"].output == "NUMBER"
    assert wf.ui["positions"]["9"] == [90, 5] and wf.ui["groups"][0]["title"] == "G"
    # and it runs: 2.5 / 3, negated
    RUNS.clear()
    Sink.received.clear()
    from atelier.engine.executor import Executor

    assert Executor(REG).run(wf).ok
    assert Sink.received == [("label!", pytest.approx(-2.5 / 3))]


def test_seed_control_values_and_old_boolean_toggles_are_skipped() -> None:
    new = ui([node(1, "Seeded", [42, "randomize", True])], [])
    assert api(new)["1"] == ["Seeded", {"seed": 42, "odd": True}]
    assert from_comfy_ui(new, REG).ui["controls"] == {"1": {"seed": "randomize"}}
    old = ui([node(1, "Seeded", [42, True, False])], [])  # an old file: a boolean "random seed" toggle
    assert api(old)["1"] == ["Seeded", {"seed": 42, "odd": False}]
    # no toggle: the boolean after the seed is the next widget's own value
    bare = ui([node(1, "Seeded", [42, True])], [])
    assert api(bare)["1"] == ["Seeded", {"seed": 42, "odd": True}]
    fixed = ui([node(1, "Seeded", [5, "fixed", False])], [])
    assert "controls" not in (from_comfy_ui(fixed, REG).ui or {})


def test_widgets_values_by_name() -> None:
    data = ui([node(1, "Scale", {"mode": "divide", "factor": 4}, [("x", "NUMBER", None)])], [])
    assert api(data)["1"] == ["Scale", {"mode": "divide", "factor": 4}]


def test_primitive_nodes_are_inlined_into_their_targets() -> None:
    data = ui(
        [
            node(1, "PrimitiveNode", [7, "fixed"], outputs=[("INT", "INT")]),
            # a widget converted to an input, fed by the primitive: the target's own value is what runs
            node(2, "Seeded", [7, "fixed", False], [("seed", "INT", 5)]),
            # a target whose widget list lacks the value takes the primitive's
            node(3, "Seeded", {"odd": True}, [("seed", "INT", 6)]),
        ],
        [[5, 1, 0, 2, 0, "INT"], [6, 1, 0, 3, 0, "INT"]],
    )
    assert api(data) == {
        "2": ["Seeded", {"seed": 7, "odd": False}],
        "3": ["Seeded", {"seed": 7, "odd": True}],
    }


def test_reroutes_are_followed_and_notes_dropped() -> None:
    data = ui(
        [
            node(1, "Number", [4], outputs=[("NUMBER", "NUMBER")]),
            node(2, "Reroute", None, [("", "*", 10)], [("", "NUMBER")]),
            node(3, "Reroute", None, [("", "*", 11)], [("", "NUMBER")]),
            node(4, "Sink", ["x"], [("value", "*", 12)]),
            node(5, "Note", ["a note"]),
            node(6, "MarkdownNote", ["# md"]),
        ],
        [[10, 1, 0, 2, 0, "*"], [11, 2, 0, 3, 0, "*"], [12, 3, 0, 4, 0, "*"]],
    )
    assert api(data) == {"1": ["Number", {"value": 4}], "4": ["Sink", {"label": "x", "value": ["1", 0]}]}


def test_bypassed_nodes_pass_their_input_of_the_same_type_through() -> None:
    data = ui(
        [
            node(1, "Number", [1], outputs=[("NUMBER", "NUMBER")]),
            node(2, "Text", ["t", 1], outputs=[("TEXT", "TEXT")]),
            # bypassed Add: output 0 (NUMBER) -> its input 0 "a" (same index, same type)
            node(3, "Add", None, [("a", "NUMBER", 20), ("b", "NUMBER", None)], mode=4),
            node(4, "Sink", ["n"], [("value", "NUMBER", 21)]),
            # bypassed Split: output 1 (NUMBER); its input 1 does not exist -> the first NUMBER input
            node(5, "Split", None, [("x", "NUMBER", 22)], mode=4),
            node(6, "Sink", ["s"], [("value", "NUMBER", 23)]),
            # a bypassed node with no input of the fed input's type: the link is cut
            node(7, "Scale", [1, "multiply", False], [("x", "NUMBER", 24)], mode=4),
            node(8, "Sink", ["t"], [("value", "TEXT", 25)]),
        ],
        [
            [20, 1, 0, 3, 0, "NUMBER"],
            [21, 3, 0, 4, 0, "NUMBER"],
            [22, 1, 0, 5, 0, "NUMBER"],
            [23, 5, 1, 6, 0, "NUMBER"],
            [24, 2, 0, 7, 0, "TEXT"],
            [25, 7, 0, 8, 0, "TEXT"],
        ],
    )
    out = api(data)
    assert out["4"] == ["Sink", {"label": "n", "value": ["1", 0]}]
    assert out["6"] == ["Sink", {"label": "s", "value": ["1", 0]}]
    assert "3" not in out and "5" not in out and "7" not in out
    # no input of the bypassed node fits: the input goes without, and validation says so
    assert out["8"] == ["Sink", {"label": "t"}]
    assert [(e.code, e.input) for e in check(data, REG).errors if e.node == "8"] == [
        ("missing_input", "value")
    ]
    # a bypassed node whose matching input is unlinked leaves the fed input empty
    unlinked = ui(
        [
            node(3, "Add", None, [("a", "NUMBER", None), ("b", "NUMBER", None)], mode=4),
            node(4, "Scale", [2, "multiply", False], [("x", "NUMBER", 21)]),
        ],
        [[21, 3, 0, 4, 0, "NUMBER"]],
    )
    assert api(unlinked) == {"4": ["Scale", {"factor": 2, "mode": "multiply", "negate": False}]}
    errors = check(unlinked, REG).errors
    assert [(e.code, e.node, e.input) for e in errors if e.node == "4"] == [("missing_input", "4", "x")]


def test_muted_nodes_and_what_only_they_feed_are_dropped() -> None:
    data = ui(
        [
            node(1, "Number", [1], outputs=[("NUMBER", "NUMBER")], mode=2),
            node(2, "Scale", [2, "multiply", False], [("x", "NUMBER", 30)]),
            node(3, "Sink", ["a"], [("value", "*", 31)]),
            node(4, "Number", [5], outputs=[("NUMBER", "NUMBER")]),
            node(5, "Sink", ["b"], [("value", "*", 32)]),
            node(6, "Sink", ["muted"], [("value", "*", 33)], mode=2),
        ],
        [
            [30, 1, 0, 2, 0, "NUMBER"],
            [31, 2, 0, 3, 0, "NUMBER"],
            [32, 4, 0, 5, 0, "NUMBER"],
            [33, 4, 0, 6, 0, "NUMBER"],
        ],
    )
    assert api(data) == {"4": ["Number", {"value": 5}], "5": ["Sink", {"label": "b", "value": ["4", 0]}]}


def test_group_nodes_expand_into_their_inner_nodes() -> None:
    group = {
        "nodes": [
            {
                "index": 0,
                "type": "Seeded",
                "outputs": [{"name": "NUMBER", "type": "NUMBER"}],
                "widgets_values": [1, "fixed", False],
            },
            {
                "index": 1,
                "type": "Add",
                "inputs": [{"name": "a", "type": "NUMBER"}, {"name": "b", "type": "NUMBER"}],
                "outputs": [{"name": "sum", "type": "NUMBER"}],
            },
            {
                "index": 2,
                "type": "Scale",
                "inputs": [{"name": "x", "type": "NUMBER"}],
                "outputs": [{"name": "NUMBER", "type": "NUMBER"}],
                "widgets_values": [1, "multiply", False],
            },
        ],
        "links": [[0, 0, 1, 0, 9, "NUMBER"], [1, 0, 2, 0, 9, "NUMBER"]],
        "external": [],
    }
    data = ui(
        [
            node(1, "Number", [3], outputs=[("NUMBER", "NUMBER")]),
            node(
                5,
                "workflow>Pack",
                [11, "randomize", True, 4, "divide", False],
                [("b", "NUMBER", 40)],
                [("NUMBER", "NUMBER")],
            ),
            node(6, "Sink", ["g"], [("value", "*", 41)]),
        ],
        [[40, 1, 0, 5, 0, "NUMBER"], [41, 5, 0, 6, 0, "NUMBER"]],
        extra={"groupNodes": {"Pack": group}},
    )
    assert api(data) == {
        "1": ["Number", {"value": 3}],
        "5:0": ["Seeded", {"seed": 11, "odd": True}],
        "5:1": ["Add", {"a": ["5:0", 0], "b": ["1", 0]}],
        "5:2": ["Scale", {"factor": 4, "mode": "divide", "negate": False, "x": ["5:1", 0]}],
        "6": ["Sink", {"label": "g", "value": ["5:2", 0]}],
    }


def subgraph(sid: str, nodes: list[dict], links: list[dict], n_in: int, n_out: int) -> dict:
    return {
        "id": sid,
        "name": sid,
        "inputNode": {"id": -10},
        "outputNode": {"id": -20},
        "inputs": [{"name": f"in{k}", "type": "NUMBER"} for k in range(n_in)],
        "outputs": [{"name": f"out{k}", "type": "NUMBER"} for k in range(n_out)],
        "nodes": nodes,
        "links": links,
    }


def lk(lid: int, origin: int, oslot: int, target: int, tslot: int) -> dict:
    return {
        "id": lid,
        "origin_id": origin,
        "origin_slot": oslot,
        "target_id": target,
        "target_slot": tslot,
        "type": "NUMBER",
    }


def test_subgraphs_expand_nested_with_passthroughs() -> None:
    inner_id = "0a1b-inner"
    outer_id = "0a1b-outer"
    inner = subgraph(
        inner_id,
        [node(1, "Scale", [10, "multiply", False], [("x", "NUMBER", 1)], [("NUMBER", "NUMBER")])],
        [lk(1, -10, 0, 1, 0), lk(2, 1, 0, -20, 0)],
        1,
        1,
    )
    outer = subgraph(
        outer_id,
        [
            node(4, inner_id, None, [("in0", "NUMBER", 5)], [("out0", "NUMBER")]),
            node(6, "Add", None, [("a", "NUMBER", 6), ("b", "NUMBER", 7)], [("sum", "NUMBER")]),
        ],
        # in0 -> inner -> Add.a; in0 -> Add.b; Add -> out0; in0 -> out1 (a passthrough)
        [
            lk(5, -10, 0, 4, 0),
            lk(6, 4, 0, 6, 0),
            lk(7, -10, 0, 6, 1),
            lk(8, 6, 0, -20, 0),
            lk(9, -10, 0, -20, 1),
        ],
        1,
        2,
    )
    data = ui(
        [
            node(1, "Number", [2], outputs=[("NUMBER", "NUMBER")]),
            node(2, outer_id, None, [("in0", "NUMBER", 50)], [("out0", "NUMBER"), ("out1", "NUMBER")]),
            node(3, "Sink", ["sum"], [("value", "*", 51)]),
            node(4, "Sink", ["through"], [("value", "*", 52)]),
        ],
        [[50, 1, 0, 2, 0, "NUMBER"], [51, 2, 0, 3, 0, "NUMBER"], [52, 2, 1, 4, 0, "NUMBER"]],
        definitions={"subgraphs": [outer, inner]},
    )
    assert api(data) == {
        "1": ["Number", {"value": 2}],
        "2:4:1": ["Scale", {"factor": 10, "mode": "multiply", "negate": False, "x": ["1", 0]}],
        "2:6": ["Add", {"a": ["2:4:1", 0], "b": ["1", 0]}],
        "3": ["Sink", {"label": "sum", "value": ["2:6", 0]}],
        "4": ["Sink", {"label": "through", "value": ["1", 0]}],
    }


def test_unknown_node_types_are_reported_node_by_node() -> None:
    data = ui(
        [
            node(1, "Number", [1], outputs=[("NUMBER", "NUMBER")]),
            node(2, "FancyUpscaler", [2, "lanczos"], [("x", "NUMBER", 60)], [("NUMBER", "NUMBER")]),
            node(3, "MysteryNode", ["?"], [("x", "NUMBER", 61)]),
            node(4, "Sink", ["x"], [("value", "*", 62)]),
        ],
        [[60, 1, 0, 2, 0, "NUMBER"], [61, 2, 0, 3, 0, "NUMBER"], [62, 1, 0, 4, 0, "NUMBER"]],
    )
    with pytest.raises(UiFormatError) as err:
        from_comfy_ui(data, REG)
    assert [(p.node, p.node_type, p.code) for p in err.value.problems] == [
        ("2", "FancyUpscaler", "unknown_node_type"),
        ("3", "MysteryNode", "unknown_node_type"),
    ]
    result = check(data, REG)
    assert not result.ok
    assert [(e.code, e.node, e.node_type) for e in result.errors] == [
        ("unknown_node_type", "2", "FancyUpscaler"),
        ("unknown_node_type", "3", "MysteryNode"),
    ]


def test_malformed_ui_data_is_a_clear_error() -> None:
    result = check(ui([{"id": 1}], []), REG)
    assert [e.code for e in result.errors] == ["malformed"] and "id and a type" in result.errors[0].message
    result = check(ui([node(1, "Sink", ["x"], [("value", "*", "abc")])], []), REG)
    assert "node 1: input 'value'" in result.errors[0].message


def sample_ui() -> dict:
    return ui(
        [node(1, "Seeded", [21, "randomize", False]), node(2, "Sink", ["seeded"], [("value", "*", 70)])],
        [[70, 1, 0, 2, 0, "NUMBER"]],
    )


def test_images_carry_ui_workflows_png_and_webp(tmp_path: Path) -> None:
    data = sample_ui()
    png = tmp_path / "only_workflow.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("workflow", json.dumps(data))
    Image.new("RGB", (4, 4)).save(png, pnginfo=info)
    assert read_workflow_data(png) == data
    # ComfyUI's WEBP: "prompt:{json}" in EXIF tag 0x0110, "workflow:{json}" in 0x010F
    webp = tmp_path / "comfy.webp"
    exif = Image.Exif()
    exif[0x010F] = "workflow:" + json.dumps(data)
    Image.new("RGB", (4, 4)).save(webp, exif=exif.tobytes())
    assert read_workflow_data(webp) == data
    prompt = {"1": {"class_type": "Seeded", "inputs": {"seed": 21, "odd": False}}}
    exif[0x0110] = "prompt:" + json.dumps(prompt)
    Image.new("RGB", (4, 4)).save(webp, exif=exif.tobytes())
    assert read_workflow_data(webp) == prompt  # what ComfyUI ran comes first


@pytest.fixture
def toy_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    def toy_engine(config: runtime.EngineConfig, **_: object) -> runtime.Engine:
        return runtime.build_engine(config, registry=REG, plugins=[])

    monkeypatch.setattr(cli, "build_engine", toy_engine)


def test_cli_runs_and_validates_ui_format_files(
    tmp_path: Path, toy_cli: None, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "ui.json"
    path.write_text(json.dumps(sample_ui()))
    Sink.received.clear()
    assert cli.main(["run", str(path), "--quiet"]) == 0
    assert Sink.received == [("seeded", 42)]
    bad = sample_ui()
    bad["nodes"][0]["type"] = "NoSuchNode"
    path.write_text(json.dumps(bad))
    capsys.readouterr()
    assert cli.main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "node 1 (NoSuchNode)" in out and "unknown_node_type" in out


def test_bypass_into_an_any_input_takes_the_same_slot_or_the_first() -> None:
    data = ui(
        [
            node(1, "Number", [1], outputs=[("NUMBER", "NUMBER")]),
            node(2, "Number", [2], outputs=[("NUMBER", "NUMBER")]),
            node(3, "Add", None, [("a", "NUMBER", 1), ("b", "NUMBER", 2)], [("sum", "NUMBER")], mode=4),
            node(4, "Sink", ["x"], [("value", "*", 3)]),
            node(5, "Split", None, [("x", "NUMBER", 4)], [("half", "NUMBER"), ("double", "NUMBER")], mode=4),
            node(6, "Sink", ["y"], [("value", "*", 5)]),
        ],
        [
            [1, 1, 0, 3, 0, "NUMBER"],
            [2, 2, 0, 3, 1, "NUMBER"],
            [3, 3, 0, 4, 0, "*"],
            [4, 2, 0, 5, 0, "NUMBER"],
            [5, 5, 1, 6, 0, "*"],
        ],
    )
    out = api(data)
    assert out["4"] == ["Sink", {"label": "x", "value": ["1", 0]}]  # Add's output 0 -> its input 0
    assert out["6"] == ["Sink", {"label": "y", "value": ["2", 0]}]  # Split's output 1 -> its only input


def test_a_subgraph_instance_widget_feeds_an_unlinked_subgraph_input() -> None:
    sid = "5eed-pack"
    pack = subgraph(
        sid,
        [node(1, "Seeded", [0, "fixed", False], [("seed", "INT", 1)], [("NUMBER", "NUMBER")])],
        [lk(1, -10, 0, 1, 0), lk(2, 1, 0, -20, 0)],
        1,
        1,
    )
    pack["inputs"][0].update(name="seed", type="INT")
    pack["nodes"][0]["inputs"][0]["widget"] = {"name": "seed"}  # it feeds a widget: the instance shows one
    # files may list only the linked inputs of an instance: the subgraph's inputs are matched by name
    instance = node(2, sid, [99], [], [("out0", "NUMBER")])
    data = ui(
        [instance, node(3, "Sink", ["z"], [("value", "*", 10)])],
        [[10, 2, 0, 3, 0, "NUMBER"]],
        definitions={"subgraphs": [pack]},
    )
    assert api(data) == {
        "2:1": ["Seeded", {"seed": 99, "odd": False}],  # the instance's widget, not the inner default
        "3": ["Sink", {"label": "z", "value": ["2:1", 0]}],
    }


def _face_kit() -> dict:
    """A workflow with a nested subgraph: "Boost" (Seeded + Add, its seed a widget on the instance) used
    inside "Kit" (Boost + Scale, whose factor feeds a widget), two instances of Kit at the top."""
    boost = subgraph(
        "b005-7",
        [
            node(1, "Seeded", [5, "fixed", False], [("seed", "INT", 1)], [("NUMBER", "NUMBER")]),
            node(2, "Add", None, [("a", "NUMBER", 2), ("b", "NUMBER", 3)], [("sum", "NUMBER")]),
        ],
        [lk(1, -10, 1, 1, 0), lk(2, -10, 0, 2, 0), lk(3, 1, 0, 2, 1), lk(4, 2, 0, -20, 0)],
        2,
        1,
    )
    boost["name"] = "Boost"
    boost["inputs"][1].update(name="seed", type="INT")
    boost["nodes"][0]["inputs"][0]["widget"] = {"name": "seed"}
    kit = subgraph(
        "c1d2-kit",
        [
            node(3, "b005-7", [7], [("in0", "NUMBER", 10)], [("out0", "NUMBER")]),
            node(4, "Scale", [2, "multiply", False], [("x", "NUMBER", 11), ("factor", "FLOAT", 12)]),
        ],
        [lk(10, -10, 0, 3, 0), lk(11, 3, 0, 4, 0), lk(12, -10, 1, 4, 1), lk(13, 4, 0, -20, 0)],
        2,
        1,
    )
    kit["name"] = "Face kit!"
    kit["inputs"][1].update(name="factor", type="FLOAT")
    kit["nodes"][1]["inputs"][1]["widget"] = {"name": "factor"}
    kit["nodes"][1]["outputs"] = [{"name": "NUMBER", "type": "NUMBER", "links": [13]}]
    return ui(
        [
            node(1, "Number", [2], outputs=[("NUMBER", "NUMBER")]),
            node(2, "c1d2-kit", [3], [("in0", "NUMBER", 50)], [("out0", "NUMBER")]),
            node(5, "c1d2-kit", [10], [("in0", "NUMBER", 53)], [("out0", "NUMBER")]),
            node(3, "Sink", ["first"], [("value", "*", 51)]),
            node(4, "Sink", ["second"], [("value", "*", 52)]),
        ],
        [
            [50, 1, 0, 2, 0, "NUMBER"],
            [51, 2, 0, 3, 0, "NUMBER"],
            [53, 2, 0, 5, 0, "NUMBER"],
            [52, 5, 0, 4, 0, "NUMBER"],
        ],
        definitions={"subgraphs": [kit, boost]},
    )


def test_subgraphs_import_as_pipelines_that_run_as_the_flattened_graph() -> None:
    from atelier.engine.comfy_ui.convert import _convert_with
    from atelier.engine.comfy_ui.graph import subgraph_definitions
    from atelier.engine.executor import Executor

    data = _face_kit()
    wf = from_comfy_ui(data, REG)
    assert {nid: n.type for nid, n in wf.nodes.items()} == {
        "1": "Number",
        "2": "pipeline:Face_kit",
        "5": "pipeline:Face_kit",
        "3": "Sink",
        "4": "Sink",
    }
    assert wf.nodes["2"].inputs == {"in0": wf.nodes["2"].inputs["in0"], "factor": 3}
    assert wf.nodes["5"].inputs["in0"].model_dump() == {"node": "2", "output": "out0"}
    kit, boost = wf.definitions["Face_kit"], wf.definitions["Boost"]
    assert kit["metadata"]["name"] == "Face kit!"
    assert kit["nodes"]["3"]["type"] == "pipeline:Boost" and kit["nodes"]["3"]["inputs"]["seed"] == 7
    # a subgraph input feeding a widget is a literal parameter typed and limited as that widget
    factor = kit["parameters"]["factor"]
    assert (factor["type"], factor["targets"], factor["default"]) == ("FLOAT", ["4.factor"], 2)
    assert (factor["min"], factor["max"]) == (-100, 100)
    assert kit["parameters"]["in0"]["type"] == "NUMBER" and kit["parameters"]["in0"]["targets"] == ["3.in0"]
    assert boost["parameters"]["seed"]["type"] == "INT" and boost["parameters"]["seed"]["default"] == 5
    assert boost["parameters"]["seed"]["max"] == 2**32
    assert kit["outputs"] == {"out0": {"type": "NUMBER", "node": "4", "output": "NUMBER"}}
    assert check(data, REG).ok

    def run(workflow: object) -> list:
        Sink.received.clear()
        Executor(REG).run(workflow)
        return sorted(Sink.received)

    flat = _convert_with(data, REG, subgraph_definitions(data), frozenset())  # ComfyUI's own flattening
    assert not flat.definitions and "2:3:1" in flat.nodes
    assert run(wf.to_dict()) == run(flat.to_dict())
    # (2 + 7*2) * 3 = 48 ; then (48 + 7*2) * 10 = 620
    assert run(wf.to_dict()) == [("first", 48.0), ("second", 620.0)]
    # ComfyUI's API format of it is the flattened graph, ids and all
    assert api(data) == {k: [v["class_type"], v["inputs"]] for k, v in to_comfy_api(flat, REG).items()}


def test_an_unknown_node_inside_a_subgraph_is_named_with_the_subgraph() -> None:
    data = _face_kit()
    data["definitions"]["subgraphs"][1]["nodes"][1]["type"] = "FancyAdd"
    with pytest.raises(UiFormatError) as err:
        from_comfy_ui(data, REG)
    [problem] = err.value.problems
    assert (problem.node, problem.node_type, problem.code) == ("2", "FancyAdd", "unknown_node_type")
    assert "inside subgraph 'Boost'" in problem.message


def test_a_passthrough_subgraph_is_expanded_in_place_and_the_rest_stay_pipelines() -> None:
    data = _face_kit()
    kit = data["definitions"]["subgraphs"][0]
    kit["outputs"].append({"name": "raw", "type": "NUMBER"})
    kit["links"].append(lk(14, -10, 0, -20, 1))  # in0 straight to an output
    wf = from_comfy_ui(data, REG)
    assert set(wf.definitions) == {"Boost"}
    assert wf.nodes["2:3"].type == "pipeline:Boost" and wf.nodes["2:4"].type == "Scale"
    assert check(data, REG).ok
