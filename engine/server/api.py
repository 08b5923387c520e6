"""Atelier's own HTTP API under /atelier/v1 (JSON, pydantic models; OpenAPI at /docs): a versioned prefix that
cannot collide with ComfyUI's routes (which ComfyUI serves both bare and under /api).

Routes translate between HTTP and the services (``service.py``). Every route that reaches a service is a
plain ``def``: FastAPI runs it in its thread pool, so SQLite, folder walks, validation and image decoding
never run on the event loop.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from pydantic import BaseModel, Field

from .api_views import job_view
from .deps import services_of
from .responses import BODY, documented, error, file_response, upload_response
from .service import Services
from .service_catalog import UnknownModelKind
from .service_convert import NotConverted, NoWorkflow
from .service_files import UploadRefused
from .service_jobs import (
    Cancelled,
    Deleted,
    Interrupting,
    Invalid,
    JobSnapshot,
    NoSuchJob,
    NotCancellable,
    NotFinished,
    QueueFull,
    Refused,
)
from .service_library import NotSaved
from .service_masks import parse_original_ref
from .service_masks import upload_mask as upload_mask_into
from .service_pipelines import NoSuchPipeline, NotInstalled

router = APIRouter(prefix="/atelier/v1", tags=["atelier"])

Svc = Depends(services_of)


class JobRequest(BaseModel):
    workflow: dict[str, Any] = Field(
        description="a workflow in Atelier's format or ComfyUI's API or UI format"
    )
    overrides: dict[str, Any] = Field(default_factory=dict, description="parameter or NODE_ID.INPUT -> value")
    outputs: list[str] | None = Field(default=None, description="run only up to these output nodes")
    priority: int = Field(default=0, ge=-1000, le=1000, strict=True, description="higher runs first")
    client_id: str | None = Field(default=None, max_length=200)


class JobCreated(BaseModel):
    id: str
    number: int
    status: str
    warnings: list[dict[str, Any]] = Field(default_factory=list)


class WorkflowBody(BaseModel):
    workflow: dict[str, Any]


ConvertTarget = Literal["atelier", "comfyui-api"]


class ConvertRequest(BaseModel):
    workflow: dict[str, Any] = Field(
        description="a workflow in Atelier's format or ComfyUI's API or UI format"
    )
    to: ConvertTarget = Field(default="atelier", description="the format to answer in")


# -- jobs --------------------------------------------------------------------------------------------


@router.post(
    "/jobs",
    status_code=201,
    response_model=JobCreated,
    responses=documented(
        *BODY,
        503,
        e400="the body is not JSON, or the workflow is not valid: `{error, node_errors: [{code, message, node, "
        "node_type, input}]}`",
        e413="the body is over the size limit, or the job exceeds the server's limits or memory (admission "
        "control): `{error, node_errors}` with code `over_limit` or `over_memory`, naming node, input and limit",
        e503="the queue is full (`atelier serve --max-queued`): try again after `Retry-After`",
    ),
)
def create_job(body: JobRequest, services: Services = Svc) -> Any:
    """Validate a workflow, estimate what it needs and queue it. A 400 lists every node error; a 413
    every limit the job goes over (nothing is queued either way)."""
    out = services.jobs.submit(
        body.workflow,
        overrides=body.overrides,
        outputs=body.outputs,
        priority=body.priority,
        client_id=body.client_id,
        source="atelier",
    )
    if isinstance(out, QueueFull):
        response = error(503, out.errors[0].message)
        response.headers["Retry-After"] = "5"
        return response
    if isinstance(out, Refused):
        first = next(e for e in out.errors if e.severity == "error")
        message = f"the job exceeds this server's limits: {str(first).split('] ', 1)[-1]}"
        return error(413, message, node_errors=[e.model_dump() for e in out.errors])
    if isinstance(out, Invalid):
        return error(400, "the workflow is not valid", node_errors=[e.model_dump() for e in out.errors])
    return JobCreated(
        id=out.id, number=out.number, status="queued", warnings=[w.model_dump() for w in out.warnings]
    )


@router.get("/jobs/{job_id}", responses=documented(404, 422))
def get_job(job_id: str, workflow: bool = False, services: Services = Svc) -> Any:
    """A job's status, outputs, error and, while it runs, its live progress."""
    snapshot = services.jobs.get(job_id)
    if snapshot is None:
        return error(404, f"no job {job_id!r}")
    return job_view(snapshot, full=workflow)


