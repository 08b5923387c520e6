"""ComfyUI-compatible routes, so existing ComfyUI API clients drive Atelier for the core node types.

ComfyUI serves every route twice, at its path and under ``/api`` (``/prompt`` and ``/api/prompt``, ``/ws``
and ``/api/ws``); ``include_comfy_routes`` registers a router so, the ``/api`` twins hidden from the
OpenAPI schema.

A translation layer: each route reads ComfyUI's request shape, calls the same services as Atelier's API
(``service.py``) and answers in ComfyUI's shapes (``history.py``, ``catalog.py``,
``errors.py``). No behaviour lives here. Routes that read a raw JSON body are ``async`` for that
read only and call the service in a worker thread; the others are plain ``def`` (FastAPI's thread pool).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, File, Form, Request, UploadFile, WebSocket
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError, field_validator
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from ..deps import services_of
from ..responses import BODY, documented, error, file_response, upload_response
from ..service import Services
from ..service_files import UploadRefused
from ..service_jobs import Invalid
from ..service_masks import parse_original_ref
from ..service_masks import upload_mask as upload_mask_into
from ..session import websocket_session
from .catalog import object_info_entry, system_stats
from .errors import invalid_prompt, node_errors, prompt_error
from .history import history_entry, queue_item
from .messages import queue_info

router = APIRouter(tags=["comfyui"])
Svc = Depends(services_of)

#: a prompt id a client may choose, as ComfyUI takes it: a UUID in canonical lowercase hyphenated form
PROMPT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def include_comfy_routes(app: FastAPI, comfy_router: APIRouter) -> None:
    """Register ``comfy_router``'s routes (websockets included) as ComfyUI does: at their paths and again
    under ``/api``, one handler for both, the ``/api`` twins left out of the OpenAPI schema."""
    app.include_router(comfy_router)
    app.include_router(comfy_router, prefix="/api", include_in_schema=False)


class PromptRequest(BaseModel):
    """``POST /prompt``'s body. ComfyUI clients send more (``number``, ``extra_data``): ignored."""

    prompt: dict[str, Any] = Field(strict=True)
    client_id: str | None = None
    prompt_id: str | None = None
    front: bool = False

    @field_validator("client_id", mode="before")
    @classmethod
    def _client_id(cls, value: Any) -> str | None:
        return value if isinstance(value, str) else None  # ComfyUI ignores a client id it cannot use

    @field_validator("front", mode="before")
    @classmethod
    def _front(cls, value: Any) -> bool:
        return bool(value)


class EditRequest(BaseModel):
    """``POST /queue`` and ``POST /history``: ``{"clear": bool, "delete": [prompt ids]}``."""

    clear: bool = False
    delete: list[str] = Field(default_factory=list)

    @field_validator("clear", mode="before")
    @classmethod
    def _clear(cls, value: Any) -> bool:
        return bool(value)

    @field_validator("delete", mode="before")
    @classmethod
    def _delete(cls, value: Any) -> list[str]:
        value = value or []
        if not isinstance(value, list):
            raise ValueError("'delete' must be a list of prompt ids")
        return [v for v in value if isinstance(v, str)]  # ComfyUI skips what is not an id


async def _json(request: Request) -> Any:
    """The body as JSON; ``ValueError`` when it is not."""
    try:
        return await request.json()
    except Exception as exc:
        raise ValueError("request body is not valid JSON") from exc


async def _edit_request(request: Request) -> EditRequest | JSONResponse:
    try:
        body = await _json(request)
    except ValueError as exc:
        return error(400, str(exc))
    if not isinstance(body, dict):
        return error(400, "expected an object with 'clear' or 'delete'")
    try:
        return EditRequest.model_validate(body)
    except ValidationError:
        return error(400, "'delete' must be a list of prompt ids")


# -- prompts -----------------------------------------------------------------------------------------


