"""ComfyUI-compatible routes, so existing ComfyUI API clients drive Atelier for the core node types."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse

from atelier.engine import types as T

from .api import error, resolve_file, state_of, store_upload, submit

router = APIRouter(tags=["comfyui"])


def object_info_entry(desc: dict[str, Any]) -> dict[str, Any]:
    required: dict[str, Any] = {}
    optional: dict[str, Any] = {}
    for i in desc["inputs"]:
        opts = {k: i[k] for k in ("default", "min", "max", "step", "multiline", "tooltip") if k in i}
        if i.get("description"):
            opts["tooltip"] = i["description"]
        if i.get("control_after_generate"):
            opts["control_after_generate"] = True
        kind: Any = i.get("choices", []) if i["type"] == T.COMBO else i["type"]
        (optional if i["optional"] else required)[i["name"]] = [kind, opts] if opts else [kind]
    return {
        "input": {"required": required, "optional": optional},
        "input_order": {
            "required": [i["name"] for i in desc["inputs"] if not i["optional"]],
            "optional": [i["name"] for i in desc["inputs"] if i["optional"]],
        },
        "output": [o["type"] for o in desc["outputs"]],
        "output_is_list": [False for _ in desc["outputs"]],
        "output_name": [o["name"] for o in desc["outputs"]],
        "name": desc["type"],
        "display_name": desc["display_name"],
        "description": desc["description"],
        "python_module": "atelier",
        "category": desc["category"],
        "output_node": desc["output_node"],
        "deprecated": desc["deprecated"],
    }


@router.get("/object_info")
async def object_info(request: Request) -> Any:
    return {name: object_info_entry(d) for name, d in state_of(request).engine.describe().items()}


@router.get("/object_info/{node_class}")
async def object_info_one(node_class: str, request: Request) -> Any:
    reg = state_of(request).registry
    if node_class not in reg:
        return error(404, f"unknown node type {node_class!r}")
    return {node_class: object_info_entry(state_of(request).engine.describe(node_class))}


def _comfy_node_errors(errors: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for e in errors:
        if e.get("node") is None:
            continue
        entry = out.setdefault(
            e["node"], {"errors": [], "dependent_outputs": [], "class_type": e.get("node_type")}
        )
        entry["errors"].append(
            {
                "type": e["code"],
                "message": e["message"],
                "details": e.get("input") or "",
                "extra_info": {"input_name": e.get("input")},
            }
        )
    return out


@router.post("/prompt")
async def post_prompt(request: Request) -> Any:
    """Queue an API-format prompt: ``{"prompt": {...}, "client_id": ..., "front": bool, "number": float}``."""
    state = state_of(request)
    try:
        body = await request.json()
    except Exception:
        return error(400, "request body is not valid JSON", node_errors={})
    if not isinstance(body, dict) or not isinstance(body.get("prompt"), dict):
        return JSONResponse(
            {
                "error": {
                    "type": "no_prompt",
                    "message": "No prompt provided",
                    "details": "",
                    "extra_info": {},
                },
                "node_errors": {},
            },
            status_code=400,
        )
    client_id = body.get("client_id") if isinstance(body.get("client_id"), str) else None
    priority = 1 if body.get("front") else 0
    out = submit(state, body["prompt"], {}, None, priority, client_id, "comfy")
    if isinstance(out, JSONResponse):
        import json

        payload = json.loads(bytes(out.body))
        errs = payload.get("node_errors", [])
        first = errs[0] if errs else {"code": "invalid", "message": "invalid prompt"}
        return JSONResponse(
            {
                "error": {
                    "type": first.get("code", "invalid"),
                    "message": first.get("message", ""),
                    "details": "",
                    "extra_info": {},
                },
                "node_errors": _comfy_node_errors(errs),
            },
            status_code=400,
        )
    job_id, number, _ = out
    return {"prompt_id": job_id, "number": number, "node_errors": {}}


def history_entry(job: dict[str, Any]) -> dict[str, Any]:
    status_str = {
        "success": "success",
        "failed": "error",
        "interrupted": "error",
        "cancelled": "error",
        "invalid": "error",
    }.get(job["status"], job["status"])
    messages: list[Any] = []
    if job.get("started"):
        messages.append(
            ["execution_start", {"prompt_id": job["id"], "timestamp": int(job["started"] * 1000)}]
        )
    if job["status"] == "success":
        messages.append(
            ["execution_success", {"prompt_id": job["id"], "timestamp": int((job["finished"] or 0) * 1000)}]
        )
    elif job.get("error"):
        messages.append(
            [
                "execution_error",
                {"prompt_id": job["id"], **{k: v for k, v in job["error"].items() if k != "traceback"}},
            ]
        )
    outputs = job.get("outputs") or {}
    return {
        "prompt": [
            job["number"],
            job["id"],
            job["workflow"],
            {"client_id": job.get("client_id")},
            list(outputs),
        ],
        "outputs": outputs,
        "status": {"status_str": status_str, "completed": job["status"] == "success", "messages": messages},
        "meta": {nid: {"node_id": nid, "display_node": nid} for nid in outputs},
    }


@router.get("/history")
async def history(request: Request, max_items: int | None = None, offset: int = 0) -> Any:
    state = state_of(request)
    limit = max(1, min(max_items or 200, 10000))
    rows, _ = state.store.history(offset=max(0, offset), limit=limit)
    return {r["id"]: history_entry(r) for r in reversed(rows)}


@router.get("/history/{prompt_id}")
async def history_one(prompt_id: str, request: Request) -> Any:
    job = state_of(request).store.get_job(prompt_id)
    if job is None or job["status"] in ("queued", "running"):
        return {}
    return {prompt_id: history_entry(job)}


@router.post("/history")
async def history_edit(request: Request) -> Any:
    state = state_of(request)
    try:
        body = await request.json()
    except Exception:
        return error(400, "request body is not valid JSON")
    if not isinstance(body, dict):
        return error(400, "expected an object with 'clear' or 'delete'")
    delete = body.get("delete") or []
    if not isinstance(delete, list):
        return error(400, "'delete' must be a list of prompt ids")
    if body.get("clear"):
        state.store.clear_history()
    for pid in delete:
        if isinstance(pid, str):
            state.store.delete_job(pid)
    return {}


def _queue_item(job: dict[str, Any]) -> list[Any]:
    return [job["number"], job["id"], job["workflow"], {"client_id": job.get("client_id")}, []]


@router.get("/queue")
async def get_queue(request: Request) -> Any:
    running, queued = state_of(request).store.queue()
    return {
        "queue_running": [_queue_item(j) for j in running],
        "queue_pending": [_queue_item(j) for j in queued],
    }


@router.post("/queue")
async def edit_queue(request: Request) -> Any:
    state = state_of(request)
    try:
        body = await request.json()
    except Exception:
        return error(400, "request body is not valid JSON")
    if not isinstance(body, dict):
        return error(400, "expected an object with 'clear' or 'delete'")
    delete = body.get("delete") or []
    if not isinstance(delete, list):
        return error(400, "'delete' must be a list of prompt ids")
    if body.get("clear"):
        state.store.cancel_all_queued()
    for pid in delete:
        if isinstance(pid, str):
            state.store.cancel_queued(pid)
    state.queue_changed()
    return {}


@router.post("/interrupt")
async def comfy_interrupt(request: Request) -> Any:
    state = state_of(request)
    if state.worker is not None:
        state.worker.interrupt()
    return {}


@router.get("/view")
async def view(request: Request, filename: str, subfolder: str = "", type: str = "output") -> Any:
    path = resolve_file(state_of(request).folders, type, filename, subfolder)
    return path if isinstance(path, JSONResponse) else FileResponse(path)


@router.post("/upload/image")
async def upload_image(
    request: Request,
    image: UploadFile = File(...),
    subfolder: str = Form(""),
    overwrite: str = Form("false"),
    type: str = Form("input"),
) -> Any:
    state = state_of(request)
    if type != "input":
        return error(400, "uploads go to the input folder (type=input)")
    data = await image.read(state.settings.max_upload_bytes + 1)
    return store_upload(
        state, data, image.filename or "", subfolder, overwrite.lower() in ("1", "true", "yes")
    )


@router.get("/system_stats")
async def system_stats(request: Request) -> Any:
    from .app import system_info

    info = system_info(state_of(request))
    devices = []
    if "gpu" in info:
        g = info["gpu"]
        devices.append(
            {
                "name": g["name"],
                "type": "cuda",
                "index": 0,
                "vram_total": g["vram_total"],
                "vram_free": g["vram_free"],
                "torch_vram_total": g["vram_total"],
                "torch_vram_free": g["vram_free"],
            }
        )
    else:
        devices.append(
            {
                "name": "cpu",
                "type": "cpu",
                "index": None,
                "vram_total": 0,
                "vram_free": 0,
                "torch_vram_total": 0,
                "torch_vram_free": 0,
            }
        )
    return {
        "system": {
            "os": "posix",
            "python_version": info["python"],
            "pytorch_version": info["torch"],
            "ram_total": info.get("ram", {}).get("total", 0),
            "ram_free": info.get("ram", {}).get("free", 0),
            "embedded_python": False,
            "comfyui_version": "atelier",
        },
        "devices": devices,
    }


@router.get("/embeddings")
async def embeddings(request: Request) -> Any:
    return [name.rsplit(".", 1)[0] for name in state_of(request).folders.list_models("embeddings")]
