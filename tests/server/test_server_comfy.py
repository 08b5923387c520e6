"""The ComfyUI-compatible routes, driven the way a ComfyUI API client drives them: queue an API-format
prompt, follow /ws to ``executing`` with ``node: null``, then fetch /history and /view."""

from __future__ import annotations

import io
import json
import uuid

import httpx
from PIL import Image

from tests.server.harness import Server, comfy_prompt, follow_comfy, parse_comfy_preview

PROMPT_NODES = {"3", "4", "5", "6", "7", "8", "9"}


def queue_prompt(http: httpx.Client, prompt: dict, client_id: str, **extra) -> str:
    r = http.post("/prompt", json={"prompt": prompt, "client_id": client_id, **extra})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["node_errors"] == {} and isinstance(body["number"], int)
    return body["prompt_id"]


def test_comfy_client_flow(server: Server, http: httpx.Client) -> None:
    client_id = uuid.uuid4().hex
    with server.ws(f"clientId={client_id}") as ws, server.ws("clientId=someone-else") as other:
        first = json.loads(ws.recv(timeout=10))
        assert first["type"] == "status" and first["data"]["sid"] == client_id
        assert "queue_remaining" in first["data"]["status"]["exec_info"]
        json.loads(other.recv(timeout=10))

        prompt_id = queue_prompt(http, comfy_prompt(seed=1234, steps=3, prefix="comfy_flow"), client_id)
        msgs = follow_comfy(ws, prompt_id)
        # the other client hears queue status only, never this prompt's execution
        # its first message, the feature flags handshake: the reply marks how far it has read
        other.send(json.dumps({"type": "feature_flags", "data": {}}))
        for raw in iter(lambda: other.recv(timeout=10), None):
            m = json.loads(raw)
            if m["type"] == "feature_flags":
                break
            assert m["type"] == "status", m

    frames = [m for m in msgs if isinstance(m, bytes)]
    events = [m for m in msgs if isinstance(m, dict) and m["type"] != "status"]
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["execution_start", "execution_cached"] and kinds[-2:] == [
        "execution_success",
        "executing",
    ]
    assert all(e["data"]["prompt_id"] == prompt_id for e in events)
    executing = [e["data"]["node"] for e in events if e["type"] == "executing"]
    assert executing[-1] is None
    ran = executing[:-1]
    cached = [n for e in events if e["type"] == "execution_cached" for n in e["data"]["nodes"]]
    assert set(ran) | set(cached) == PROMPT_NODES and not set(ran) & set(cached)
    assert ran.index("3") < ran.index("8") < ran.index("9")
    progress = [e["data"] for e in events if e["type"] == "progress"]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [(1, 3, "3"), (2, 3, "3"), (3, 3, "3")]
    assert frames
    for frame in frames:
        kind, fmt, image = parse_comfy_preview(frame)
        assert (kind, fmt) == (1, 1) and image[:2] == b"\xff\xd8"
    executed = [e["data"] for e in events if e["type"] == "executed"]
    assert [d["node"] for d in executed] == ["9"]
    images = executed[0]["output"]["images"]
    assert images[0]["filename"].startswith("comfy_flow_") and images[0]["type"] == "output"

    history = http.get(f"/history/{prompt_id}").json()
    entry = history[prompt_id]
    assert entry["status"]["completed"] is True and entry["status"]["status_str"] == "success"
    assert entry["outputs"]["9"]["images"] == images
    assert entry["prompt"][1] == prompt_id and entry["prompt"][2]["3"]["inputs"]["seed"] == 1234
    assert entry["prompt"][3] == {"client_id": client_id}
    assert [m[0] for m in entry["status"]["messages"]] == [
        "execution_start",
        "execution_cached",
        "execution_success",
    ]
    assert prompt_id in http.get("/history", params={"max_items": 500}).json()

    img = images[0]
    r = http.get(
        "/view", params={"filename": img["filename"], "subfolder": img["subfolder"], "type": img["type"]}
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == (server.folder("output") / img["filename"]).read_bytes()
    with Image.open(io.BytesIO(r.content)) as im:
        assert im.size == (64, 64)
    assert http.get("/queue").json() == {"queue_running": [], "queue_pending": []}
    assert http.get("/history/not-a-prompt").json() == {}


def test_comfy_upload_then_load_image(server: Server, http: httpx.Client) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (16, 8), (255, 0, 0)).save(buf, "PNG")
    r = http.post(
        "/upload/image", files={"image": ("red.png", buf.getvalue(), "image/png")}, data={"subfolder": "up"}
    )
    assert r.status_code == 200, r.text
    up = r.json()
    assert up["name"] == "red.png" and up["subfolder"] == "up" and up["type"] == "input"
    assert (server.folder("input") / "up" / "red.png").read_bytes() == buf.getvalue()
    again = http.post(
        "/upload/image", files={"image": ("red.png", buf.getvalue(), "image/png")}, data={"subfolder": "up"}
    )
    assert again.json()["name"] == "red (1).png"  # no overwrite unless asked
    over = http.post(
        "/upload/image",
        files={"image": ("red.png", buf.getvalue(), "image/png")},
        data={"subfolder": "up", "overwrite": "true"},
    )
    assert over.json()["name"] == "red.png"
    assert (
        http.post(
            "/upload/image", files={"image": ("x.png", buf.getvalue())}, data={"type": "output"}
        ).status_code
        == 400
    )

    client_id = uuid.uuid4().hex
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "up/red.png"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "inverted"}},
    }
    with server.ws(f"clientId={client_id}") as ws:
        prompt_id = queue_prompt(http, prompt, client_id)
        follow_comfy(ws, prompt_id)
    out = http.get(f"/history/{prompt_id}").json()[prompt_id]["outputs"]["3"]["images"][0]
    r = http.get("/view", params={"filename": out["filename"], "type": "output"})
    with Image.open(io.BytesIO(r.content)) as im:
        assert im.size == (16, 8) and im.convert("RGB").getpixel((3, 3)) == (0, 255, 255)
    r = http.get("/view", params={"filename": "red.png", "subfolder": "up", "type": "input"})
    assert r.content == buf.getvalue()