def dependents(prompt: dict[str, Any], services: Services) -> Callable[[str], list[str]]:
    """For ``node_errors``: the output nodes of ``prompt`` that need a node (itself, or downstream)."""
    consumers: dict[str, set[str]] = {}
    for nid, node in prompt.items():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        for value in (inputs or {}).values() if isinstance(inputs, dict) else ():
            if isinstance(value, list) and len(value) == 2:
                consumers.setdefault(str(value[0]), set()).add(str(nid))

    def is_output(nid: str) -> bool:
        node = prompt.get(nid)
        kind = node.get("class_type") if isinstance(node, dict) else None
        desc = services.catalog.node(kind) if isinstance(kind, str) else None
        return bool(desc and desc["output_node"])

    def outputs_of(nid: str) -> list[str]:
        seen: set[str] = set()
        stack = [nid]
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                stack += consumers.get(n, ())
        return sorted(n for n in seen if is_output(n))

    return outputs_of


@router.post("/prompt", responses=documented(400, 413))
async def post_prompt(request: Request, services: Services = Svc) -> Any:
    """Queue an API-format prompt: ``{"prompt": {...}, "client_id": ..., "prompt_id": ..., "front": bool}``.

    The prompt's websocket messages wait until this reply has gone out (``Hub.hold``): a client learns the
    prompt id here, and a job served from the cache finishes in milliseconds."""
    try:
        body = await _json(request)
    except ValueError as exc:
        return error(400, str(exc), node_errors={})
    try:
        req = PromptRequest.model_validate(body)
    except ValidationError:
        return JSONResponse(prompt_error("no_prompt", "No prompt provided"), status_code=400)
    prompt_id = req.prompt_id
    if prompt_id is not None and not PROMPT_ID.fullmatch(prompt_id):
        refused = prompt_error("invalid_prompt_id", "prompt_id must be a valid UUID")
        return JSONResponse(refused, status_code=400)
    prompt_id = prompt_id or str(uuid.uuid4())
    hub = getattr(request.app.state, "hub", None)  # none when the app runs without its lifespan (tests)
    if hub is not None:
        hub.hold(prompt_id)

    def submit() -> Any:
        if services.jobs.get(prompt_id) is not None:
            return prompt_error("invalid_prompt_id", f"a prompt with id {prompt_id} exists already")
        out = services.jobs.submit(
            req.prompt,
            priority=1 if req.front else 0,
            client_id=req.client_id,
            source="comfy",
            job_id=prompt_id,
        )
        if isinstance(out, Invalid):
            return invalid_prompt(out.errors, dependents(req.prompt, services))
        warnings = node_errors(out.warnings, dependents(req.prompt, services))
        return {"prompt_id": out.id, "number": out.number, "node_errors": warnings}

    answer = await run_in_threadpool(submit)
    if "error" in answer:
        if hub is not None:
            hub.release(prompt_id)
        return JSONResponse(answer, status_code=400)

    async def release() -> None:  # async: on the event loop, where the hub lives (not the thread pool)
        if hub is not None:
            hub.release(prompt_id)

    return JSONResponse(answer, background=BackgroundTask(release))


@router.get("/prompt")
def get_prompt(services: Services = Svc) -> Any:
    """The queue's length, as ComfyUI's ``status`` messages carry it."""
    return queue_info(services.jobs.queue_remaining())


@router.get("/queue")
def get_queue(services: Services = Svc) -> Any:
    q = services.jobs.queue()
    return {
        "queue_running": [queue_item(s.job) for s in q.running],
        "queue_pending": [queue_item(j) for j in q.queued],
    }


@router.post("/queue", responses=documented(400, 413))
async def edit_queue(request: Request, services: Services = Svc) -> Any:
    edit = await _edit_request(request)
    if isinstance(edit, JSONResponse):
        return edit
    await run_in_threadpool(lambda: services.jobs.cancel_queued(edit.delete, everything=edit.clear))
    return {}


@router.post("/interrupt")
def comfy_interrupt(services: Services = Svc) -> Any:
    services.jobs.interrupt()
    return {}


class FreeRequest(BaseModel):
    """``POST /free``: ``{"unload_models": bool, "free_memory": bool}``."""

    unload_models: bool = False
    free_memory: bool = False


@router.post("/free", responses=documented(400, 413))
async def free(request: Request, services: Services = Svc) -> Any:
    """Unload the models (and with them the cached outputs that hold them), or free the cached outputs."""
    try:
        body = await _json(request)
        req = FreeRequest.model_validate(body if isinstance(body, dict) else {})
    except (ValueError, ValidationError):
        return error(400, "expected an object with 'unload_models' or 'free_memory' (true or false)")
    if req.unload_models:
        await run_in_threadpool(services.system.unload_models)
    elif req.free_memory:
        await run_in_threadpool(services.system.clear_cache)
    return {}


