"""Atelier's own HTTP API under /api (JSON, pydantic models; OpenAPI at /docs)."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field

from atelier.engine import folders as F

router = APIRouter(prefix="/api", tags=["atelier"])

FileKind = Literal["output", "input", "temp"]


class JobRequest(BaseModel):
    workflow: dict[str, Any] = Field(description="a workflow in Atelier's format or ComfyUI's API format")
    overrides: dict[str, Any] = Field(default_factory=dict, description="parameter or NODE_ID.INPUT -> value")
    outputs: list[str] | None = Field(default=None, description="run only up to these output nodes")
    priority: int = Field(default=0, ge=-1000, le=1000, description="higher runs first")
    client_id: str | None = Field(default=None, max_length=200)


class JobCreated(BaseModel):
    id: str
    number: int
    status: str
    warnings: list[dict[str, Any]] = Field(default_factory=list)


def state_of(request: Request) -> Any:
    return request.app.state.atelier


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def job_view(job: dict[str, Any], state: Any, *, full: bool = False) -> dict[str, Any]:
    view = {
        "id": job["id"],
        "number": job["number"],
        "priority": job["priority"],
        "status": job["status"],
        "client_id": job.get("client_id"),
        "source": job.get("source"),
        "created": job["created"],
        "started": job.get("started"),
        "finished": job.get("finished"),
        "outputs": job.get("outputs") or {},
        "error": job.get("error"),
        "executed": job.get("executed") or [],
        "cached": job.get("cached") or [],
        "overrides": job.get("overrides") or {},
    }
    if job["status"] == "running" and state.worker is not None:
        view["live"] = state.worker.live.get(job["id"])
    if full:
        view["workflow"] = job["workflow"]
    return view


def submit(
    state: Any,
    workflow: Any,
    overrides: dict[str, Any],
    outputs: list[str] | None,
    priority: int,
    client_id: str | None,
    source: str,
) -> tuple[str, int, list[dict[str, Any]]] | JSONResponse:
    result = state.engine.check(workflow, overrides, outputs)
    if not result.ok:
        errs = [e.model_dump() for e in result.errors]
        return error(400, "the workflow is not valid", node_errors=errs)
    job_id = uuid.uuid4().hex
    if state.hub is not None:
        state.hub.owners[job_id] = client_id
    number = state.store.add_job(
        job_id,
        workflow,
        overrides,
        priority=priority,
        outputs_requested=outputs,
        client_id=client_id,
        source=source,
    )
    state.queue_changed()
    return job_id, number, [w.model_dump() for w in result.warnings]


@router.post(
    "/jobs", status_code=201, response_model=JobCreated, responses={400: {"description": "invalid workflow"}}
)
async def create_job(body: JobRequest, request: Request) -> Any:
    """Validate a workflow and queue it. A 400 lists every node error."""
    state = state_of(request)
    out = submit(state, body.workflow, body.overrides, body.outputs, body.priority, body.client_id, "atelier")
    if isinstance(out, JSONResponse):
        return out
    job_id, number, warnings = out
    return JobCreated(id=job_id, number=number, status="queued", warnings=warnings)


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, request: Request, workflow: bool = False) -> Any:
    """A job's status, outputs, error and, while it runs, its live progress."""
    state = state_of(request)
    job = state.store.get_job(job_id)
    if job is None:
        return error(404, f"no job {job_id!r}")
    return job_view(job, state, full=workflow)


@router.get("/jobs")
async def list_jobs(
    request: Request,
    offset: int = Query(0, ge=0),
    limit: int = Query(50, ge=1, le=500),
    status: Literal["success", "failed", "interrupted", "cancelled", "invalid"] | None = None,
) -> Any:
    """History: finished jobs, newest first, with paging."""
    state = state_of(request)
    rows, total = state.store.history(offset=offset, limit=limit, status=status)
    return {"total": total, "offset": offset, "limit": limit, "jobs": [job_view(r, state) for r in rows]}


@router.get("/queue")
async def queue(request: Request) -> Any:
    state = state_of(request)
    running, queued = state.store.queue()
    return {"running": [job_view(j, state) for j in running], "queued": [job_view(j, state) for j in queued]}


