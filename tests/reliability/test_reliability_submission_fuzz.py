"""A bounded property-based fuzz of workflow submission: the ComfyUI txt2img graph, mutated (inputs set to
arbitrary JSON values, inputs dropped, node types changed, links pointed anywhere, nodes added or removed),
goes to Atelier's ``validate`` and, when it does not validate, to ComfyUI's ``/prompt``. Neither may answer
a 5xx; validation's verdict lists errors that name nodes of the workflow; a graph ``validate`` refuses is
refused by ``/prompt`` too (a 400 in ComfyUI's shape) and never queued.

Then the numbers: graphs whose sampler settings are drawn from everything JSON can carry (booleans, huge
integers, subnormal and non-finite floats, any sampler and scheduler) either fail validation naming the
input or, once queued, run to success: a value that validates also runs.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import hypothesis
import hypothesis.strategies as st

from tests.reliability import budget
from tests.reliability.conftest import LiveServer
from tests.reliability.contract import api_path, error_shape_problem, submit, wait
from tests.server.harness import comfy_prompt

BASE = comfy_prompt(steps=1, size=64)
NODE_TYPES = ["KSampler", "SaveImage", "VAEDecode", "EmptyLatentImage", "CLIPTextEncode", "NoSuchNode", ""]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True)
    | st.sampled_from([0, -1, 1e-320, 2**64, 1.5, "", "euler", "../x", "\x00"])
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
links = st.tuples(st.sampled_from([*BASE, "999", ""]), st.integers(min_value=-1, max_value=4)).map(list)


@st.composite
def mutated_graphs(draw: st.DrawFn) -> dict[str, Any]:
    graph = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        nid = draw(st.sampled_from(sorted(graph) or ["new"]))
        node = graph.setdefault(nid, {"class_type": "KSampler", "inputs": {}})
        inputs = node.setdefault("inputs", {}) if isinstance(node.get("inputs"), dict) else {}
        kind = draw(st.sampled_from(["value", "value", "link", "drop", "type", "add", "remove"]))
        names = sorted(inputs) or ["x"]
        if kind == "value":
            inputs[draw(st.sampled_from([*names, "extra"]))] = draw(json_values)
        elif kind == "link":
            inputs[draw(st.sampled_from(names))] = draw(links)
        elif kind == "drop" and inputs:
            inputs.pop(draw(st.sampled_from(names)))
        elif kind == "type":
            node["class_type"] = draw(st.sampled_from(NODE_TYPES) | st.text(max_size=8))
        elif kind == "add":
            graph[draw(st.text(min_size=1, max_size=4))] = {"class_type": draw(st.sampled_from(NODE_TYPES))}
        elif kind == "remove":
            graph.pop(nid, None)
    return graph


def post_json(http: Any, path: str, body: Any) -> Any:
    # json.dumps writes NaN and Infinity as JavaScript does; the server must refuse them cleanly
    return http.post(path, content=json.dumps(body), headers={"content-type": "application/json"})


SETTINGS = dict(
    deadline=None, derandomize=True, database=None, suppress_health_check=list(hypothesis.HealthCheck)
)


def test_mutated_workflows_are_judged_and_refused_cleanly(live: LiveServer) -> None:
    validate = api_path(live.app, "post", "/validate")
    queue = api_path(live.app, "get", "/queue")
    verdicts = {"ok": 0, "refused": 0}
    with live.client() as http:

        @hypothesis.settings(max_examples=budget.examples("submission"), **SETTINGS)
        @hypothesis.given(graph=mutated_graphs())
        def judged(graph: dict[str, Any]) -> None:
            r = post_json(http, validate, {"workflow": graph})
            assert r.status_code == 200, (r.status_code, r.text[:500])
            out = r.json()
            errors = [e for e in out["errors"] if e["severity"] == "error"]
            assert out["ok"] == (not errors)
            assert all(e["node"] is None or e["node"] in graph for e in out["errors"]), out
            assert all(e["message"] for e in out["errors"])
            if out["ok"]:
                verdicts["ok"] += 1
                return
            verdicts["refused"] += 1
            comfy = post_json(http, "/prompt", {"prompt": graph})
            assert error_shape_problem(comfy.status_code, comfy.headers, comfy.content) is None
            assert comfy.status_code == 400 and "prompt_id" not in comfy.json()

        judged()
        assert http.get(queue).json()["queued"] == []  # nothing refused was queued
    print(f"submission fuzz: {verdicts}")
    assert verdicts["refused"] > 0 and verdicts["ok"] > 0, verdicts  # the mutations reach both verdicts


SAMPLER_VALUES = {
    "seed": st.one_of(st.integers(min_value=-5, max_value=2**64 + 5), st.booleans(), st.floats()),
    "cfg": st.one_of(st.floats(min_value=-1, max_value=101, allow_subnormal=True), st.booleans()),
    "denoise": st.one_of(
        st.floats(min_value=-0.1, max_value=1.1, allow_subnormal=True),
        st.sampled_from([1e-320, 5e-324, 1e-9, 1e-5, 1e-3, 0.0]),
        st.booleans(),
    ),
    "steps": st.one_of(st.integers(min_value=0, max_value=2), st.just(True)),
    "sampler_name": st.sampled_from(["euler", "euler_ancestral", "dpmpp_2m", "ddim", "lcm", "nope", 1]),
    "scheduler": st.sampled_from(["normal", "karras", "exponential", "sgm_uniform", "simple", "beta", "x"]),
}


@st.composite
def sampler_values(draw: st.DrawFn) -> dict[str, Any]:
    """One to three of KSampler's widget values, drawn from everything JSON can carry."""
    keys = draw(st.lists(st.sampled_from(sorted(SAMPLER_VALUES)), min_size=1, max_size=3, unique=True))
    return {k: draw(SAMPLER_VALUES[k]) for k in keys}


def test_sampler_values_that_validate_also_run(live: LiveServer) -> None:
    validate = api_path(live.app, "post", "/validate")
    ran: list[dict[str, Any]] = []
    refused: list[str] = []
    with live.client() as http:

        @hypothesis.settings(max_examples=budget.examples("submission") // 4, **SETTINGS)
        @hypothesis.given(values=sampler_values())
        def validated_runs(values: dict[str, Any]) -> None:
            graph = copy.deepcopy(BASE)
            graph["3"]["inputs"].update(values)
            out = post_json(http, validate, {"workflow": graph}).json()
            if not out["ok"]:
                names = {e["input"] for e in out["errors"] if e["severity"] == "error"}
                assert names and names <= set(values), out  # refused naming a sampler input
                refused.extend(names)
                return
            job = submit(live.app, http, {"workflow": graph})
            view = wait(live.app, http, job)
            assert view["status"] == "success", (values, view.get("error"))
            ran.append(values)

        validated_runs()
    print(f"sampler values: {len(ran)} ran, refused {sorted(set(refused))}")
    assert ran and refused, (len(ran), refused)