# -- the websocket -----------------------------------------------------------------------------------


@router.websocket("/ws")
async def comfy_ws(websocket: WebSocket) -> None:
    """ComfyUI's websocket protocol, with or without ``?clientId=`` (without one, the server makes up the
    session id and says it in the first ``status`` message's ``sid``)."""
    app = websocket.app
    await websocket_session(websocket, app.state.services, app.state.hub, "comfy")


# -- history -----------------------------------------------------------------------------------------


@router.get("/history", responses=documented(422))
def history(max_items: int | None = None, offset: int = 0, services: Services = Svc) -> Any:
    limit = max(1, min(max_items or 200, 10000))
    page = services.jobs.history(offset=max(0, offset), limit=limit)
    return {job.id: history_entry(job) for job in reversed(page.jobs)}


@router.get("/history/{prompt_id}")
def history_one(prompt_id: str, services: Services = Svc) -> Any:
    snapshot = services.jobs.get(prompt_id)
    if snapshot is None or not snapshot.job.is_finished:
        return {}
    return {prompt_id: history_entry(snapshot.job)}


@router.post("/history", responses=documented(400, 413))
async def history_edit(request: Request, services: Services = Svc) -> Any:
    edit = await _edit_request(request)
    if isinstance(edit, JSONResponse):
        return edit
    await run_in_threadpool(lambda: services.jobs.forget(edit.delete, everything=edit.clear))
    return {}


# -- the catalogue and the machine -------------------------------------------------------------------


@router.get("/object_info")
def object_info(services: Services = Svc) -> Any:
    return {name: object_info_entry(d) for name, d in services.catalog.nodes().items()}


@router.get("/object_info/{node_class}", responses=documented(404))
def object_info_one(node_class: str, services: Services = Svc) -> Any:
    desc = services.catalog.node(node_class)
    if desc is None:
        return {}  # as ComfyUI: an empty object for a node type it does not know
    return {node_class: object_info_entry(desc)}


@router.get("/embeddings")
def embeddings(services: Services = Svc) -> Any:
    return [name.rsplit(".", 1)[0] for name in services.catalog.files_of("embeddings")]


@router.get("/system_stats")
def get_system_stats(services: Services = Svc) -> Any:
    settings = services.settings
    argv = ["--multi-user"] if settings.multi_user else []
    if settings.previews:
        argv += ["--preview-method", settings.preview_method]
    return system_stats(services.system.info(), argv)


# -- files -------------------------------------------------------------------------------------------


@router.get("/view", responses=documented(400, 404, 422))
def view(filename: str, subfolder: str = "", type: str = "output", services: Services = Svc) -> Any:
    return file_response(services.files.find(type, filename, subfolder))


@router.post("/upload/image", responses=documented(*BODY))
def upload_image(
    image: UploadFile = File(...),
    subfolder: str = Form(""),
    overwrite: str = Form("false"),
    type: str = Form("input"),
    services: Services = Svc,
) -> Any:
    if type != "input":
        return error(400, "uploads go to the input folder (type=input)")
    data = image.file.read(services.settings.max_upload_bytes + 1)
    overwriting = overwrite.lower() in ("1", "true", "yes")
    return upload_response(services.files.upload(data, image.filename or "", subfolder, overwriting))


@router.post("/upload/mask", responses=documented(*BODY, 404))
def upload_mask(
    image: UploadFile = File(...),
    original_ref: str = Form(...),
    subfolder: str = Form(""),
    overwrite: str = Form("false"),
    type: str = Form("input"),
    services: Services = Svc,
) -> Any:
    """ComfyUI's mask editor saves here: a copy of ``original_ref``'s image with the mask's alpha."""
    if type != "input":
        return error(400, "uploads go to the input folder (type=input)")
    original = parse_original_ref(original_ref)
    if isinstance(original, UploadRefused):
        return upload_response(original)
    data = image.file.read(services.settings.max_upload_bytes + 1)
    overwriting = overwrite.lower() in ("1", "true", "yes")
    return upload_response(
        upload_mask_into(services.files, data, image.filename or "", subfolder, overwriting, original)
    )