@router.post("/jobs/{job_id}/cancel")
async def cancel(job_id: str, request: Request) -> Any:
    """Cancel a queued job, or interrupt it if it is running."""
    state = state_of(request)
    job = state.store.get_job(job_id)
    if job is None:
        return error(404, f"no job {job_id!r}")
    if job["status"] == "queued" and state.store.cancel_queued(job_id):
        state.queue_changed()
        return {"id": job_id, "status": "cancelled"}
    # not queued (any more: the worker may have just taken it): interrupt it if it is the running job
    if state.worker is not None and state.worker.interrupt(job_id):
        return {"id": job_id, "status": "interrupting"}
    job = state.store.get_job(job_id) or job
    return error(409, f"job {job_id} is {job['status']}: nothing to cancel")


@router.delete("/jobs/{job_id}")
async def delete_job(job_id: str, request: Request) -> Any:
    """Remove a finished job from the history (its files stay)."""
    state = state_of(request)
    if state.store.delete_job(job_id):
        return {"deleted": job_id}
    job = state.store.get_job(job_id)
    return error(
        404 if job is None else 409, f"no job {job_id!r}" if job is None else "the job is not finished"
    )


@router.post("/interrupt")
async def interrupt(request: Request) -> Any:
    state = state_of(request)
    return {"interrupted": state.worker.interrupt() if state.worker else None}


@router.get("/nodes")
async def nodes(request: Request) -> Any:
    """The node catalogue: every node type with its inputs, outputs and choices."""
    return state_of(request).engine.describe()


@router.get("/types")
def socket_types(request: Request) -> Any:
    """Socket types of the catalogue: what travels on each and the colour the canvas draws it in."""
    return state_of(request).registry.describe_types()


@router.get("/nodes/{type_name}")
async def node(type_name: str, request: Request) -> Any:
    reg = state_of(request).registry
    if type_name not in reg:
        return error(404, f"unknown node type {type_name!r}")
    return state_of(request).engine.describe(type_name)


@router.get("/models")
async def model_kinds(request: Request) -> Any:
    files = state_of(request).folders
    return {kind: files.list_models(kind) for kind in files.models}


@router.get("/models/{kind}")
async def models(kind: str, request: Request) -> Any:
    files = state_of(request).folders
    if kind not in files.models:
        return error(404, f"unknown model kind {kind!r}; kinds: {', '.join(files.models)}")
    return {"kind": kind, "files": files.list_models(kind)}


def store_upload(
    state: Any, data: bytes, filename: str, subfolder: str, overwrite: bool
) -> dict[str, Any] | JSONResponse:
    """Check that ``data`` is an image and write it under the input folder without escaping it."""
    from PIL import Image

    settings = state.settings
    if len(data) > settings.max_upload_bytes:
        return error(413, f"upload is larger than {settings.max_upload_bytes} bytes")
    name = Path(filename or "").name
    if not name or name.startswith("."):
        return error(400, "the upload needs a file name")
    if not name.lower().endswith(F.IMAGE_EXTENSIONS):
        # an image polyglot saved as .html or .svg would be served back as a page on this origin
        return error(400, f"{name!r}: uploads need an image file extension ({', '.join(F.IMAGE_EXTENSIONS)})")
    try:
        Image.MAX_IMAGE_PIXELS = settings.max_image_pixels
        with Image.open(io.BytesIO(data)) as im:
            # PIL only warns below twice its MAX_IMAGE_PIXELS: refuse anything above the limit here
            if im.size[0] * im.size[1] > settings.max_image_pixels:
                return error(
                    400, f"{name!r} is {im.size[0]}x{im.size[1]}: over {settings.max_image_pixels} pixels"
                )
            im.verify()
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            im.load()
    except Exception as exc:
        return error(400, f"{name!r} is not an image Atelier can read: {exc}")
    input_dir = state.folders.input
    try:
        folder = F.resolve_inside(input_dir, subfolder) if subfolder else input_dir.resolve()
        target = F.resolve_inside(folder, name)
    except F.UnsafePathError as exc:
        return error(400, str(exc))
    folder.mkdir(parents=True, exist_ok=True)
    if target.exists() and not overwrite:
        stem, suffix = target.stem, target.suffix
        n = 1
        while target.exists():
            target = folder / f"{stem} ({n}){suffix}"
            n += 1
    target.write_bytes(data)
    rel = target.relative_to(input_dir.resolve()).as_posix()
    sub, _, fname = rel.rpartition("/")
    return {"name": fname, "subfolder": sub, "type": "input", "width": width, "height": height}


