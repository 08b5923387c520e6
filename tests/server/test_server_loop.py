"""Nothing blocks the event loop: every route and the websocket are driven against a server running in
this process (uvicorn in a thread), with every service method, every store method, the engine's
validation and catalogue, the folder walks, PIL's ``Image.open`` and workflow parsing instrumented to
record whether they ran on the event loop's thread. None may.

The probe is shown to work (a store call made on the loop on purpose is caught), every route of the app
is checked to have been exercised (a new route without a request here fails the test), and every probed
service method must have been reached (so a route that stopped calling its service is noticed).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.routing import APIRoute, APIWebSocketRoute
from PIL import Image
from websockets.sync.client import connect

from atelier.engine import workflow as W
from atelier.engine.server.app import Settings, create_app
from atelier.engine.server.service import Services
from tests.server.harness import comfy_prompt, engine_in, free_port, portrait

REPO = Path(__file__).resolve().parents[2]


@dataclass
class LoopProbe:
    """Wraps callables to record ``(name, ran_on_the_loop)`` for every call, from any thread."""

    loop_thread: int | None = None
    calls: list[tuple[str, bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_loop(self) -> bool:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return threading.get_ident() == self.loop_thread
        return True

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def probed(*args: Any, **kwargs: Any) -> Any:
            on_loop = self.on_loop()
            with self.lock:
                self.calls.append((name, on_loop))
            return fn(*args, **kwargs)

        return probed

    def instrument(self, obj: Any, label: str, names: list[str] | None = None) -> list[str]:
        """Wrap ``obj``'s public methods (or ``names``) on the instance; returns the probe names."""
        names = names or [
            n for n, member in inspect.getmembers(type(obj), inspect.isfunction) if not n.startswith("_")
        ]
        for n in names:
            setattr(obj, n, self.wrap(f"{label}.{n}", getattr(obj, n)))
        return [f"{label}.{n}" for n in names]

    def hit(self) -> set[str]:
        with self.lock:
            return {name for name, _ in self.calls}

    def on_the_loop(self) -> list[str]:
        with self.lock:
            return [name for name, on_loop in self.calls if on_loop]


@dataclass
class InProcessServer:
    base: str
    ws_base: str
    services: Services
    probe: LoopProbe
    routes: set[tuple[str, str]]  # (method or "WS", path template) of every request served
    all_routes: set[tuple[str, str]]
    loop: asyncio.AbstractEventLoop
    service_probes: list[str]
    root: Path


def _route_keys(route: Any, method: str | None = None) -> set[tuple[str, str]]:
    # ComfyUI's routes are registered twice, bare and under /api, with one handler: one key for both
    path = getattr(route, "path", "").removeprefix("/api")
    if isinstance(route, APIWebSocketRoute):
        return {("WS", path)}
    if isinstance(route, APIRoute):
        methods = {method} if method else route.methods
        return {(m, path) for m in methods if m != "HEAD"}
    return set()