@router.get("/jobs", responses=documented(422))
def list_jobs(
    offset: int = Query(0, ge=0),
    limit: int = Query(50, ge=1, le=500),
    status: Literal["success", "failed", "interrupted", "cancelled", "invalid"] | None = None,
    services: Services = Svc,
) -> Any:
    """History: finished jobs, newest first, with paging."""
    page = services.jobs.history(offset=offset, limit=limit, status=status)
    jobs = [job_view(JobSnapshot(j)) for j in page.jobs]
    return {"total": page.total, "offset": offset, "limit": limit, "jobs": jobs}


@router.get("/queue")
def queue(services: Services = Svc) -> Any:
    q = services.jobs.queue()
    return {
        "running": [job_view(s) for s in q.running],
        "queued": [job_view(JobSnapshot(j)) for j in q.queued],
    }


@router.post("/jobs/{job_id}/cancel", responses=documented(404, 409))
def cancel(job_id: str, services: Services = Svc) -> Any:
    """Cancel a queued job, or interrupt it if it is running."""
    out = services.jobs.cancel(job_id)
    if isinstance(out, Cancelled):
        return {"id": job_id, "status": "cancelled"}
    if isinstance(out, Interrupting):
        return {"id": job_id, "status": "interrupting"}
    if isinstance(out, NoSuchJob):
        return error(404, f"no job {job_id!r}")
    assert isinstance(out, NotCancellable)
    return error(409, f"job {job_id} is {out.status}: nothing to cancel")


@router.delete("/jobs/{job_id}", responses=documented(404, 409))
def delete_job(job_id: str, services: Services = Svc) -> Any:
    """Remove a finished job from the history (its files stay)."""
    out = services.jobs.delete(job_id)
    if isinstance(out, Deleted):
        return {"deleted": job_id}
    if isinstance(out, NoSuchJob):
        return error(404, f"no job {job_id!r}")
    assert isinstance(out, NotFinished)
    return error(409, "the job is not finished")


@router.post("/interrupt")
def interrupt(services: Services = Svc) -> Any:
    return {"interrupted": services.jobs.interrupt()}


# -- pipelines ---------------------------------------------------------------------------------------


class PipelineRun(BaseModel):
    inputs: dict[str, Any] = Field(default_factory=dict, description="the pipeline's inputs by name")
    version: str | None = Field(default=None, description="pin a version (default: the newest)")
    priority: int = Field(default=0, ge=-1000, le=1000, strict=True)
    client_id: str | None = Field(default=None, max_length=200)


@router.get("/pipelines")
def list_pipelines(services: Services = Svc) -> Any:
    """The pipeline library: each pipeline's versions and its newest version's interface."""
    return services.pipelines.list()


class PipelineInstall(BaseModel):
    name: str = Field(description="the library name (letters, digits, '_', '-', '.')", max_length=100)
    workflow: dict[str, Any] = Field(description="the pipeline: an Atelier workflow with metadata.version")


@router.post(
    "/pipelines",
    status_code=201,
    responses=documented(
        *BODY, 409, e400="not a pipeline (bad name, no version)", e409="that version is installed already"
    ),
)
def install_pipeline(body: PipelineInstall, services: Services = Svc) -> Any:
    """Save a pipeline into the user's library (``--pipelines-dir``); the catalogue offers it at once as
    ``pipeline:NAME``. An installed version is never replaced: raise the version instead (409)."""
    out = services.pipelines.install(body.name, body.workflow)
    if isinstance(out, NotInstalled):
        return error(409 if out.conflict else 400, out.message)
    return out


