"""ComfyUI's protocol as its clients expect it: the order of a prompt's messages (a fully cached re-run
included, which must reach a client that learns the prompt id only from the reply to ``POST /prompt``),
latent previews (none unless ``--preview-method``; event 4 frames with metadata after the
``feature_flags`` handshake), every route both bare and under ``/api``, ``/ws`` without a ``clientId``,
the history of an interrupted prompt, ComfyUI's error types, and nodes that reach no output.

Most tests use the shared server (started with ``--preview-method latent2rgb``); those that need to reach
inside the server, or its defaults, use one running in this process.
"""

from __future__ import annotations

import argparse
import json
import struct
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import Match
from websockets.sync.client import ClientConnection, connect

from atelier.engine.server.app import Settings, create_app
from atelier.engine.server.plugin import _args as serve_args
from atelier.engine.server.service import Services
from tests.server.harness import Server, comfy_prompt, engine_in, follow_comfy, free_port, served_in_thread

PROMPT_NODES = {"3", "4", "5", "6", "7", "8", "9"}


@dataclass
class InProcess:
    base: str
    ws_base: str
    app: FastAPI
    services: Services


@pytest.fixture(scope="module")
def inproc(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[InProcess]:
    """A server in this process with the default settings (no ``--preview-method``)."""
    root = tmp_path_factory.mktemp("comfy-protocol")
    engine = engine_in(root, models_dir)
    port = free_port()
    app = create_app(engine, Settings(port=port, database=root / "atelier.db"))
    with served_in_thread(app, port, "uvicorn-comfy-protocol"):
        yield InProcess(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", app, app.state.services)


def greeting(ws: ClientConnection) -> dict[str, Any]:
    first = json.loads(ws.recv(timeout=10))
    assert first["type"] == "status", first
    return first["data"]


def handshake(ws: ClientConnection, flags: dict[str, Any]) -> dict[str, Any]:
    """Send the feature flags as the first message; the server's flags come back."""
    ws.send(json.dumps({"type": "feature_flags", "data": flags}))
    for raw in iter(lambda: ws.recv(timeout=10), None):
        m = json.loads(raw)
        if m["type"] == "feature_flags":
            return m["data"]
    raise AssertionError("unreachable")


def queue(http: httpx.Client, prompt: dict[str, Any], client_id: str | None, path: str = "/prompt") -> str:
    r = http.post(path, json={"prompt": prompt, "client_id": client_id})
    assert r.status_code == 200, r.text
    return r.json()["prompt_id"]


def kinds_of(msgs: list[Any]) -> list[str]:
    return [m["type"] for m in msgs if isinstance(m, dict) and m["type"] != "status"]


# -- a fully cached re-run ---------------------------------------------------------------------------


def test_a_fully_cached_rerun_reaches_a_client_that_learns_its_id_from_the_reply(inproc: InProcess) -> None:
    client_id = uuid.uuid4().hex
    prompt = comfy_prompt(seed=4321, prefix="cached_rerun")
    jobs = inproc.services.jobs
    with (
        httpx.Client(base_url=inproc.base, timeout=60) as http,
        connect(f"{inproc.ws_base}/ws?clientId={client_id}", open_timeout=10) as ws,
    ):
        greeting(ws)
        first = queue(http, prompt, client_id)
        first_msgs = [m for m in follow_comfy(ws, first) if isinstance(m, dict)]
        saved = [m["data"] for m in first_msgs if m["type"] == "executed"]
        assert [d["node"] for d in saved] == ["9"]

        # The worst case, made certain: the job has finished, and the loop had every chance to send its
        # messages, before the reply to POST /prompt goes out. Whatever the client got by then it would
        # have dropped (it cannot know the prompt id yet).
        early: list[Any] = []
        submit = jobs.submit

        def submit_and_finish(*args: Any, **kw: Any) -> Any:
            out = submit(*args, **kw)
            deadline = time.monotonic() + 30
            while jobs.get(out.id).job.status in ("queued", "running"):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            try:
                while True:
                    early.append(ws.recv(timeout=0.5))
            except TimeoutError:
                pass
            return out

        jobs.submit = submit_and_finish  # type: ignore[method-assign]
        try:
            again = queue(http, prompt, client_id)
        finally:
            jobs.submit = submit  # type: ignore[method-assign]
        assert jobs.get(again).job.status == "success"
        assert [json.loads(m)["type"] for m in early] == ["status"] * len(early)
        msgs = [m for m in follow_comfy(ws, again) if isinstance(m, dict)]

    events = [m for m in msgs if m["type"] != "status"]
    assert kinds_of(events) == [
        "execution_start",
        "execution_cached",
        "executed",
        "execution_success",
        "executing",
    ]
    assert all(e["data"]["prompt_id"] == again for e in events)
    assert set(events[1]["data"]["nodes"]) == PROMPT_NODES
    cached_output = events[2]["data"]
    assert cached_output["node"] == "9" and cached_output["display_node"] == "9"
    assert cached_output["output"] == saved[0]["output"]  # the images the first run saved
    assert events[-1]["data"] == {"node": None, "prompt_id": again}


def test_execution_cached_follows_execution_start_every_time(server: Server, http: httpx.Client) -> None:
    """Even when nothing comes from the cache (an empty list), and before the first ``executing``."""
    client_id = uuid.uuid4().hex
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "color": 7}}}
    prompt["2"] = {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
    with server.ws(f"clientId={client_id}") as ws:
        greeting(ws)
        prompt_id = queue(http, prompt, client_id)
        events = [m for m in follow_comfy(ws, prompt_id) if isinstance(m, dict) and m["type"] != "status"]
    kinds = kinds_of(events)
    assert kinds[:3] == ["execution_start", "execution_cached", "executing"], kinds
    assert events[1]["data"]["nodes"] == [] and events[1]["data"]["prompt_id"] == prompt_id


# -- previews ----------------------------------------------------------------------------------------


def test_no_previews_unless_a_preview_method_is_given(inproc: InProcess) -> None:
    parser = argparse.ArgumentParser()
    serve_args(parser)
    assert parser.parse_args([]).preview_method == "none"
    assert parser.parse_args(["--preview-method", "latent2rgb"]).preview_method == "latent2rgb"
    assert Settings().preview_method == "none"

    client_id = uuid.uuid4().hex
    with (
        httpx.Client(base_url=inproc.base, timeout=60) as http,
        connect(f"{inproc.ws_base}/ws?clientId={client_id}", open_timeout=10) as ws,
        connect(f"{inproc.ws_base}/atelier/v1/ws", open_timeout=10) as atelier,
    ):
        greeting(ws)
        handshake(ws, {"supports_preview_metadata": True})
        prompt_id = queue(http, comfy_prompt(seed=77, steps=3, prefix="no_previews"), client_id)
        msgs = follow_comfy(ws, prompt_id)
        heard: list[Any] = []
        for raw in iter(lambda: atelier.recv(timeout=10), None):
            heard.append(raw)
            if isinstance(raw, str) and json.loads(raw).get("type") == "job_finished":
                break
    assert [m["data"]["value"] for m in msgs if isinstance(m, dict) and m["type"] == "progress"] == [1, 2, 3]
    assert not [m for m in msgs if isinstance(m, bytes)]
    assert not [m for m in heard if isinstance(m, bytes)]


def parse_metadata_preview(frame: bytes) -> tuple[int, dict[str, Any], bytes]:
    kind, n = struct.unpack(">II", frame[:8])
    return kind, json.loads(frame[8 : 8 + n]), frame[8 + n :]


def test_preview_frames_with_metadata_after_the_feature_flags_handshake(
    server: Server, http: httpx.Client
) -> None:
    client_id = uuid.uuid4().hex
    with server.ws(f"clientId={client_id}") as modern, server.ws(f"clientId={client_id}") as legacy:
        greeting(modern)
        greeting(legacy)
        flags = handshake(modern, {"supports_preview_metadata": True, "max_upload_size": 5})
        assert flags == {"supports_preview_metadata": True, "max_upload_size": 1024 * 1024}
        handshake(legacy, {"supports_preview_metadata": "yes"})  # only a literal true counts
        prompt_id = queue(http, comfy_prompt(seed=88, steps=2, prefix="metadata_previews"), client_id)
        new = [m for m in follow_comfy(modern, prompt_id) if isinstance(m, bytes)]
        old = [m for m in follow_comfy(legacy, prompt_id) if isinstance(m, bytes)]
    assert new and len(new) == len(old)
    for frame, plain in zip(new, old, strict=True):
        kind, meta, image = parse_metadata_preview(frame)
        assert kind == 4
        assert meta == {
            "node_id": "3",
            "prompt_id": prompt_id,
            "display_node_id": "3",
            "parent_node_id": None,
            "real_node_id": "3",
            "image_type": "image/jpeg",
        }
        assert image[:2] == b"\xff\xd8"
        assert struct.unpack(">II", plain[:8]) == (1, 1) and plain[8:] == image


# -- routes and the websocket ------------------------------------------------------------------------

COMFY_ROUTES = {
    ("GET", "/prompt"),
    ("POST", "/prompt"),
    ("GET", "/queue"),
    ("POST", "/queue"),
    ("POST", "/interrupt"),
    ("POST", "/free"),
    ("GET", "/history"),
    ("GET", "/history/{prompt_id}"),
    ("POST", "/history"),
    ("GET", "/object_info"),
    ("GET", "/object_info/{node_class}"),
    ("GET", "/embeddings"),
    ("GET", "/system_stats"),
    ("GET", "/view"),
    ("POST", "/upload/image"),
    ("POST", "/upload/mask"),
    ("WS", "/ws"),
}


def routed(app: FastAPI, method: str, path: str) -> bool:
    """Whether a request (or websocket handshake) for ``path`` reaches one of the app's routes."""
    kind = "websocket" if method == "WS" else "http"
    scope = {"type": kind, "path": path, "method": "GET" if kind == "websocket" else method, "root_path": ""}
    return any(r.matches(scope)[0] == Match.FULL for r in app.router.routes)


def test_every_comfy_route_is_served_bare_and_under_api(inproc: InProcess) -> None:
    app = inproc.app
    for method, path in COMFY_ROUTES:
        concrete = path.replace("{prompt_id}", "p1").replace("{node_class}", "KSampler")
        assert routed(app, method, concrete), (method, concrete)
        assert routed(app, method, "/api" + concrete), (method, "/api" + concrete)
    # Atelier's own API moved to /atelier/v1, where it cannot meet ComfyUI's routes
    assert routed(app, "GET", "/atelier/v1/jobs/x") and routed(app, "WS", "/atelier/v1/ws")
    assert not routed(app, "GET", "/api/system")  # /api/jobs/{id} is ComfyUI's jobs API now (app_routes.py)
    schema = httpx.get(inproc.base + "/openapi.json").json()["paths"]
    assert "/prompt" in schema and "/atelier/v1/jobs" in schema
    assert not [p for p in schema if p.startswith("/api/")]  # the twins stay out of the schema


def test_both_prefixes_answer_alike(server: Server, http: httpx.Client) -> None:
    client_id = uuid.uuid4().hex
    with server.ws(path="/api/ws", query=f"clientId={client_id}") as ws:
        assert greeting(ws)["sid"] == client_id
        prompt_id = queue(http, comfy_prompt(seed=5, prefix="api_prefix"), client_id, path="/api/prompt")
        kinds = kinds_of(follow_comfy(ws, prompt_id))
    assert kinds[0] == "execution_start" and kinds[-2:] == ["execution_success", "executing"]
    image = http.get(f"/history/{prompt_id}").json()[prompt_id]["outputs"]["9"]["images"][0]
    for path, params in [
        ("/prompt", None),
        ("/queue", None),
        (f"/history/{prompt_id}", None),
        ("/history", {"max_items": 1}),
        ("/object_info/KSampler", None),
        ("/object_info/NoSuchNode", None),
        ("/embeddings", None),
    ]:
        plain, twin = http.get(path, params=params), http.get("/api" + path, params=params)
        assert plain.status_code == twin.status_code == 200, path
        assert plain.json() == twin.json(), path
    assert http.get("/api/object_info").json().keys() == http.get("/object_info").json().keys()
    assert http.get("/api/system_stats").json()["devices"][0]["type"] == "cpu"
    view = {"filename": image["filename"], "type": "output"}
    assert http.get("/api/view", params=view).content == http.get("/view", params=view).content
    assert http.get("/api/prompt").json() == {"exec_info": {"queue_remaining": 0}}
    up = http.post("/api/upload/image", files={"image": ("twin.png", b"\x89PNG\r\n\x1a\n" + b"0" * 8)})
    assert up.status_code == 400  # not an image: refused alike on both prefixes
    assert (
        http.post("/upload/image", files={"image": ("twin.png", b"\x89PNG\r\n\x1a\n" + b"0" * 8)}).json()
        == up.json()
    )
    for path in ("/queue", "/history", "/interrupt", "/free"):
        assert http.post("/api" + path, json={}).json() == http.post(path, json={}).json() == {}, path
    assert http.post("/api/history", json={"delete": [prompt_id]}).json() == {}
    assert http.get(f"/history/{prompt_id}").json() == {}


def test_ws_without_client_id_gets_a_session_id(server: Server, http: httpx.Client) -> None:
    for path in ("/ws", "/api/ws"):
        with server.ws(path=path) as ws, server.ws(path=path) as other:
            sid = greeting(ws)["sid"]
            assert len(sid) == 32 and int(sid, 16) >= 0 and greeting(other)["sid"] != sid
            prompt_id = queue(http, comfy_prompt(seed=6, prefix="sid"), sid)
            kinds = kinds_of(follow_comfy(ws, prompt_id))
            assert kinds[0] == "execution_start" and "execution_success" in kinds
            # queue changes reach every client, without a sid (only the greeting names the session)
            handshake(other, {})
            statuses = []
            try:
                while True:
                    m = json.loads(other.recv(timeout=1))
                    assert m["type"] == "status", m  # not this prompt's messages
                    statuses.append(m["data"])
            except TimeoutError:
                pass
            assert all("sid" not in s for s in statuses)


# -- history and errors ------------------------------------------------------------------------------


def test_an_interrupted_prompt_says_so_in_its_history(server: Server, http: httpx.Client) -> None:
    client_id = uuid.uuid4().hex
    with server.ws(f"clientId={client_id}") as ws:
        long = queue(http, comfy_prompt(seed=991, steps=200, size=128), client_id)
        for raw in iter(lambda: ws.recv(timeout=30), None):
            if isinstance(raw, str) and json.loads(raw)["type"] == "progress":
                break
        assert http.post("/api/interrupt").json() == {}
        follow_comfy(ws, long)
    status = http.get(f"/history/{long}").json()[long]["status"]
    assert status["status_str"] == "error" and status["completed"] is False
    kinds = [m[0] for m in status["messages"]]
    assert kinds == ["execution_start", "execution_cached", "execution_interrupted"]
    stopped = status["messages"][-1][1]
    assert stopped["prompt_id"] == long and stopped["node_id"] == "3" and stopped["node_type"] == "KSampler"
    assert {"4", "5", "6", "7"} <= set(stopped["executed"]) and "3" not in stopped["executed"]


def test_refusals_carry_comfyui_error_types(http: httpx.Client) -> None:
    bad = comfy_prompt()
    bad["4"]["inputs"]["ckpt_name"] = "nowhere.safetensors"
    bad["3"]["inputs"]["steps"] = 0
    bad["3"]["inputs"]["cfg"] = 10_000
    del bad["6"]["inputs"]["clip"]
    r = http.post("/prompt", json={"prompt": bad})
    assert r.status_code == 400
    body = r.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["error"]["message"] == "Prompt outputs failed validation"
    assert "nowhere.safetensors" in body["error"]["details"]
    errs = {
        nid: [(e["type"], e["code"], e["extra_info"].get("input_name")) for e in v["errors"]]
        for nid, v in body["node_errors"].items()
    }
    assert errs["4"] == [("value_not_in_list", "not_in_choices", "ckpt_name")]
    assert sorted(errs["3"]) == [
        ("value_bigger_than_max", "out_of_range", "cfg"),
        ("value_smaller_than_min", "out_of_range", "steps"),
    ]
    assert errs["6"] == [("required_input_missing", "missing_input", "clip")]
    assert {v["dependent_outputs"] == ["9"] for v in body["node_errors"].values()} == {True}
    assert body["node_errors"]["4"]["class_type"] == "CheckpointLoaderSimple"

    r = http.post("/prompt", json={"prompt": {"1": {"class_type": "EmptyLatentImage", "inputs": {}}}})
    assert r.status_code == 400 and r.json()["error"]["type"] == "prompt_no_outputs"
    r = http.post("/api/prompt", json={"prompt": comfy_prompt(), "prompt_id": "not-a-uuid"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_prompt_id"


def test_a_node_that_reaches_no_output_is_a_warning(server: Server, http: httpx.Client) -> None:
    prompt = comfy_prompt(seed=31, prefix="dangling")
    prompt["20"] = {"class_type": "CLIPTextEncode", "inputs": {"text": 5}}  # no clip, a wrong text
    prompt["21"] = {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["99", 0]}}
    client_id = uuid.uuid4().hex
    chosen = str(uuid.uuid4())
    with server.ws(f"clientId={client_id}") as ws:
        r = http.post("/prompt", json={"prompt": prompt, "client_id": client_id, "prompt_id": chosen})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["prompt_id"] == chosen
        kinds = kinds_of(follow_comfy(ws, chosen))
    assert "execution_success" in kinds
    warned = body["node_errors"]
    assert set(warned) == {"20", "21"}
    types20 = sorted(e["type"] for e in warned["20"]["errors"])
    assert types20 == ["invalid_input_type", "required_input_missing"]
    assert [e["type"] for e in warned["21"]["errors"]] == ["bad_linked_input"]
    assert all("reaches no output" in e["details"] for v in warned.values() for e in v["errors"])
    assert warned["20"]["dependent_outputs"] == []
    # the same id again is refused; an unknown node type is refused wherever it is
    again = http.post("/prompt", json={"prompt": comfy_prompt(), "prompt_id": chosen})
    assert again.status_code == 400 and again.json()["error"]["type"] == "invalid_prompt_id"
    prompt["22"] = {"class_type": "NoSuchNode", "inputs": {}}
    refused = http.post("/prompt", json={"prompt": prompt})
    assert refused.status_code == 400 and refused.json()["error"]["type"] == "missing_node_type"
