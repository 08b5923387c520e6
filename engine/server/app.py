"""The FastAPI application: one long-lived engine behind HTTP and websocket routes.

``create_app(settings)`` builds everything (store, executor, worker, event hub); the worker thread starts
with the app and stops with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import platform
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from atelier.engine import folders as F
from atelier.engine.executor import Executor
from atelier.engine.registry import Registry
from atelier.engine.runtime import Engine

from .hub import Client, Hub
from .store import Store
from .worker import Worker

log = logging.getLogger(__name__)

FRONTEND_DIR = Path(__file__).resolve().parents[2] / "frontend"


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8188
    token: str | None = None
    database: Path = Path("atelier.db")
    max_body_bytes: int = 8 * 1024 * 1024
    max_upload_bytes: int = 32 * 1024 * 1024
    max_image_pixels: int = 64 * 1024 * 1024
    allow_origins: list[str] = field(default_factory=list)
    frontend: Path = FRONTEND_DIR


@dataclass
class ServerState:
    settings: Settings
    engine: Engine
    store: Store
    hub: Hub | None = None
    worker: Worker | None = None
    started: float = field(default_factory=time.time)

    @property
    def registry(self) -> Registry:
        return self.engine.registry

    @property
    def executor(self) -> Executor:
        return self.engine.executor

    @property
    def folders(self) -> F.Folders:
        return self.engine.folders

    def queue_changed(self) -> None:
        if self.hub is not None:
            self.hub.publish_status(self.store.count_queued(), self.worker.current if self.worker else None)
        if self.worker is not None:
            self.worker.wakeup.set()


def api_error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def create_app(engine: Engine, settings: Settings | None = None) -> FastAPI:
    """The server over an engine built by the composition root (``engine/runtime.py``)."""
    settings = settings or Settings()
    engine.folders.ensure()
    store = Store(settings.database)
    recovered = store.recover_after_restart()
    if recovered:
        log.warning(
            "marked %d job(s) interrupted by the last shutdown: %s", len(recovered), ", ".join(recovered)
        )
    executor = engine.executor
    state = ServerState(settings, engine, store)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.hub = Hub(asyncio.get_running_loop())
        for job in store.queue()[1]:  # jobs queued before a restart keep reporting to their client only
            state.hub.owners[job["id"]] = job.get("client_id")
        state.worker = Worker(store, executor, state.hub.publish, state.queue_changed, _out_of_memory(state))
        state.worker.start()
        try:
            yield
        finally:
            state.worker.stop()
            state.worker.join(timeout=10)
            store.close()

    app = FastAPI(
        title="Atelier",
        version="0.1.0",
        description="Node-graph workflows for Stable Diffusion: Atelier API, ComfyUI-compatible routes, websocket.",
        lifespan=lifespan,
    )
    app.state.atelier = state

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        problem = check_request(request, settings)
        if problem is not None:
            return problem
        length = request.headers.get("content-length")
        limit = settings.max_upload_bytes if _is_upload(request) else settings.max_body_bytes
        if length is not None:
            try:
                if int(length) > limit:
                    return api_error(413, f"request body is larger than {limit} bytes")
            except ValueError:
                return api_error(400, "invalid Content-Length")
        elif request.method in ("POST", "PUT", "PATCH") and request.headers.get("transfer-encoding"):
            return api_error(411, "a Content-Length is required")
        response: Response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if settings.token is not None and request.url.path == "/" and request.query_params.get("token"):
            # the page was opened with ?token=: its assets, API calls and websocket carry it as a cookie
            response.set_cookie(TOKEN_COOKIE, settings.token, httponly=True, samesite="strict")
        return response

    if settings.allow_origins:
        # outside the guard: answers preflights (which carry no token) and adds the CORS headers that
        # let a page from an allowed origin read the responses; other origins still meet the guard's 403
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.allow_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse({"error": "invalid request", "detail": errors}, status_code=422)

    @app.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - last resort
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return api_error(500, f"internal error: {type(exc).__name__}")

    from .api import router as api_router
    from .comfy import router as comfy_router

    app.include_router(api_router)
    app.include_router(comfy_router)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket_session(websocket, state)

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        page = settings.frontend / "index.html"
        if page.is_file():
            return FileResponse(page)
        return JSONResponse({"name": "Atelier", "api": "/docs", "websocket": "/ws"})

    if settings.frontend.is_dir():
        app.mount("/static", StaticFiles(directory=settings.frontend), name="static")
    return app


def _is_upload(request: Request) -> bool:
    return request.url.path in ("/api/upload", "/upload/image") and request.method == "POST"


def _out_of_memory(state: ServerState) -> Any:
    def recover() -> None:
        state.engine.free()

    return recover


TOKEN_COOKIE = "atelier_token"


def token_of(request_headers: Any, query: Any, cookies: Any = None) -> str | None:
    """The token a request carries: ``Authorization: Bearer``, ``?token=``, or the cookie the canvas page
    gets when it is opened with ``?token=`` (SameSite=Strict, so other sites cannot use it)."""
    auth = request_headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return query.get("token") or (cookies or {}).get(TOKEN_COOKIE)


def host_allowed(headers: Any, settings: Settings) -> bool:
    """Without a token the server is for this machine only: the Host header must name a loopback address
    (or the address it is bound to), which defeats DNS-rebinding pages reaching it through a browser."""
    if settings.token is not None:
        return True
    host = headers.get("host", "")
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]", 1)[0]
    if name in ("localhost", settings.host):
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_request(request: Request, settings: Settings) -> Response | None:
    """Token, Host and same-origin checks shared by HTTP requests (websockets do the same in their handler)."""
    if not host_allowed(request.headers, settings):
        return api_error(
            403, "this server answers only to loopback host names (start it with --token to share it)"
        )
    if settings.token is not None:
        given = token_of(request.headers, request.query_params, request.cookies)
        if given is None or not hmac.compare_digest(given.encode(), settings.token.encode()):
            return api_error(401, "missing or wrong token (Authorization: Bearer TOKEN, or ?token=TOKEN)")
    if not origin_allowed(request.headers, settings):
        return api_error(403, "cross-origin request refused")
    return None


def origin_allowed(headers: Any, settings: Settings) -> bool:
    """Same-origin by default: a browser request from another site (its Origin header names another host)
    is refused unless that origin is in ``allow_origins``."""
    origin = headers.get("origin")
    if origin is None:
        return True
    if "*" in settings.allow_origins or origin in settings.allow_origins:
        return True
    return origin.split("://", 1)[-1] == headers.get("host", "")


async def websocket_session(websocket: WebSocket, state: ServerState) -> None:
    settings = state.settings
    if not host_allowed(websocket.headers, settings):
        await websocket.close(code=4403, reason="loopback host names only")
        return
    if settings.token is not None:
        given = token_of(websocket.headers, websocket.query_params, websocket.cookies)
        if given is None or not hmac.compare_digest(given.encode(), settings.token.encode()):
            await websocket.close(code=4401, reason="missing or wrong token")
            return
    if not origin_allowed(websocket.headers, settings):
        await websocket.close(code=4403, reason="cross-origin websocket refused")
        return
    await websocket.accept()
    params = websocket.query_params
    client_id = params.get("clientId") or params.get("client_id")
    fmt = params.get("format") or ("comfy" if client_id else "atelier")
    if fmt not in ("comfy", "atelier"):
        await websocket.close(code=4400, reason="format must be comfy or atelier")
        return
    jobs_param = params.get("jobs")
    jobs = None if not jobs_param or jobs_param == "all" else set(jobs_param.split(","))
    client = Client(asyncio.Queue(), fmt, client_id, jobs)
    hub = state.hub
    assert hub is not None
    hub.add(client)
    queued = state.store.count_queued()
    running = state.worker.current if state.worker else None
    if fmt == "comfy":
        await websocket.send_text(
            json.dumps(
                {
                    "type": "status",
                    "data": {"status": {"exec_info": {"queue_remaining": queued}}, "sid": client_id},
                }
            )
        )
    else:
        await websocket.send_text(
            json.dumps({"type": "hello", "queue_remaining": queued, "running": running})
        )

    async def sender() -> None:
        while not client.closed:
            msg = await client.queue.get()
            if isinstance(msg, bytes):
                await websocket.send_bytes(msg)
            else:
                await websocket.send_text(msg)
        await websocket.close(code=1013, reason="client too slow")

    task = asyncio.create_task(sender())
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if text is None:  # a binary frame: answer, do not crash the session
                client.queue.put_nowait(json.dumps({"type": "error", "error": "messages must be JSON text"}))
                continue
            reply = handle_client_message(text, client, state)
            if reply is not None:
                client.queue.put_nowait(json.dumps(reply))
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        hub.remove(client)
        task.cancel()


def handle_client_message(text: str, client: Client, state: ServerState) -> dict[str, Any] | None:
    """Messages a client may send: ``{"type": "subscribe", "jobs": [...] | "all"}`` and
    ``{"type": "state", "job": ID}`` (a job's status and live progress, for clients that connect late)."""
    try:
        msg = json.loads(text)
    except json.JSONDecodeError:
        return {"type": "error", "error": "messages must be JSON"}
    if not isinstance(msg, dict):
        return {"type": "error", "error": "messages must be JSON objects"}
    kind = msg.get("type")
    if kind == "subscribe":
        jobs = msg.get("jobs")
        if jobs == "all" or jobs is None:
            client.jobs = None
        elif isinstance(jobs, list) and all(isinstance(j, str) for j in jobs):
            client.jobs = set(jobs)
        else:
            return {"type": "error", "error": 'jobs must be a list of job ids or "all"'}
        return {"type": "subscribed", "jobs": "all" if client.jobs is None else sorted(client.jobs)}
    if kind == "state":
        from .api import job_view

        job_id = msg.get("job")
        job = state.store.get_job(job_id) if isinstance(job_id, str) else None
        if job is None:
            return {"type": "error", "error": f"no job {job_id!r}"}
        return {"type": "state", "job": job_view(job, state)}
    return {"type": "error", "error": f"unknown message type {kind!r}"}


def system_info(state: ServerState) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": state.engine.device,
        "uptime_s": time.time() - state.started,
        "cache": state.executor.cache.stats().model_dump(),
        "queue_remaining": state.store.count_queued(),
        "node_types": len(state.registry),
    }
    try:
        import psutil  # type: ignore[import-not-found]

        vm = psutil.virtual_memory()
        info["ram"] = {"total": vm.total, "free": vm.available}
    except ImportError:
        try:
            pages, size = _meminfo()
            info["ram"] = {"total": pages, "free": size}
        except OSError:
            pass
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        info["gpu"] = {
            "name": torch.cuda.get_device_name(),
            "vram_total": total,
            "vram_free": free,
            "torch_allocated": torch.cuda.memory_allocated(),
        }
    return info


def _meminfo() -> tuple[int, int]:
    total = free = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
            elif line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    return total, free
