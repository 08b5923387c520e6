"""Atelier's API and websocket against a real server: job life cycle, event order, failures, interrupt,
cancel, validation errors, the workflow library."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.server.harness import (
    TERMINAL,
    Server,
    follow,
    load_workflow,
    parse_atelier_preview,
    portrait,
    wait_job,
)

PORTRAIT_NODES = {"loader", "positive", "negative", "latent", "sampler", "decode", "save"}


def submit(http: httpx.Client, body: dict) -> dict:
    r = http.post("/atelier/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def reply(ws) -> dict:
    """The next message that is neither a queue notice nor a job event (those may come at any time)."""
    for raw in iter(lambda: ws.recv(timeout=10), None):
        if isinstance(raw, bytes):
            continue
        m = json.loads(raw)
        if m["type"] not in ("queue", "hello") and not isinstance(m.get("job"), str):
            return m
    raise AssertionError("unreachable")


def check_event_order(events: list[dict], job: str) -> None:
    """job_started first, the terminal event last; each executed node's events are contiguous:
    node_started, its progress, then node_finished/node_failed."""
    assert events[0]["type"] == "job_started"
    assert events[-1]["type"] in TERMINAL
    assert all(e["job"] == job for e in events)
    ts = [e["ts"] for e in events]
    assert ts == sorted(ts)
    open_node = None
    for e in events[1:-1]:
        if e["type"] == "node_started":
            assert open_node is None, f"{e['node']} started inside {open_node}"
            open_node = e["node"]
        elif e["type"] == "progress":
            assert e["node"] == open_node
        elif e["type"] in ("node_finished", "node_failed"):
            assert e["node"] == open_node
            open_node = None
        elif e["type"] == "node_cached":
            assert open_node is None
        else:
            raise AssertionError(f"unexpected event {e}")


def test_job_life_cycle_and_event_order(server: Server, http: httpx.Client) -> None:
    with server.ws() as ws:
        hello = json.loads(ws.recv(timeout=10))
        assert hello["type"] == "hello" and "queue_remaining" in hello
        created = submit(http, portrait(seed=101, steps=3))
        assert created["status"] == "queued" and len(created["id"]) == 32 and created["number"] >= 1
        job = created["id"]
        msgs = follow(ws, job)

    events = [m for m in msgs if isinstance(m, dict)]
    previews = [m for m in msgs if isinstance(m, bytes)]
    check_event_order(events, job)
    assert events[0]["workflow"] == "Portrait" and events[0]["nodes"] == 7
    finished = events[-1]
    assert finished["type"] == "job_finished", finished

    started = [e["node"] for e in events if e["type"] == "node_started"]
    cached = [e["node"] for e in events if e["type"] == "node_cached"]
    assert set(started) | set(cached) == PORTRAIT_NODES and not set(started) & set(cached)
    assert {"sampler", "decode", "save"} <= set(started)  # a new seed runs the sampler and after it
    assert started.index("sampler") < started.index("decode") < started.index("save")
    assert finished["executed"] == len(started) and finished["cached"] == len(cached)

    progress = [e for e in events if e["type"] == "progress"]
    assert [p["value"] for p in progress] == [1, 2, 3] and {p["max"] for p in progress} == {3}
    assert previews, "the sampler sends previews"
    for frame in previews:
        header, image = parse_atelier_preview(frame)
        assert header["type"] == "preview" and header["node"] == "sampler" and header["job"] == job
        assert header["format"] == "JPEG" and image[:2] == b"\xff\xd8"

    # the REST view agrees with the events
    view = http.get(f"/atelier/v1/jobs/{job}").json()
    assert view["status"] == "success" and view["error"] is None
    assert view["executed"] == started and sorted(view["cached"]) == sorted(cached)
    assert view["started"] >= view["created"] and view["finished"] >= view["started"]
    assert view["outputs"] == finished["outputs"]
    image = view["outputs"]["save"]["images"][0]
    assert image["type"] == "output" and image["filename"].startswith("portrait_")
    r = http.get(f"/atelier/v1/files/output/{image['filename']}")
    assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert (server.folder("output") / image["filename"]).read_bytes() == r.content
    full = http.get(f"/atelier/v1/jobs/{job}", params={"workflow": "true"}).json()
    assert full["workflow"]["metadata"]["name"] == "Portrait" and full["overrides"]["seed"] == 101

    history = http.get("/atelier/v1/jobs", params={"status": "success", "limit": 500}).json()
    assert job in [j["id"] for j in history["jobs"]] and history["total"] >= 1
    pages = [http.get("/atelier/v1/jobs", params={"offset": i, "limit": 1}).json()["jobs"] for i in range(3)]
    numbers = [page[0]["number"] for page in pages if page]
    assert numbers == sorted(numbers, reverse=True) and len(set(numbers)) == len(numbers)  # newest first

    # the same job again: everything comes from the cache except what must run
    again = submit(http, portrait(seed=101, steps=3))
    view2 = wait_job(http, again["id"])
    assert view2["status"] == "success"
    assert {"loader", "positive", "negative", "latent", "sampler", "decode"} <= set(view2["cached"])
    assert again["number"] > created["number"]


def test_failing_node_fails_its_job_and_the_next_runs(server: Server, http: httpx.Client) -> None:
    with server.ws() as ws:
        ws.recv(timeout=10)
        bad = submit(http, portrait(checkpoint="broken.safetensors", seed=5))
        good = submit(http, portrait(seed=6))
        bad_events = [m for m in follow(ws, bad["id"]) if isinstance(m, dict)]
        good_events = [m for m in follow(ws, good["id"]) if isinstance(m, dict)]

    check_event_order(bad_events, bad["id"])
    failed = bad_events[-1]
    assert failed["type"] == "job_failed"
    assert failed["node"] == "loader" and failed["node_type"] == "CheckpointLoaderSimple"
    assert "loader" in failed["message"] and failed["exception_type"]
    node_failed = [e for e in bad_events if e["type"] == "node_failed"]
    assert [e["node"] for e in node_failed] == ["loader"] and node_failed[0]["message"]

    view = http.get(f"/atelier/v1/jobs/{bad['id']}").json()
    assert view["status"] == "failed"
    assert view["error"]["node"] == "loader" and view["error"]["node_type"] == "CheckpointLoaderSimple"
    assert view["error"]["message"] and view["error"]["exception_type"]
    assert good_events[-1]["type"] == "job_finished"
    assert http.get(f"/atelier/v1/jobs/{good['id']}").json()["status"] == "success"


def test_interrupt_cancel_and_queue(server: Server, http: httpx.Client) -> None:
    with server.ws() as ws:
        ws.recv(timeout=10)
        long = submit(http, portrait(seed=7, steps=200, width=128, height=128))
        after = submit(http, portrait(seed=8))
        doomed = submit(http, portrait(seed=9))
        events = []
        for raw in iter(lambda: ws.recv(timeout=30), None):  # wait until the sampler is stepping
            if isinstance(raw, str) and (e := json.loads(raw)).get("job") == long["id"]:
                events.append(e)
                if e["type"] == "progress":
                    break

        running = http.get(f"/atelier/v1/jobs/{long['id']}").json()
        assert running["status"] == "running" and running["live"]["node"] == "sampler"
        queue = http.get("/atelier/v1/queue").json()
        assert [j["id"] for j in queue["running"]] == [long["id"]]
        assert [j["id"] for j in queue["queued"]] == [after["id"], doomed["id"]]
        assert http.get(f"/atelier/v1/jobs/{after['id']}").json()["status"] == "queued"

        assert http.post(f"/atelier/v1/jobs/{doomed['id']}/cancel").json() == {
            "id": doomed["id"],
            "status": "cancelled",
        }
        r = http.post(f"/atelier/v1/jobs/{doomed['id']}/cancel")
        assert r.status_code == 409 and "cancelled" in r.json()["error"]
        assert http.delete(f"/atelier/v1/jobs/{long['id']}").status_code == 409  # running: not deletable

        assert http.post("/atelier/v1/interrupt").json() == {"interrupted": long["id"]}
        events += [m for m in follow(ws, long["id"]) if isinstance(m, dict)]
        after_events = [m for m in follow(ws, after["id"]) if isinstance(m, dict)]

    check_event_order(events, long["id"])
    assert events[-1]["type"] == "job_interrupted" and events[-1]["node"] == "sampler"
    steps = [e["value"] for e in events if e["type"] == "progress"]
    assert 1 <= len(steps) < 200 and max(steps) < 200  # stopped between sampler steps
    assert not any(e["type"] == "node_finished" and e["node"] == "sampler" for e in events)
    view = http.get(f"/atelier/v1/jobs/{long['id']}").json()
    assert view["status"] == "interrupted" and "sampler" not in view["executed"]

    assert after_events[-1]["type"] == "job_finished"  # the queue goes on
    cancelled = http.get(f"/atelier/v1/jobs/{doomed['id']}").json()
    assert cancelled["status"] == "cancelled" and cancelled["started"] is None and cancelled["executed"] == []
    assert http.post("/atelier/v1/interrupt").json() == {"interrupted": None}
    assert http.post(f"/atelier/v1/jobs/{after['id']}/cancel").status_code == 409

    listed = http.get("/atelier/v1/jobs", params={"status": "cancelled"}).json()
    assert doomed["id"] in [j["id"] for j in listed["jobs"]]
    assert http.delete(f"/atelier/v1/jobs/{doomed['id']}").json() == {"deleted": doomed["id"]}
    assert http.get(f"/atelier/v1/jobs/{doomed['id']}").status_code == 404
    assert http.delete(f"/atelier/v1/jobs/{doomed['id']}").status_code == 404


def test_cancel_as_soon_as_a_job_runs(tmp_path: Path, models_dir: Path) -> None:
    """A cancel that arrives as soon as a job is taken from the queue (its token exists from that moment)
    stops it before the sampler finishes, and the next job runs."""
    srv = Server(tmp_path / "srv", models_dir)
    try:
        srv.start()
        with srv.client() as http:
            job = submit(http, portrait(seed=11))["id"]
            follow_up = submit(http, portrait(seed=12))["id"]
            deadline = time.monotonic() + 30
            while http.get(f"/atelier/v1/jobs/{job}").json()["status"] == "queued":
                assert time.monotonic() < deadline
                time.sleep(0.005)
            r = http.post(f"/atelier/v1/jobs/{job}/cancel")
            assert r.status_code == 200 and r.json() == {"id": job, "status": "interrupting"}, r.text
            view = wait_job(http, job)
            assert view["status"] == "interrupted", view
            assert "sampler" not in view["executed"] and "save" not in view["executed"], view
            assert wait_job(http, follow_up)["status"] == "success"
    finally:
        srv.stop()


def test_priority_runs_first(server: Server, http: httpx.Client) -> None:
    with server.ws() as ws:
        ws.recv(timeout=10)
        blocker = submit(http, portrait(seed=20, steps=200, width=128, height=128))
        for raw in iter(lambda: ws.recv(timeout=30), None):
            if isinstance(raw, str) and json.loads(raw).get("type") == "progress":
                break
        low = submit(http, portrait(seed=21))
        high = {**portrait(seed=22), "priority": 5}
        high = submit(http, high)
        queued = [j["id"] for j in http.get("/atelier/v1/queue").json()["queued"]]
        assert queued == [high["id"], low["id"]]
        http.post(f"/atelier/v1/jobs/{blocker['id']}/cancel")
        order = []
        for raw in iter(lambda: ws.recv(timeout=30), None):
            if isinstance(raw, str) and (e := json.loads(raw)).get("type") == "job_started":
                order.append(e["job"])
                if len(order) == 2:
                    break
    assert order == [high["id"], low["id"]]
    assert wait_job(http, low["id"])["status"] == "success"


BAD_BODIES = [
    (b"{not json", 400),  # a body that does not parse is a 400 like any other bad request (no node_errors)
    (b'{"workflow": "\xff"}', 400),  # not UTF-8
    (b"[" * 100_000, 400),  # nested too deeply
    (b"[1, 2]", 422),
    (b'"workflow"', 422),
    (b'{"workflow": "x"}', 422),
    (b'{"workflow": {}, "priority": "high"}', 422),
    (b'{"workflow": {}, "overrides": []}', 422),
    (b"{}", 422),
    (b'{"workflow": {}}', 400),
    (b'{"workflow": {"a": 5}}', 400),
    (b'{"workflow": {"format": "atelier/workflow", "version": 99, "nodes": {}}}', 400),
    (b'{"workflow": {"format": "atelier/workflow", "version": 1, "nodes": 5}}', 400),
    (b'{"workflow": {"1": {"class_type": "KSampler", "inputs": null}}}', 400),
    (b'{"workflow": {"1": {"class_type": 5, "inputs": {}}}}', 400),
]


@pytest.mark.parametrize("route", ["/atelier/v1/jobs", "/atelier/v1/validate"])
def test_malformed_requests_get_structured_errors(http: httpx.Client, route: str) -> None:
    for body, status in BAD_BODIES:
        r = http.post(route, content=body, headers={"content-type": "application/json"})
        parses = body.startswith(b'{"workflow": {')
        expected = 200 if route == "/atelier/v1/validate" and status == 400 and parses else status
        assert r.status_code == expected, (body, r.status_code, r.text)
        data = r.json()
        if r.status_code == 422:
            assert data["error"] and data["detail"] and all("loc" in d and "msg" in d for d in data["detail"])
        elif r.status_code == 400 and not body.startswith(b'{"workflow": {'):
            assert data["error"].startswith("request body is not valid JSON") and set(data) == {"error"}
        elif r.status_code == 400:
            assert data["error"] and data["node_errors"] and all(e["message"] for e in data["node_errors"])
        else:
            assert data["ok"] is False and data["errors"]
    r = http.post(route, content=b"hello", headers={"content-type": "text/plain"})
    assert r.status_code == 422 and r.json()["error"]


def test_unknown_node_type_and_wrong_types_name_the_node(http: httpx.Client) -> None:
    wf = load_workflow("portrait.json")
    wf["nodes"]["extra"] = {"type": "NoSuchNode", "inputs": {}}
    wf["nodes"]["sampler"]["inputs"]["denoise"] = "much"
    wf["nodes"]["decode"]["inputs"]["vae"] = {"node": "missing", "output": "VAE"}
    r = http.post(
        "/atelier/v1/jobs", json={"workflow": wf, "overrides": {"checkpoint": "tiny15.safetensors"}}
    )
    assert r.status_code == 400
    errors = {(e["node"], e["code"]) for e in r.json()["node_errors"]}
    assert ("extra", "unknown_node_type") in errors
    assert any(node == "sampler" for node, _ in errors)
    assert any(node == "decode" for node, _ in errors)
    denoise = [e for e in r.json()["node_errors"] if e["node"] == "sampler"]
    assert denoise[0]["input"] == "denoise" and denoise[0]["node_type"] == "KSampler"
    assert denoise[0]["code"] == "invalid_type" and "much" in denoise[0]["message"]

    r = http.post("/atelier/v1/jobs", json=portrait(steps=-4, sampler="nosuch", nosuch=1))
    assert r.status_code == 400
    codes = {e["code"] for e in r.json()["node_errors"]}
    assert {"out_of_range", "not_in_choices", "unknown_override"} <= codes
    assert http.get("/atelier/v1/queue").json()["queued"] == [] or all(
        j["status"] == "queued" for j in http.get("/atelier/v1/queue").json()["queued"]
    )
    assert http.post("/atelier/v1/validate", json=portrait()).json() == {"ok": True, "errors": []}


def test_oversize_json_body_is_refused(http: httpx.Client) -> None:
    body = b'{"workflow": {"x": "' + b"a" * (9 * 1024 * 1024) + b'"}}'
    r = http.post("/atelier/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger" in r.json()["error"]


def test_websocket_subscribe_state_and_bad_messages(server: Server, http: httpx.Client) -> None:
    with server.ws() as mine, server.ws() as other:
        for bad, err in [("nonsense", "JSON"), ("[1]", "objects"), ('{"type": "dance"}', "unknown")]:
            mine.send(bad)
            assert err in reply(mine)["error"]
        mine.send(b"\x00\x01binary")  # answered, and the session goes on
        assert "JSON" in reply(mine)["error"]
        mine.send(json.dumps({"type": "subscribe", "jobs": 5}))
        assert "list" in reply(mine)["error"]
        other.send(json.dumps({"type": "subscribe", "jobs": []}))
        assert reply(other) == {"type": "subscribed", "jobs": []}

        wanted = submit(http, portrait(seed=32, steps=200, width=128, height=128))["id"]
        mine.send(json.dumps({"type": "subscribe", "jobs": [wanted]}))
        noise = submit(http, portrait(seed=31))["id"]  # runs after `wanted`; `mine` must not hear of it
        seen: list[str] = []
        state = None
        for raw in iter(lambda: mine.recv(timeout=30), None):
            if isinstance(raw, bytes):
                assert parse_atelier_preview(raw)[0]["job"] == wanted
                continue
            m = json.loads(raw)
            if m["type"] == "subscribed":
                assert m["jobs"] == [wanted]
            elif m["type"] == "state":  # asked for at the first step: the job's live progress
                state = m
                assert http.post(f"/atelier/v1/jobs/{wanted}/cancel").json()["status"] == "interrupting"
            elif m["type"] != "queue":
                assert m["job"] == wanted, m
                seen.append(m["type"])
                if m["type"] == "progress" and seen.count("progress") == 1:
                    mine.send(json.dumps({"type": "state", "job": wanted}))
                if m["type"] in TERMINAL:
                    break
        assert state is not None and state["job"]["id"] == wanted
        assert state["job"]["status"] == "running" and state["job"]["live"]["node"] == "sampler"
        assert state["job"]["live"]["value"] >= 1 and state["job"]["live"]["max"] == 200
        assert seen[0] == "job_started" and seen[-1] == "job_interrupted"

        assert wait_job(http, noise)["status"] == "success"
        mine.send(json.dumps({"type": "state", "job": noise}))  # arrives after anything sent before it
        for raw in iter(lambda: mine.recv(timeout=10), None):
            m = json.loads(raw)
            assert m["type"] in ("queue", "state"), m
            if m["type"] == "state":
                assert m["job"]["id"] == noise and m["job"]["status"] == "success"
                break
        mine.send(json.dumps({"type": "state", "job": "nope"}))
        assert "nope" in reply(mine)["error"]
        other.send(json.dumps({"type": "state", "job": wanted}))  # subscribed to nothing: no events
        for raw in iter(lambda: other.recv(timeout=10), None):
            m = json.loads(raw)
            assert m["type"] in ("hello", "queue", "subscribed", "state"), m
            if m["type"] == "state":
                assert m["job"]["status"] == "interrupted"
                break


def test_library_models_nodes_and_system(http: httpx.Client) -> None:
    wf = load_workflow("portrait.json")
    assert http.put("/atelier/v1/workflows/my portrait", json={"workflow": wf}).json() == {
        "saved": "my portrait"
    }
    assert http.get("/atelier/v1/workflows/my portrait").json() == wf
    listed = http.get("/atelier/v1/workflows").json()["workflows"]
    assert [w["name"] for w in listed if w["name"] == "my portrait"] and listed[0]["description"]
    assert http.put("/atelier/v1/workflows/bad", json={"workflow": {"nodes": 5}}).status_code == 400
    assert http.put("/atelier/v1/workflows/bad", json={"nope": 1}).status_code == 422
    assert http.put("/atelier/v1/workflows/%20padded", json={"workflow": wf}).status_code == 400
    assert http.delete("/atelier/v1/workflows/my portrait").json() == {"deleted": "my portrait"}
    assert http.get("/atelier/v1/workflows/my portrait").status_code == 404
    assert http.delete("/atelier/v1/workflows/my portrait").status_code == 404

    assert http.get("/atelier/v1/models/checkpoints").json() == {
        "kind": "checkpoints",
        "files": ["broken.safetensors", "tiny15.safetensors"],
    }
    assert http.get("/atelier/v1/models/nope").status_code == 404
    assert "checkpoints" in http.get("/atelier/v1/models").json()
    nodes = http.get("/atelier/v1/nodes").json()
    assert {"KSampler", "CheckpointLoaderSimple", "SaveImage"} <= set(nodes)
    assert http.get("/atelier/v1/nodes/KSampler").json()["type"] == "KSampler"
    assert http.get("/atelier/v1/nodes/Nope").status_code == 404
    system = http.get("/atelier/v1/system").json()
    real = [t for t, d in nodes.items() if not d.get("pipeline")]  # the library's pipelines are listed too
    assert system["device"] == "cpu" and system["node_types"] == len(real)
    vram = system["vram"]  # the device budget: none on the CPU unless set; what is loaded, and where
    assert vram["capacity"] is None and vram["device"] == "cpu" and vram["offloads"] == 0
    assert all(m["where"] in ("device", "host") and m["bytes"] > 0 for m in vram["modules"])
    assert http.post("/atelier/v1/cache/clear").json()["cleared_entries"] >= 0
    assert http.get("/atelier/v1/system").json()["cache"]["entries"] == 0
    assert http.post("/atelier/v1/models/unload").json() == {"unloaded": True}
    assert http.get("/atelier/v1/jobs/nope").status_code == 404
    assert http.get("/atelier/v1/jobs", params={"status": "bogus"}).status_code == 422
    assert http.get("/atelier/v1/jobs", params={"limit": 0}).status_code == 422
    huge = http.get("/atelier/v1/jobs", params={"offset": 10**20})
    assert huge.status_code == 200 and huge.json()["jobs"] == []
