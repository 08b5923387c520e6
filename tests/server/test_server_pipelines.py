"""The pipeline library over HTTP: listed with interfaces, described, and run like a function."""

from __future__ import annotations

import httpx

from tests.server.harness import wait_job


def test_pipelines_are_listed_with_their_interfaces(http: httpx.Client) -> None:
    rows = {r["name"]: r for r in http.get("/api/pipelines").json()}
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
    one = http.get("/api/pipelines/portrait", params={"version": "1.0.0"}).json()
    assert one["interface"]["inputs"]["seed"]["type"] == "INT" and one["workflow"]["nodes"]["sampler"]
    missing = http.get("/api/pipelines/nothing")
    assert missing.status_code == 404 and "no pipeline 'nothing'" in missing.json()["error"]
    too_new = http.get("/api/pipelines/portrait", params={"version": "2.0.0"})
    assert too_new.status_code == 404 and "1.0.0 is a major change" in too_new.json()["error"]


def test_a_pipeline_runs_with_a_json_body_of_input_values(http: httpx.Client) -> None:
    inputs = {"checkpoint": "tiny15.safetensors", "steps": 2, "width": 64, "height": 64, "seed": 3}
    r = http.post("/api/pipelines/portrait/jobs", json={"inputs": inputs, "version": "1.0.0"})
    assert r.status_code == 201, r.text
    job = wait_job(http, r.json()["id"])
    assert job["status"] == "success" and job["overrides"]["seed"] == 3
    assert job["outputs"]["save"]["images"][0]["filename"].endswith(".png")
    bad = http.post("/api/pipelines/portrait/jobs", json={"inputs": {**inputs, "steps": 0}})
    assert bad.status_code == 400
    assert any(e["input"] == "steps" for e in bad.json()["node_errors"])
    assert http.post("/api/pipelines/nothing/jobs", json={"inputs": {}}).status_code == 404