@pytest.fixture(scope="module")
def inproc(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[InProcessServer]:
    root = tmp_path_factory.mktemp("loop-server")
    engine = engine_in(root, models_dir)
    port = free_port()
    settings = Settings(port=port, database=root / "atelier.db", max_image_pixels=1_000_000)
    app = create_app(engine, settings)
    services: Services = app.state.services

    probe = LoopProbe()
    service_probes: list[str] = []
    for label in ("jobs", "catalog", "library", "files", "system", "models", "gallery"):
        service_probes += probe.instrument(getattr(services, label), label)
    probe.instrument(services.store, "store")
    probe.instrument(engine, "engine", ["check", "describe", "free"])
    probe.instrument(
        engine.folders, "folders", ["list_files", "input_images", "list_models", "find_model", "sha256"]
    )
    patches = [(Image, "open"), (W, "parse_workflow")]
    originals = [getattr(mod, name) for mod, name in patches]
    Image.open = probe.wrap("PIL.Image.open", Image.open)  # type: ignore[method-assign]
    W.parse_workflow = probe.wrap("workflow.parse_workflow", W.parse_workflow)  # type: ignore[method-assign]

    served: set[tuple[str, str]] = set()

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        try:
            await app(scope, receive, send)
        finally:
            if scope["type"] in ("http", "websocket") and "route" in scope:
                method = "WS" if scope["type"] == "websocket" else scope["method"]
                served.update(_route_keys(scope["route"], None if method == "WS" else method))

    server = uvicorn.Server(uvicorn.Config(recording, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn-loop", daemon=True)
    thread.start()
    probe.loop_thread = thread.ident
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the in-process server did not start"
        time.sleep(0.02)
    all_routes = set().union(*(_route_keys(r) for r in app.routes))
    try:
        yield InProcessServer(
            f"http://127.0.0.1:{port}",
            f"ws://127.0.0.1:{port}",
            services,
            probe,
            served,
            all_routes,
            app.state.hub.loop,
            service_probes,
            root,
        )
    finally:
        server.should_exit = True
        thread.join(30)
        for (mod, name), original in zip(patches, originals, strict=True):
            setattr(mod, name, original)


def _png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    return buf.getvalue()


def _wait(http: httpx.Client, job: str, until: Callable[[str], bool], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = http.get(f"/atelier/v1/jobs/{job}").json()["status"]
        if until(status) or time.monotonic() > deadline:
            return status
        time.sleep(0.01)


def _finished(status: str) -> bool:
    return status not in ("queued", "running")


def exercise_every_route(srv: InProcessServer) -> None:
    """Each route at least once, on both its success and refusal paths where it has them."""
    with httpx.Client(base_url=srv.base, timeout=60) as http:
        assert http.get("/").status_code == 200
        assert http.get("/static/index.html").status_code in (200, 404)
        # the catalogue
        assert http.get("/atelier/v1/system").json()["device"] == "cpu"
        assert "KSampler" in http.get("/atelier/v1/nodes").json()
        assert http.get("/atelier/v1/nodes/KSampler").status_code == 200
        assert http.get("/atelier/v1/nodes/Nope").status_code == 404
        assert http.get("/atelier/v1/types").status_code == 200
        assert "checkpoints" in http.get("/atelier/v1/models").json()
        assert http.get("/atelier/v1/models/checkpoints").status_code == 200
        assert http.get("/atelier/v1/models/nope").status_code == 404
        browsed = http.get("/atelier/v1/models/checkpoints/browse").json()["models"]
        assert {m["name"]: m["family"] for m in browsed}["tiny15.safetensors"] == "sd15"
        assert http.get("/atelier/v1/models/nope/browse").status_code == 404
        assert http.get("/atelier/v1/models/checkpoints/info/tiny15.safetensors").status_code == 200
        assert http.get("/atelier/v1/models/checkpoints/preview/tiny15.safetensors").status_code == 404
        assert http.get("/object_info").status_code == 200
        assert http.get("/object_info/KSampler").status_code == 200
        assert http.get("/object_info/Nope").json() == {}
        assert http.get("/api/prompt").json()["exec_info"]["queue_remaining"] >= 0
        assert http.get("/system_stats").status_code == 200
        assert http.get("/embeddings").json() == []

        # jobs, through the websocket as well
        with (
            connect(f"{srv.ws_base}/atelier/v1/ws", open_timeout=10) as ws,
            connect(f"{srv.ws_base}/ws?clientId=probe", open_timeout=10) as comfy_ws,
        ):
            assert json.loads(ws.recv(timeout=10))["type"] == "hello"
            assert json.loads(comfy_ws.recv(timeout=10))["type"] == "status"
            assert http.post("/atelier/v1/validate", json=portrait()).json()["ok"] is True
            assert http.post("/atelier/v1/jobs", json={"workflow": {"a": 5}}).status_code == 400
            done = http.post("/atelier/v1/jobs", json=portrait(seed=1)).json()["id"]
            assert _wait(http, done, _finished) == "success"
            ws.send(json.dumps({"type": "subscribe", "jobs": [done]}))
            ws.send(json.dumps({"type": "state", "job": done}))
            ws.send(json.dumps({"type": "state", "job": "nope"}))
            replies = []
            while len(replies) < 3:
                raw = ws.recv(timeout=10)
                m = json.loads(raw) if isinstance(raw, str) else {"type": "preview"}
                if m["type"] in ("subscribed", "state", "error"):
                    replies.append(m["type"])
            assert replies == ["subscribed", "state", "error"]

            long = http.post(
                "/atelier/v1/jobs", json=portrait(seed=2, steps=200, width=128, height=128)
            ).json()["id"]
            queued = http.post("/atelier/v1/jobs", json=portrait(seed=3)).json()["id"]
            _wait(http, long, lambda s: s != "queued")
            assert http.get("/atelier/v1/queue").status_code == 200
            assert http.get("/atelier/v1/gallery/queue").status_code == 200
            assert http.get("/queue").status_code == 200
            assert http.post(f"/atelier/v1/jobs/{queued}/cancel").status_code in (200, 409)
            assert http.post("/atelier/v1/jobs/nope/cancel").status_code == 404
            assert http.post("/atelier/v1/interrupt").status_code == 200
            # the interrupt may land before the worker holds the job's token; a cancel cannot miss it
            assert http.post(f"/atelier/v1/jobs/{long}/cancel").status_code in (200, 409)
            assert _finished(_wait(http, long, _finished))
            assert http.delete(f"/atelier/v1/jobs/{queued}").status_code in (200, 409)
            assert http.delete("/atelier/v1/jobs/nope").status_code == 404
            assert http.get(f"/atelier/v1/jobs/{done}", params={"workflow": "true"}).status_code == 200
            assert http.get("/atelier/v1/jobs", params={"limit": 5}).status_code == 200

            r = http.post("/prompt", json={"prompt": comfy_prompt(seed=4), "client_id": "probe"})
            prompt_id = r.json()["prompt_id"]
            assert (
                http.post("/prompt", json={"prompt": {"1": {"class_type": "Nope", "inputs": {}}}}).status_code
                == 400
            )
            assert http.post("/prompt", content=b"{nope").status_code == 400
            assert _wait(http, prompt_id, _finished) == "success"
            assert prompt_id in http.get("/history").json()
            assert http.get(f"/history/{prompt_id}").json()
            image = http.get(f"/history/{prompt_id}").json()[prompt_id]["outputs"]["9"]["images"][0]
            assert http.get("/view", params={"filename": image["filename"]}).status_code == 200
            assert http.get("/view", params={"filename": "missing.png"}).status_code == 404
            assert http.get(f"/atelier/v1/files/output/{image['filename']}").status_code == 200
            extra = http.post("/prompt", json={"prompt": comfy_prompt(seed=6)}).json()
            assert http.post("/queue", json={"delete": [extra["prompt_id"]]}).json() == {}
            assert http.post("/queue", json={"clear": True}).json() == {}
            assert http.post("/interrupt").json() == {}
            assert _finished(_wait(http, extra["prompt_id"], _finished))
            assert http.post("/history", json={"delete": [extra["prompt_id"]]}).json() == {}
            assert http.post("/history", json={"delete": 5}).status_code == 400

        # files
        up = http.post("/atelier/v1/upload", files={"image": ("small.png", _png((8, 8)), "image/png")})
        assert up.status_code == 200, up.text
        assert (
            http.post("/upload/image", files={"image": ("s.png", _png((8, 8)), "image/png")}).status_code
            == 200
        )
        big = http.post(
            "/atelier/v1/upload", files={"image": ("big.png", _png((2000, 1000), "1"), "image/png")}
        )
        assert big.status_code == 400 and "over 1000000 pixels" in big.json()["error"]
        assert http.get("/atelier/v1/files/input/small.png").status_code == 200

        # the gallery
        g = "/atelier/v1/gallery"
        listed = http.get(f"{g}/images", params={"limit": 1}).json()
        first = listed["images"][0]["id"]
        assert http.get(f"{g}/images", params={"offset": 1, "until": listed["until"]}).status_code == 200
        assert http.get(f"{g}/images/{first}").json()["id"] == first
        assert http.get(f"{g}/images/999999").status_code == 404
        assert http.get(f"{g}/images/{first}/thumb", params={"size": 64}).status_code == 200
        assert http.post(f"{g}/images/{first}/to-input").status_code == 200
        assert http.get(f"{g}/facets").json()["total"] >= 1
        board = http.post(f"{g}/boards", json={"name": "keep"}).json()["id"]
        assert http.post(f"{g}/boards", json={"name": " "}).status_code == 400
        assert http.patch(f"{g}/boards/{board}", json={"name": "kept"}).json()["name"] == "kept"
        assert http.patch(f"{g}/images/{first}", json={"favourite": True}).json()["favourite"] is True
        assert http.post(f"{g}/images/move", json={"ids": [first], "board": board}).json() == {"moved": 1}
        assert http.get(f"{g}/boards").json()["boards"][0]["count"] == 1
        assert http.delete(f"{g}/boards/{board}").status_code == 200
        assert http.delete(f"{g}/boards/{board}").status_code == 404

        # the library
        wf = json.loads((REPO / "workflows" / "portrait.json").read_text())
        assert http.put("/atelier/v1/workflows/mine", json={"workflow": wf}).status_code == 200
        assert http.put("/atelier/v1/workflows/bad", json={"workflow": {"nodes": 5}}).status_code == 400
        assert http.get("/atelier/v1/workflows").json()["workflows"]
        assert http.get("/atelier/v1/workflows/mine").json() == wf
        assert http.get("/atelier/v1/workflows/_default").status_code == 200
        assert http.get("/atelier/v1/workflows/_shipped").status_code == 200
        assert http.delete("/atelier/v1/workflows/mine").status_code == 200

        # maintenance last: it empties the caches the jobs above used
        assert http.post("/atelier/v1/cache/clear").status_code == 200
        assert http.post("/atelier/v1/models/unload").json() == {"unloaded": True}
        assert http.post("/free", json={"free_memory": True}).json() == {}
        assert http.post("/api/free", json={"unload_models": True}).json() == {}
        assert http.post("/free", content=b"{nope").status_code == 400
        http.post("/history", json={"clear": True})


def test_nothing_blocking_runs_on_the_event_loop(inproc: InProcessServer) -> None:
    pil_limit = Image.MAX_IMAGE_PIXELS
    exercise_every_route(inproc)
    probe = inproc.probe

    assert probe.on_the_loop() == [], "blocking calls ran on the event loop"
    missing = inproc.all_routes - inproc.routes
    assert missing == set(), f"routes this test does not exercise: {sorted(missing)}"
    unreached = set(inproc.service_probes) - probe.hit()
    assert unreached == set(), f"service methods no route reached: {sorted(unreached)}"
    deeper = {"store.get_job", "store.add_job", "engine.check", "engine.describe", "folders.list_models"}
    assert deeper | {"PIL.Image.open", "workflow.parse_workflow"} <= probe.hit()
    assert Image.MAX_IMAGE_PIXELS == pil_limit  # the upload's pixel limit never touched PIL's global

    # the probe sees the loop: a store call made on it on purpose is caught
    async def blocking() -> int:
        return inproc.services.store.count_queued()

    asyncio.run_coroutine_threadsafe(blocking(), inproc.loop).result(10)
    assert probe.on_the_loop() == ["store.count_queued"]
