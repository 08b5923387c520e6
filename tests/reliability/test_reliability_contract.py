"""The HTTP and websocket contract, point by point: one error shape from every layer (router, body
parsing, routes), ``Allow`` naming every method of a path, documented error responses, booleans that are
not numbers, file names and numbers checked at submission, non-image files served only as downloads, and
websocket messages that cannot be parsed answered rather than dropped."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.reliability.conftest import LiveServer
from tests.reliability.contract import api_path, atelier_ws, error_shape_problem
from tests.server.harness import comfy_prompt


@pytest.fixture()
def http(live: LiveServer) -> Any:
    with live.client() as c:
        yield c


def assert_error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert error_shape_problem(r.status_code, r.headers, r.content) is None
    return dict(r.json())


def test_router_answers_use_the_error_shape_and_allow_lists_every_method(live: LiveServer, http: Any) -> None:
    assert "/nowhere" in assert_error(http.get("/nowhere"), 404)["error"]
    job = api_path(live.app, "get", "/jobs/{job_id}").replace("{job_id}", "x")
    r = http.put(job)
    assert "PUT" in assert_error(r, 405)["error"]
    assert r.headers["allow"] == "GET, DELETE"  # two routes share the path: both methods are named
    r = http.put("/queue")
    assert_error(r, 405)
    assert r.headers["allow"] == "GET, POST"
    r = http.delete(api_path(live.app, "get", "/system"))
    assert_error(r, 405)
    assert r.headers["allow"] == "GET"


BAD_JSON = {
    "not JSON": b"{nope",
    "not UTF-8": b'{"workflow": "\xff\xfe"}',
    "nested too deeply": b"[" * 50_000,
    "an integer of 5000 digits": b'{"workflow": {}, "priority": ' + b"9" * 5000 + b"}",
}


@pytest.mark.parametrize("suffix", ["/jobs", "/validate"])
def test_bodies_that_do_not_parse_are_400s_in_the_error_shape(
    live: LiveServer, http: Any, suffix: str
) -> None:
    path = api_path(live.app, "post", suffix)
    for what, body in BAD_JSON.items():
        r = http.post(path, content=body, headers={"content-type": "application/json"})
        assert assert_error(r, 400)["error"].startswith("request body is not valid JSON"), what
    for body in BAD_JSON.values():  # ComfyUI's /prompt refuses them the same way
        r = http.post("/prompt", content=body, headers={"content-type": "application/json"})
        assert_error(r, 400)
    name = api_path(live.app, "put", "/workflows/{name}").replace("{name}", "x")
    assert_error(
        http.put(name, content=BAD_JSON["not UTF-8"], headers={"content-type": "application/json"}), 400
    )


def test_booleans_are_not_integers(live: LiveServer, http: Any) -> None:
    jobs = api_path(live.app, "post", "/jobs")
    r = http.post(jobs, json={"workflow": comfy_prompt(), "priority": True})
    assert assert_error(r, 422)["detail"][0]["loc"] == ["body", "priority"]
    for node, name, value in [
        ("3", "steps", True),
        ("3", "cfg", False),
        ("3", "seed", True),
        ("5", "width", True),
    ]:
        graph = comfy_prompt()
        graph[node]["inputs"][name] = value
        body = assert_error(http.post(jobs, json={"workflow": graph}), 400)
        assert [(e["node"], e["input"], e["code"]) for e in body["node_errors"]] == [
            (node, name, "invalid_type")
        ]


@pytest.mark.parametrize(
    ("node", "name", "value"),
    [("9", "filename_prefix", "../outside"), ("9", "filename_prefix", "/etc/x"), ("3", "denoise", 1e-320)],
)
def test_values_that_could_not_run_are_refused_at_submission(
    live: LiveServer, http: Any, node: str, name: str, value: Any
) -> None:
    graph = comfy_prompt()
    graph[node]["inputs"][name] = value
    body = assert_error(http.post(api_path(live.app, "post", "/jobs"), json={"workflow": graph}), 400)
    (e,) = body["node_errors"]
    assert (e["node"], e["input"], e["code"]) == (node, name, "invalid_value") and e["message"]
    comfy = assert_error(http.post("/prompt", json={"prompt": graph}), 400)
    assert comfy["node_errors"][node]["errors"][0]["extra_info"]["input_name"] == name


def test_only_images_are_shown_inline(live: LiveServer, http: Any) -> None:
    out = live.root / "output"
    out.mkdir(exist_ok=True)
    (out / "page.html").write_text("<script>alert(1)</script>")
    (out / "notes.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>")
    from PIL import Image

    Image.new("RGB", (2, 2)).save(out / "pic.png")
    files = api_path(live.app, "get", "/files/{kind}/{name}")
    for fetch in (
        lambda n: http.get("/view", params={"filename": n, "type": "output"}),
        lambda n: http.get(files.replace("{kind}", "output").replace("{name}", n)),
    ):
        for name in ("page.html", "notes.svg"):
            r = fetch(name)
            assert r.status_code == 200
            assert r.headers["content-disposition"].startswith("attachment")
            assert r.headers["content-type"] == "application/octet-stream"
            assert r.headers["x-content-type-options"] == "nosniff"
        r = fetch("pic.png")
        assert r.headers["content-type"] == "image/png" and r.headers["content-disposition"].startswith(
            "inline"
        )


def test_every_operation_documents_its_errors_in_the_one_shape(live: LiveServer) -> None:
    schema = live.app.openapi()
    assert "HTTPValidationError" not in json.dumps(schema)
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            for code, response in op["responses"].items():
                if code.startswith("4"):
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorBody"), (method, path, code)
            if method in ("post", "put") and "requestBody" in op:
                assert {"400", "413"} <= set(op["responses"]), (method, path)


@pytest.mark.parametrize(
    "message",
    ["{nope", "[" * 50_000, "1" * 5000, '"just a string"', "[]", '{"type": {"x": 1}}', '{"type": "state"}'],
)
def test_websocket_messages_that_cannot_be_used_get_an_error_reply(live: LiveServer, message: str) -> None:
    with connect(f"{live.ws_base}{atelier_ws(live.app)}", open_timeout=30, max_size=None) as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "hello"
        ws.send(message)
        reply = next(m for m in iter(lambda: json.loads(ws.recv(timeout=30)), None) if m["type"] != "queue")
        assert reply["type"] == "error" and reply["error"]
        ws.send(json.dumps({"type": "subscribe", "jobs": "all"}))  # the session goes on
        reply = next(m for m in iter(lambda: json.loads(ws.recv(timeout=30)), None) if m["type"] != "queue")
        assert reply == {"type": "subscribed", "jobs": "all"}
