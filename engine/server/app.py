"""The FastAPI application: one long-lived engine behind HTTP and websocket routes.

``create_app(engine, settings)`` opens the store and builds the services (``service.py``) over the engine
the composition root built (``engine/runtime.py``); the worker thread and the websocket hub start with the
app and stop with it. This module only wires: behaviour lives in the services, shapes in the route
modules (``api.py`` for Atelier's API under ``/atelier/v1``, ``comfy/routes.py`` for ComfyUI's, each
registered bare and under ``/api``), websocket sessions in ``session.py``.

Nothing that blocks runs on the event loop: routes that reach a service run in FastAPI's thread pool,
the lifespan and websocket sessions call the store through ``anyio.to_thread``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from anyio import to_thread
from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from atelier.engine.runtime import Engine
from atelier.engine.warmup import start_warmup

from .comfy.messages import ComfyFormat
from .http_errors import documented_errors_only, http_error, validation_error
from .hub import Hub
from .messages import AtelierFormat
from .responses import error
from .security import guard
from .service import open_services
from .session import websocket_session
from .settings import Settings
from .worker import Worker

if TYPE_CHECKING:
    from atelier.engine.distributed.pool import RayWorkers

log = logging.getLogger(__name__)

__all__ = ["Settings", "create_app"]


def create_app(engine: Engine, settings: Settings | None = None) -> FastAPI:
    """The server over an engine built by the composition root (``engine/runtime.py``). Raises
    ``migrations.SchemaError`` when the database is from a newer Atelier."""
    settings = settings or Settings()
    engine.folders.ensure()
    services = open_services(engine, settings)
    # on a cluster, workers may outlive the server: what ran goes back to the queue instead
    recovered = services.store.recover_after_restart(requeue=settings.ray is not None)
    if recovered:
        log.warning(
            "%s %d job(s) %s by the last shutdown: %s",
            "re-queued" if settings.ray is not None else "marked",
            len(recovered),
            "cut short" if settings.ray is not None else "interrupted",
            ", ".join(recovered),
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub = Hub(asyncio.get_running_loop(), {"atelier": AtelierFormat(), "comfy": ComfyFormat()})
        app.state.hub = hub
        worker: Worker | RayWorkers
        if settings.ray is not None:
            from atelier.engine.distributed.pool import RayWorkers

            worker = RayWorkers(
                services.store,
                engine,
                hub.publish,
                services.jobs.queue_changed,
                settings.ray,
                previews=settings.previews,
                max_batch=settings.batch_jobs,
                batch_window_s=settings.batch_window_ms / 1000.0,
            )
        else:
            worker = Worker(
                services.store,
                engine.executor,
                hub.publish,
                services.jobs.queue_changed,
                engine.free,
                previews=settings.previews,
                max_batch=settings.batch_jobs,
                batch_window_s=settings.batch_window_ms / 1000.0,
            )
        await to_thread.run_sync(services.jobs.attach, worker, hub)
        await to_thread.run_sync(worker.start)
        if settings.warmup and settings.ray is None:
            # in the background: the server answers at once, the first job finds the libraries imported
            app.state.warmup = start_warmup(engine.warmup_steps())
        try:
            yield
        finally:
            worker.stop()
            await to_thread.run_sync(worker.join, 10)
            await to_thread.run_sync(services.store.close)
            await to_thread.run_sync(services.gallery.store.close)

    app = FastAPI(
        title="Atelier",
        version="0.1.0",
        description="Node-graph workflows for Stable Diffusion: Atelier API, ComfyUI-compatible routes, websocket.",
        lifespan=lifespan,
    )
    app.state.services = services
    app.middleware("http")(guard(settings))

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
        return validation_error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        return http_error(app, request, exc)

    @app.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - last resort
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error(500, f"internal error: {type(exc).__name__}")

    from .api import router as api_router
    from .api_gallery import router as gallery_router
    from .api_models import router as models_router
    from .comfy import app_routes
    from .comfy.routes import include_comfy_routes
    from .comfy.routes import router as comfy_router

    app.include_router(api_router)
    app.include_router(models_router)  # the canvas's model browser
    app.include_router(gallery_router)
    include_comfy_routes(app, comfy_router)  # at ComfyUI's paths and again under /api, as ComfyUI does
    app_routes.register(app)  # the ComfyUI app routes its web frontend calls (users, settings, userdata, ...)
    documented_errors_only(app)

    @app.websocket("/atelier/v1/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket_session(websocket, services, app.state.hub, "atelier")

    if settings.comfy_frontend is not None:
        _serve_comfy_frontend(app, settings.comfy_frontend)
        return app

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        page = settings.frontend / "index.html"
        if page.is_file():
            return FileResponse(page)
        return JSONResponse({"name": "Atelier", "api": "/docs", "websocket": "/atelier/v1/ws"})

    if settings.frontend.is_dir():
        app.mount("/static", StaticFiles(directory=settings.frontend), name="static")
    return app


def _serve_comfy_frontend(app: FastAPI, web_root: Path) -> None:
    """ComfyUI's web frontend at ``/``, as ComfyUI serves it: the page itself never cached, its files
    (``/assets``, ``/scripts``, ``/extensions``, ...) from the root, after every route."""

    @app.get("/", include_in_schema=False)
    def comfy_index() -> Response:
        return FileResponse(web_root / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/user.css", include_in_schema=False)
    def no_user_css() -> Response:  # the page links it; user styles come from /api/userdata/user.css
        return Response(status_code=404, media_type="text/css")

    @app.get("/templates/index.json", include_in_schema=False)
    def no_templates() -> list[str]:  # the workflow templates package is not installed: no templates
        return []

    app.mount("/", StaticFiles(directory=web_root), name="comfyui-frontend")