def test_comfy_errors_failure_and_interrupt(server: Server, http: httpx.Client) -> None:
    r = http.post("/prompt", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]
    r = http.post("/prompt", json={"client_id": "x"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "no_prompt"
    bad = comfy_prompt()
    bad["10"] = {"class_type": "NoSuchNode", "inputs": {}}
    bad["3"]["inputs"]["denoise"] = "much"
    r = http.post("/prompt", json={"prompt": bad})
    assert r.status_code == 400
    body = r.json()
    assert body["error"]["type"] and body["error"]["message"]
    assert body["node_errors"]["10"]["class_type"] == "NoSuchNode"
    assert body["error"]["type"] == "missing_node_type" and body["error"]["extra_info"]["node_id"] == "10"
    assert body["node_errors"]["10"]["errors"][0]["type"] == "missing_node_type"
    assert body["node_errors"]["10"]["errors"][0]["code"] == "unknown_node_type"
    err3 = body["node_errors"]["3"]
    assert err3["class_type"] == "KSampler" and err3["errors"][0]["extra_info"]["input_name"] == "denoise"
    for broken in ({"1": [1, 2]}, {"1": {"class_type": "KSampler", "inputs": None}}, {}):
        r = http.post("/prompt", json={"prompt": broken})
        assert r.status_code == 400 and r.json()["error"]["message"], r.text

    client_id = uuid.uuid4().hex
    with server.ws(f"clientId={client_id}") as ws:
        failing = queue_prompt(http, comfy_prompt(ckpt="broken.safetensors"), client_id)
        msgs = [m for m in follow_comfy(ws, failing) if isinstance(m, dict)]
        error = [m["data"] for m in msgs if m["type"] == "execution_error"]
        assert len(error) == 1 and error[0]["node_id"] == "4"
        assert error[0]["node_type"] == "CheckpointLoaderSimple" and error[0]["exception_message"]
        assert isinstance(error[0]["traceback"], list) and error[0]["prompt_id"] == failing
        hist = http.get(f"/history/{failing}").json()[failing]["status"]
        assert hist["status_str"] == "error" and hist["completed"] is False
        assert hist["messages"][-1][0] == "execution_error" and hist["messages"][-1][1]["node_id"] == "4"

        long = queue_prompt(http, comfy_prompt(seed=99, steps=200, size=128), client_id)
        for raw in iter(lambda: ws.recv(timeout=30), None):
            if isinstance(raw, str) and json.loads(raw)["type"] == "progress":
                break
        queued = http.get("/queue").json()
        assert [q[1] for q in queued["queue_running"]] == [long] and queued["queue_pending"] == []
        assert http.post("/interrupt").json() == {}
        msgs = [m for m in follow_comfy(ws, long) if isinstance(m, dict)]
        stopped = [m["data"] for m in msgs if m["type"] == "execution_interrupted"]
        assert len(stopped) == 1 and stopped[0]["node_id"] == "3" and stopped[0]["node_type"] == "KSampler"
        assert not any(m["type"] == "execution_success" for m in msgs)
        assert http.get(f"/history/{long}").json()[long]["status"]["status_str"] == "error"

        after = queue_prompt(http, comfy_prompt(seed=100), client_id)  # the queue goes on
        msgs = [m for m in follow_comfy(ws, after) if isinstance(m, dict)]
        assert any(m["type"] == "execution_success" for m in msgs)


def test_comfy_queue_edit_and_history_delete(server: Server, http: httpx.Client) -> None:
    client_id = uuid.uuid4().hex
    with server.ws(f"clientId={client_id}") as ws:
        long = queue_prompt(http, comfy_prompt(seed=500, steps=200, size=128), client_id)
        for raw in iter(lambda: ws.recv(timeout=30), None):
            if isinstance(raw, str) and json.loads(raw)["type"] == "progress":
                break
        back = queue_prompt(http, comfy_prompt(seed=501), client_id)
        front = queue_prompt(http, comfy_prompt(seed=502), client_id, front=True)
        dropped = queue_prompt(http, comfy_prompt(seed=503), client_id)
        pending = [q[1] for q in http.get("/queue").json()["queue_pending"]]
        assert pending == [front, back, dropped]
        assert http.post("/queue", json={"delete": [dropped]}).json() == {}
        assert [q[1] for q in http.get("/queue").json()["queue_pending"]] == [front, back]
        http.post("/interrupt")
        follow_comfy(ws, long)
        follow_comfy(ws, front)
        follow_comfy(ws, back)
    assert http.get(f"/atelier/v1/jobs/{dropped}").json()["status"] == "cancelled"
    for route in ("/queue", "/history"):
        for body in ({"delete": 5}, {"delete": "abc"}, [1], "x"):
            r = http.post(route, json=body)
            assert r.status_code == 400 and r.json()["error"], (route, body, r.text)
    assert http.get("/history", params={"offset": 10**20, "max_items": 10**20}).json() == {}
    assert http.post("/history", json={"delete": [back]}).json() == {}
    assert http.get(f"/history/{back}").json() == {}
    assert front in http.get("/history").json()


def test_object_info_and_system_stats(http: httpx.Client) -> None:
    info = http.get("/object_info").json()
    ks = info["KSampler"]
    assert ks["output"] == ["LATENT"] and ks["name"] == "KSampler" and ks["output_node"] is False
    required = ks["input"]["required"]
    assert required["model"] == ["MODEL"] and required["seed"][0] == "INT"
    assert "euler" in required["sampler_name"][0]
    assert ks["input_order"]["required"][:2] == ["model", "seed"]
    loader = info["CheckpointLoaderSimple"]
    assert loader["output"] == ["MODEL", "CLIP", "VAE"]
    assert "tiny15.safetensors" in loader["input"]["required"]["ckpt_name"][0]
    assert info["SaveImage"]["output_node"] is True
    assert http.get("/object_info/KSampler").json() == {"KSampler": ks}
    assert http.get("/object_info/Nope").json() == {}
    stats = http.get("/system_stats").json()
    assert stats["devices"][0]["type"] == "cpu" and stats["system"]["python_version"]
    assert http.get("/embeddings").json() == []