@router.get("/pipelines/{name}", responses=documented(404, e404="no such pipeline"))
def get_pipeline(name: str, version: str | None = None, services: Services = Svc) -> Any:
    """A pipeline's interface (inputs, outputs, types, defaults, descriptions) and its workflow."""
    out = services.pipelines.get(name, version)
    if isinstance(out, NoSuchPipeline):
        return error(404, out.message)
    return out


@router.post(
    "/pipelines/{name}/jobs",
    status_code=201,
    response_model=JobCreated,
    responses=documented(*BODY, 404, e400="invalid inputs", e404="no such pipeline"),
)
def run_pipeline(name: str, body: PipelineRun, services: Services = Svc) -> Any:
    """Run a pipeline like a function: its input values in, a queued job out (results as for any job)."""
    out = services.pipelines.run(name, body.inputs, body.version, body.priority, body.client_id)
    if isinstance(out, NoSuchPipeline):
        return error(404, out.message)
    if isinstance(out, Invalid):
        return error(400, "the inputs are not valid", node_errors=[e.model_dump() for e in out.errors])
    return JobCreated(
        id=out.id, number=out.number, status="queued", warnings=[w.model_dump() for w in out.warnings]
    )


@router.post("/validate", responses=documented(*BODY))
def validate(body: JobRequest, services: Services = Svc) -> Any:
    """Check a workflow without queueing it."""
    out = services.jobs.check(body.workflow, overrides=body.overrides, outputs=body.outputs)
    return {"ok": out.ok, "errors": [e.model_dump() for e in out.errors]}


# -- the catalogue -----------------------------------------------------------------------------------


@router.get("/nodes")
def nodes(services: Services = Svc) -> Any:
    """The node catalogue: every node type with its inputs, outputs and choices, and the library's
    pipelines as ``pipeline:NAME`` node types (category ``pipelines``)."""
    return services.catalog.nodes(pipelines=True)


@router.get("/types")
def socket_types(services: Services = Svc) -> Any:
    """Socket types of the catalogue: what travels on each and the colour the canvas draws it in."""
    return services.catalog.socket_types()


@router.get("/nodes/{type_name}", responses=documented(404))
def node(type_name: str, services: Services = Svc) -> Any:
    desc = services.catalog.node(type_name)
    return desc if desc is not None else error(404, f"unknown node type {type_name!r}")


@router.get("/models")
def model_kinds(services: Services = Svc) -> Any:
    return services.catalog.model_kinds()


@router.get("/models/{kind}", responses=documented(404))
def models(kind: str, services: Services = Svc) -> Any:
    out = services.catalog.models(kind)
    if isinstance(out, UnknownModelKind):
        return error(404, f"unknown model kind {kind!r}; kinds: {', '.join(out.kinds)}")
    return {"kind": out.kind, "files": out.files}


# -- files -------------------------------------------------------------------------------------------


@router.post("/upload", responses=documented(*BODY, e400="no file name, not an image, or a bad subfolder"))
def upload(
    image: UploadFile = File(...),
    subfolder: str = Form(""),
    overwrite: bool = Form(False),
    services: Services = Svc,
) -> Any:
    """Upload an image into the input folder (checked to decode as an image, size-limited)."""
    data = image.file.read(services.settings.max_upload_bytes + 1)
    return upload_response(services.files.upload(data, image.filename or "", subfolder, overwrite))


@router.post(
    "/upload/mask",
    responses=documented(
        *BODY, 404, e400="not an image, a bad original_ref or subfolder, or a mask not the image's size"
    ),
)
def upload_mask(
    image: UploadFile = File(...),
    original_ref: str = Form(...),
    subfolder: str = Form(""),
    overwrite: bool = Form(False),
    services: Services = Svc,
) -> Any:
    """Save a painted mask: a copy of the image ``original_ref`` names (JSON ``{filename, subfolder,
    type}``) with the alpha of ``image`` as its alpha, stored as a PNG in the input folder (LoadImage's
    MASK: transparent = masked)."""
    original = parse_original_ref(original_ref)
    if isinstance(original, UploadRefused):
        return upload_response(original)
    data = image.file.read(services.settings.max_upload_bytes + 1)
    return upload_response(
        upload_mask_into(services.files, data, image.filename or "", subfolder, overwrite, original)
    )


