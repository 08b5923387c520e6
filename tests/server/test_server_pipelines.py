"""The pipeline library over HTTP: listed with interfaces, described, and run like a function."""

from __future__ import annotations

import json

import httpx

from tests.server.harness import load_workflow, wait_job


def test_pipelines_are_listed_with_their_interfaces(http: httpx.Client) -> None:
    rows = {r["name"]: r for r in http.get("/atelier/v1/pipelines").json()}
    assert {"portrait", "fix_faces", "upscale_image", "portrait_full"} <= set(rows)
    portrait = rows["portrait"]
    assert portrait["version"] == "1.0.0" and portrait["versions"] == ["1.0.0"]
    face = rows["fix_faces"]["interface"]
    assert face["inputs"]["picture"] == {
        "type": "IMAGE",
        "description": face["inputs"]["picture"]["description"],
        "socket": True,
        "required": False,
    }
    assert face["outputs"]["image"]["type"] == "IMAGE"
    one = http.get("/atelier/v1/pipelines/portrait", params={"version": "1.0.0"}).json()
    assert one["interface"]["inputs"]["seed"]["type"] == "INT" and one["workflow"]["nodes"]["sampler"]
    missing = http.get("/atelier/v1/pipelines/nothing")
    assert missing.status_code == 404 and "no pipeline 'nothing'" in missing.json()["error"]
    too_new = http.get("/atelier/v1/pipelines/portrait", params={"version": "2.0.0"})
    assert too_new.status_code == 404 and "1.0.0 is a major change" in too_new.json()["error"]


def test_a_pipeline_runs_with_a_json_body_of_input_values(http: httpx.Client) -> None:
    inputs = {"checkpoint": "tiny15.safetensors", "steps": 2, "width": 64, "height": 64, "seed": 3}
    r = http.post("/atelier/v1/pipelines/portrait/jobs", json={"inputs": inputs, "version": "1.0.0"})
    assert r.status_code == 201, r.text
    job = wait_job(http, r.json()["id"])
    assert job["status"] == "success" and job["overrides"]["seed"] == 3
    assert job["outputs"]["save"]["images"][0]["filename"].endswith(".png")
    bad = http.post("/atelier/v1/pipelines/portrait/jobs", json={"inputs": {**inputs, "steps": 0}})
    assert bad.status_code == 400
    assert any(e["input"] == "steps" for e in bad.json()["node_errors"])
    assert http.post("/atelier/v1/pipelines/nothing/jobs", json={"inputs": {}}).status_code == 404


def test_the_catalogue_offers_pipelines_as_node_types(http: httpx.Client) -> None:
    nodes = http.get("/atelier/v1/nodes").json()
    fix = nodes["pipeline:fix_faces"]
    assert fix["category"] == "pipelines" and fix["version"] == "1.0.0" and fix["output_node"] is True
    inputs = {i["name"]: i for i in fix["inputs"]}
    assert inputs["picture"]["type"] == "IMAGE" and inputs["picture"]["optional"] is True
    assert "tiny15.safetensors" in inputs["checkpoint"]["choices"]  # from the loader input it targets
    assert inputs["denoise"]["default"] == 0.4 and inputs["denoise"]["widget"] is True
    assert fix["outputs"] == [
        {"name": "image", "type": "IMAGE", "description": fix["outputs"][0]["description"]}
    ]
    # ComfyUI clients see only real node types
    assert not any(k.startswith("pipeline:") for k in http.get("/object_info").json())


def test_a_canvas_graph_using_pipeline_nodes_runs(http: httpx.Client) -> None:
    """What the canvas submits after adding two pipeline nodes from the catalogue and linking them."""
    wf = {
        "format": "atelier/workflow",
        "version": 1,
        "nodes": {
            "1": {
                "type": "pipeline:portrait",
                "version": "1.0.0",
                "inputs": {"checkpoint": "tiny15.safetensors", "steps": 2, "width": 64, "height": 64},
            },
            "2": {
                "type": "pipeline:upscale_image",
                "version": "1.0.0",
                "inputs": {"picture": {"node": "1", "output": "image"}, "upscale_model": "nothing.pth"},
            },
        },
    }
    r = http.post("/atelier/v1/jobs", json={"workflow": wf})
    assert r.status_code == 400  # no upscale model here: the inner loader says so, by its path
    errs = r.json()["node_errors"]
    assert any(e["node"] == "2:upscaler" and e["input"] == "model_name" for e in errs), errs
    del wf["nodes"]["2"]
    r = http.post("/atelier/v1/jobs", json={"workflow": wf})
    assert r.status_code == 201, r.text
    job = wait_job(http, r.json()["id"])
    assert job["status"] == "success" and "1:save" in job["outputs"]


def test_a_pipeline_saved_over_http_is_installed_and_offered_as_a_node(http: httpx.Client, server) -> None:
    """POST /pipelines installs into the user's library folder (./pipelines here), never over a version."""
    wf = load_workflow("portrait.json")
    wf["metadata"] = {**wf["metadata"], "name": "my portrait", "version": "1.0.0"}
    r = http.post("/atelier/v1/pipelines", json={"name": "my_portrait", "workflow": wf})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "my_portrait" and body["version"] == "1.0.0" and body["versions"] == ["1.0.0"]
    assert body["interface"]["inputs"]["seed"]["type"] == "INT"
    path = server.root / "pipelines" / "my_portrait@1.0.0.json"
    assert json.loads(path.read_text())["nodes"] == wf["nodes"]
    node = http.get("/atelier/v1/nodes").json()["pipeline:my_portrait"]
    assert node["display_name"] == "my portrait" and node["version"] == "1.0.0"
    # the same version again is a conflict, and the file is left as it was
    wf2 = {**wf, "metadata": {**wf["metadata"], "description": "changed"}}
    again = http.post("/atelier/v1/pipelines", json={"name": "my_portrait", "workflow": wf2})
    assert again.status_code == 409
    assert "'my_portrait' 1.0.0 is already installed; raise its version" in again.json()["error"]
    assert json.loads(path.read_text())["metadata"].get("description") != "changed"
    # a raised version installs next to it; the catalogue describes the newest
    wf2["metadata"]["version"] = "1.1.0"
    r = http.post("/atelier/v1/pipelines", json={"name": "my_portrait", "workflow": wf2})
    assert r.status_code == 201 and r.json()["versions"] == ["1.0.0", "1.1.0"]
    assert http.get("/atelier/v1/nodes").json()["pipeline:my_portrait"]["version"] == "1.1.0"


def test_saving_a_pipeline_refuses_bad_names_and_workflows(http: httpx.Client) -> None:
    wf = load_workflow("portrait.json")
    bad_name = http.post("/atelier/v1/pipelines", json={"name": "../evil", "workflow": wf})
    assert bad_name.status_code == 400 and "pipeline name '../evil'" in bad_name.json()["error"]
    no_version = {**wf, "metadata": {"name": "x"}}
    r = http.post("/atelier/v1/pipelines", json={"name": "unversioned", "workflow": no_version})
    assert r.status_code == 400 and "has no version" in r.json()["error"]
    r = http.post("/atelier/v1/pipelines", json={"name": "broken", "workflow": {"nodes": 3}})
    assert r.status_code == 400 and "'broken' is not a workflow" in r.json()["error"]