@router.post("/upload")
async def upload(
    request: Request, image: UploadFile = File(...), subfolder: str = Form(""), overwrite: bool = Form(False)
) -> Any:
    """Upload an image into the input folder (checked to decode as an image, size-limited)."""
    state = state_of(request)
    data = await image.read(state.settings.max_upload_bytes + 1)
    return store_upload(state, data, image.filename or "", subfolder, overwrite)


def resolve_file(fol: F.Folders, kind: str, name: str, subfolder: str = "") -> Path | JSONResponse:
    base = {"output": fol.output, "input": fol.input, "temp": fol.temp}.get(kind)
    if base is None:
        return error(400, f"unknown file type {kind!r}: output, input or temp")
    try:
        folder = F.resolve_inside(base, subfolder) if subfolder else base.resolve()
        path = F.resolve_inside(folder, name)
        base_resolved = base.resolve()
        if base_resolved not in path.parents:
            raise F.UnsafePathError(f"{name!r} reaches outside the {kind} folder")
    except F.UnsafePathError as exc:
        return error(400, str(exc))
    if not path.is_file():
        return error(404, f"no {kind} file {name!r}")
    return path


@router.get("/files/{kind}/{name:path}")
async def get_file(kind: str, name: str, request: Request) -> Any:
    """An output, input or temp file by name (never outside its folder)."""
    path = resolve_file(state_of(request).folders, kind, name)
    return path if isinstance(path, JSONResponse) else FileResponse(path)


class WorkflowBody(BaseModel):
    workflow: dict[str, Any]


@router.get("/workflows")
async def list_workflows(request: Request) -> Any:
    return {"workflows": state_of(request).store.list_workflows()}


def _valid_name(name: str) -> bool:
    return 0 < len(name) <= 200 and not any(c in name for c in "/\\\x00") and name.strip() == name


WORKFLOWS_DIR = Path(__file__).resolve().parents[2] / "workflows"


@router.get("/workflows/_default")
async def default_workflow() -> Any:
    """The graph a first visit starts from: the portrait workflow."""
    import json

    return json.loads((WORKFLOWS_DIR / "portrait.json").read_text(encoding="utf-8"))


@router.get("/workflows/_shipped")
async def shipped_workflows() -> Any:
    """The ready workflows that ship with Atelier (workflows/*.json), by file name."""
    import json

    out = {}
    for p in sorted(WORKFLOWS_DIR.glob("*.json")):
        try:
            out[p.stem] = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    return out


@router.get("/workflows/{name}")
async def get_workflow(name: str, request: Request) -> Any:
    data = state_of(request).store.get_workflow(name)
    return data if data is not None else error(404, f"no workflow named {name!r}")


@router.put("/workflows/{name}")
async def put_workflow(name: str, body: WorkflowBody, request: Request) -> Any:
    """Save a workflow in the library (it must parse as a workflow; unknown node types are kept)."""
    from atelier.engine.workflow import WorkflowFormatError, parse_workflow

    if not _valid_name(name):
        return error(400, "workflow names are 1-200 characters without / or \\")
    try:
        parse_workflow(body.workflow)
    except (WorkflowFormatError, ValueError) as exc:
        return error(400, f"not a workflow: {exc}")
    state_of(request).store.save_workflow(name, body.workflow)
    return {"saved": name}


@router.delete("/workflows/{name}")
async def delete_workflow(name: str, request: Request) -> Any:
    if state_of(request).store.delete_workflow(name):
        return {"deleted": name}
    return error(404, f"no workflow named {name!r}")


@router.get("/system")
async def system(request: Request) -> Any:
    from .app import system_info

    return system_info(state_of(request))


@router.post("/cache/clear")
async def clear_cache(request: Request) -> Any:
    state = state_of(request)
    before = state.executor.cache.stats()
    state.executor.cache.clear()
    return {"cleared_entries": before.entries, "cleared_bytes": before.bytes}


@router.post("/models/unload")
async def unload_models(request: Request) -> Any:
    state = state_of(request)
    state.engine.free()  # cached handles keep modules alive: both go
    return {"unloaded": True}


@router.post("/validate")
async def validate(body: JobRequest, request: Request) -> Any:
    """Check a workflow without queueing it."""
    result = state_of(request).engine.check(body.workflow, body.overrides, body.outputs)
    return {"ok": result.ok, "errors": [e.model_dump() for e in result.errors]}
