"""ComfyUI-compatible routes, so existing ComfyUI API clients drive Atelier for the core node types.

A translation layer: each route reads ComfyUI's request shape, calls the same services as Atelier's API
(``service.py``) and answers in ComfyUI's shapes (``history.py``, ``catalog.py``,
``errors.py``). No behaviour lives here. Routes that read a raw JSON body are ``async`` for that
read only and call the service in a worker thread; the others are plain ``def`` (FastAPI's thread pool).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError, field_validator
from starlette.concurrency import run_in_threadpool

from ..deps import services_of
from ..responses import BODY, documented, error, file_response, upload_response
from ..service import Services
from ..service_jobs import Invalid
from .catalog import object_info_entry, system_stats
from .errors import invalid_prompt, prompt_error
from .history import history_entry, queue_item

router = APIRouter(tags=["comfyui"])
Svc = Depends(services_of)


class PromptRequest(BaseModel):
    """``POST /prompt``'s body. ComfyUI clients send more (``number``, ``extra_data``): ignored."""

    prompt: dict[str, Any] = Field(strict=True)
    client_id: str | None = None
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


@router.post("/prompt", responses=documented(400, 413))
async def post_prompt(request: Request, services: Services = Svc) -> Any:
    """Queue an API-format prompt: ``{"prompt": {...}, "client_id": ..., "front": bool, "number": float}``."""
    try:
        body = await _json(request)
    except ValueError as exc:
        return error(400, str(exc), node_errors={})
    try:
        req = PromptRequest.model_validate(body)
    except ValidationError:
        return JSONResponse(prompt_error("no_prompt", "No prompt provided"), status_code=400)
    out = await run_in_threadpool(
        lambda: services.jobs.submit(
            req.prompt, priority=1 if req.front else 0, client_id=req.client_id, source="comfy"
        )
    )
    if isinstance(out, Invalid):
        return JSONResponse(invalid_prompt(out.errors), status_code=400)
    return {"prompt_id": out.id, "number": out.number, "node_errors": {}}


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
        return error(404, f"unknown node type {node_class!r}")
    return {node_class: object_info_entry(desc)}


@router.get("/embeddings")
def embeddings(services: Services = Svc) -> Any:
    return [name.rsplit(".", 1)[0] for name in services.catalog.files_of("embeddings")]


@router.get("/system_stats")
def get_system_stats(services: Services = Svc) -> Any:
    return system_stats(services.system.info())


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