@router.get("/files/{kind}/{name:path}", responses=documented(400, 404))
def get_file(kind: str, name: str, services: Services = Svc) -> Any:
    """An output, input or temp file by name (never outside its folder)."""
    return file_response(services.files.find(kind, name))


# -- the workflow library ------------------------------------------------------------------------------


@router.get("/workflows")
def list_workflows(services: Services = Svc) -> Any:
    return {"workflows": services.library.list()}


@router.get("/workflows/_default")
def default_workflow(services: Services = Svc) -> Any:
    """The graph a first visit starts from: the portrait workflow."""
    return services.library.default()


@router.get("/workflows/_shipped")
def shipped_workflows(services: Services = Svc) -> Any:
    """The ready workflows that ship with Atelier (workflows/*.json), by file name."""
    return services.library.shipped()


@router.get("/workflows/{name}", responses=documented(404))
def get_workflow(name: str, services: Services = Svc) -> Any:
    data = services.library.get(name)
    return data if data is not None else error(404, f"no workflow named {name!r}")


@router.put("/workflows/{name}", responses=documented(*BODY))
def put_workflow(name: str, body: WorkflowBody, services: Services = Svc) -> Any:
    """Save a workflow in the library (it must parse as a workflow; unknown node types are kept)."""
    out = services.library.save(name, body.workflow)
    if isinstance(out, NotSaved):
        return error(400, out.message)
    return {"saved": out.name}


@router.delete("/workflows/{name}", responses=documented(404))
def delete_workflow(name: str, services: Services = Svc) -> Any:
    if services.library.delete(name):
        return {"deleted": name}
    return error(404, f"no workflow named {name!r}")


# -- conversion --------------------------------------------------------------------------------------


def _converted(out: Any) -> Any:
    if isinstance(out, NoWorkflow):
        return error(404, out.message)
    if isinstance(out, NotConverted):
        return error(400, out.message, node_errors=[e.model_dump() for e in out.errors])
    return {"workflow": out.workflow, "source": out.source}


@router.post("/convert", responses=documented(*BODY, e400="not a workflow, or nodes Atelier lacks"))
def convert(body: ConvertRequest, services: Services = Svc) -> Any:
    """A workflow in any format Atelier reads (ComfyUI's UI format included) in Atelier's format or
    ComfyUI's API format: ``{"workflow", "source"}`` (the format read). A 400 lists every node that cannot
    be converted, as validation does."""
    return _converted(services.convert.convert(body.workflow, body.to))


@router.post(
    "/convert/image",
    responses=documented(
        *BODY,
        404,
        e400="not an image Atelier reads, or not convertible",
        e404="the image carries no workflow",
    ),
)
def convert_image(
    image: UploadFile = File(...),
    to: ConvertTarget = Form("atelier"),
    services: Services = Svc,
) -> Any:
    """The workflow a PNG or WEBP carries (Atelier's, or ComfyUI's UI workflow or prompt), converted."""
    data = image.file.read(services.settings.max_upload_bytes + 1)
    if len(data) > services.settings.max_upload_bytes:
        return error(413, f"the image is larger than {services.settings.max_upload_bytes} bytes")
    return _converted(services.convert.convert_image(data, image.filename or "image", to))


# -- the machine -------------------------------------------------------------------------------------


@router.get("/system")
def system(services: Services = Svc) -> Any:
    return services.system.info()


@router.post("/cache/clear")
def clear_cache(services: Services = Svc) -> Any:
    out = services.system.clear_cache()
    return {"cleared_entries": out.entries, "cleared_bytes": out.bytes}


@router.post("/models/unload")
def unload_models(services: Services = Svc) -> Any:
    services.system.unload_models()
    return {"unloaded": True}
