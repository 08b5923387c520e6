"""Round trip on ComfyUI's own examples: UI format -> Atelier -> API format equals the prompt ComfyUI stored
in the same image (tests/data/comfy_examples, made by its extract.py from ComfyUI_examples)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from atelier.engine.comfy_ui import from_comfy_ui
from atelier.engine.registry import Registry, default_registry
from atelier.engine.workflow import to_comfy_api

DATA = Path(__file__).resolve().parents[1] / "data" / "comfy_examples"
EXAMPLES = sorted(DATA.glob("*.json"))

#: Inputs ComfyUI's older frontend sent for Load Image's upload button: no input of the node.
UPLOAD_BUTTONS = {"upload", "choose file to upload"}


@pytest.fixture(scope="module")
def registry() -> Registry:
    return default_registry()


def normalised(prompt: dict[str, Any]) -> dict[str, Any]:
    """Node id -> (type, inputs): what a prompt computes (titles are display, upload buttons frontend-only)."""
    out = {}
    for nid, entry in prompt.items():
        inputs = {k: v for k, v in entry["inputs"].items() if not (k in UPLOAD_BUTTONS and v == "image")}
        out[str(nid)] = (entry["class_type"], inputs)
    return out


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 20


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_ui_format_converts_to_the_prompt_comfyui_stored(path: Path, registry: Registry) -> None:
    example = json.loads(path.read_text(encoding="utf-8"))
    wf = from_comfy_ui(example["workflow"], registry)
    ours = normalised(to_comfy_api(wf, registry))
    theirs = normalised(example["prompt"])
    assert ours == theirs
    # links are exact [node id, output index] pairs, and every literal keeps its JSON type
    for nid, (_, inputs) in ours.items():
        for name, value in inputs.items():
            assert type(value) is type(theirs[nid][1][name]) or isinstance(value, (int, float)), (nid, name)


def test_damaged_ui_workflows_fail_with_a_format_error_only(registry: Registry) -> None:
    """Whatever part of a real UI-format file is damaged, conversion names a problem; it never crashes."""
    import copy
    import random

    from atelier.engine.workflow import WorkflowFormatError

    junk: list[Any] = [None, 1, -1, "x", [], {}, True, 1.5, [1], {"a": 1}]
    workflows = [json.loads(p.read_text(encoding="utf-8"))["workflow"] for p in EXAMPLES]
    rnd = random.Random(7)

    def damage(o: Any) -> None:
        if isinstance(o, (dict, list)) and o:
            key = rnd.choice(list(o)) if isinstance(o, dict) else rnd.randrange(len(o))
            r = rnd.random()
            if r < 0.3:
                o[key] = rnd.choice(junk)
            elif r < 0.4:
                del o[key]
            else:
                damage(o[key])

    failures = 0
    for _ in range(400):
        data = copy.deepcopy(rnd.choice(workflows))
        for _ in range(rnd.randint(1, 3)):
            damage(data)
        try:
            from_comfy_ui(data, registry)
        except WorkflowFormatError as exc:
            assert str(exc)
            failures += 1
    assert failures > 20  # the damage is real: many of them are refused


# -- the frontend's structure on every family's examples ------------------------------------------------

STRUCTURE = sorted((DATA / "structure").glob("*.json"))


def stand_ins(example: dict[str, Any]) -> Registry:
    """Declarations for the node types of an example that Atelier lacks, read off ComfyUI's own prompt:
    its inputs come widgets first, in widget order (how ComfyUI's frontend writes them), then links; each
    literal's JSON type gives the widget's type. The stand-ins only declare: they never run."""
    from atelier.engine.node import NAME as IDENTIFIER
    from atelier.engine.node import Boolean, Choice, Float, Int, Node, Socket, String

    ui_types: dict[tuple[str, str], str] = {}
    nodes = list(example["workflow"]["nodes"])
    for group in (example["workflow"].get("extra") or {}).get("groupNodes", {}).values():
        nodes += group["nodes"]
    for n in nodes:
        for inp in n.get("inputs") or []:
            ui_types[(n["type"], inp["name"])] = str(inp.get("type", "*"))
    widest: dict[str, dict[str, Any]] = {}
    for entry in example["prompt"].values():
        if len(entry["inputs"]) >= len(widest.get(entry["class_type"], {})):
            widest[entry["class_type"]] = entry["inputs"]
    types = []
    for type_name, inputs in widest.items():
        declared = []
        for name, value in inputs.items():
            if not IDENTIFIER.match(name):
                continue  # an upload button ("choose file to upload"): dropped from the comparison too
            if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
                declared.append(Socket(name, ui_types.get((type_name, name), "*")))
            elif isinstance(value, bool):
                declared.append(Boolean(name, value))
            elif isinstance(value, int):
                declared.append(Int(name, value, min=-(2**63), max=2**64))
            elif isinstance(value, float):
                declared.append(Float(name, value, min=-1e18, max=1e18))
            elif name == "image" and isinstance(value, str):
                declared.append(Choice(name, [value]))
            else:
                declared.append(String(name, str(value)))
        run = lambda self, ctx, **kw: None  # noqa: E731 - never called
        types.append(
            type(
                type_name,
                (Node,),
                {"category": "stand-in", "inputs": tuple(declared), "outputs": (), "run": run},
            )
        )
    return Registry(types)


def test_there_are_structure_examples() -> None:
    assert len(STRUCTURE) >= 20


#: Examples whose stored prompt was not made from the stored workflow.
STALE = {
    "stable_cascade__stable_cascade__inpaint_controlnet": "the prompt predates the group node 68: it holds "
    "the nodes before grouping (60-66)",
}


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, marks=pytest.mark.xfail(strict=True, reason=STALE[p.stem])) if p.stem in STALE else p
        for p in STRUCTURE
    ],
    ids=[p.stem for p in STRUCTURE],
)
def test_group_nodes_bypass_mute_primitives_and_reroutes_as_comfyui_does(path: Path) -> None:
    example = json.loads(path.read_text(encoding="utf-8"))
    registry = stand_ins(example)
    wf = from_comfy_ui(example["workflow"], registry)
    from atelier.engine.node import NAME as IDENTIFIER

    def declared(prompt: dict[str, Any]) -> dict[str, Any]:  # the stand-ins declare identifier inputs only
        return {
            k: (t, {n: v for n, v in i.items() if IDENTIFIER.match(n)})
            for k, (t, i) in normalised(prompt).items()
        }

    assert declared(to_comfy_api(wf, registry)) == declared(example["prompt"])


def wrap_in_subgraph(workflow: dict[str, Any], inside: set[int], sid: str, name: str) -> tuple[dict, int]:
    """``workflow`` with the nodes ``inside`` moved into a new subgraph ``sid`` (as ComfyUI's "Convert to
    subgraph" does): links crossing the boundary become the subgraph's inputs and outputs. Returns the new
    workflow and the instance's id."""
    import copy

    wf = copy.deepcopy(workflow)
    instance = max(n["id"] for n in wf["nodes"]) + 1
    next_link = max(link[0] for link in wf["links"]) + 1
    sg_links: list[dict[str, Any]] = []
    outer_links: list[list[Any]] = []
    ins: dict[tuple[int, int], int] = {}
    outs: dict[tuple[int, int], int] = {}
    inst_inputs: list[dict[str, Any]] = []
    inst_outputs: list[dict[str, Any]] = []

    def sg_link(lid: int, o: int, os: int, t: int, ts: int, typ: str) -> None:
        sg_links.append(
            {"id": lid, "origin_id": o, "origin_slot": os, "target_id": t, "target_slot": ts, "type": typ}
        )

    for lid, o, os, t, ts, typ in wf["links"]:
        if o in inside and t in inside:
            sg_link(lid, o, os, t, ts, typ)
        elif t in inside:  # into the subgraph: one subgraph input per origin
            if (o, os) not in ins:
                ins[(o, os)] = len(ins)
                inst_inputs.append({"name": f"{typ.lower()}_{len(ins)}", "type": typ, "link": next_link})
                outer_links.append([next_link, o, os, instance, ins[(o, os)], typ])
                next_link += 1
            sg_link(lid, -10, ins[(o, os)], t, ts, typ)
        elif o in inside:  # out of it: one subgraph output per origin
            if (o, os) not in outs:
                outs[(o, os)] = len(outs)
                inst_outputs.append({"name": f"{typ.lower()}_{len(outs)}", "type": typ, "links": []})
                sg_link(next_link, o, os, -20, outs[(o, os)], typ)
                next_link += 1
            outer_links.append([lid, instance, outs[(o, os)], t, ts, typ])
        else:
            outer_links.append([lid, o, os, t, ts, typ])
    subgraph = {
        "id": sid,
        "name": name,
        "inputNode": {"id": -10},
        "outputNode": {"id": -20},
        "inputs": [{"name": i["name"], "type": i["type"]} for i in inst_inputs],
        "outputs": [{"name": o["name"], "type": o["type"]} for o in inst_outputs],
        "nodes": [n for n in wf["nodes"] if n["id"] in inside],
        "links": sg_links,
    }
    wf["nodes"] = [n for n in wf["nodes"] if n["id"] not in inside] + [
        {
            "id": instance,
            "type": sid,
            "pos": [0, 0],
            "mode": 0,
            "inputs": inst_inputs,
            "outputs": inst_outputs,
        }
    ]
    wf["links"] = outer_links
    wf["definitions"] = {"subgraphs": [subgraph]}
    return wf, instance


def test_a_subgraph_of_real_nodes_imports_as_a_pipeline_computing_the_stored_prompt(
    registry: Registry,
) -> None:
    """The hires pass of ComfyUI's 2-pass example (LatentUpscale, KSampler, VAEDecode) made a subgraph: it
    imports as a pipeline whose expansion is the prompt ComfyUI stored, the moved nodes under the instance's
    id, as ComfyUI's frontend names them."""
    example = json.loads((DATA / "2_pass_txt2img__hiresfix_latent_workflow.json").read_text(encoding="utf-8"))
    inside = {10, 11, 13}
    data, instance = wrap_in_subgraph(example["workflow"], inside, "9f2e-hires", "Hires fix")
    wf = from_comfy_ui(data, registry)
    assert wf.nodes[str(instance)].type == "pipeline:Hires_fix"
    definition = wf.definitions["Hires_fix"]
    assert {n["type"] for n in definition["nodes"].values()} == {"LatentUpscale", "KSampler", "VAEDecode"}
    assert {p["type"] for p in definition["parameters"].values()} == {
        "LATENT",
        "MODEL",
        "CONDITIONING",
        "VAE",
    }
    assert [o["type"] for o in definition["outputs"].values()] == ["IMAGE"]

    def moved(nid: str) -> str:
        return f"{instance}:{nid}" if int(nid) in inside else nid

    expected = {}
    for nid, (type_name, inputs) in normalised(example["prompt"]).items():
        relinked = {k: [moved(v[0]), v[1]] if isinstance(v, list) else v for k, v in inputs.items()}
        expected[moved(nid)] = (type_name, relinked)
    assert normalised(to_comfy_api(wf, registry)) == expected
