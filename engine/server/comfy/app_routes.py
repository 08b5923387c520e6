"""ComfyUI's app routes: what ComfyUI's web frontend asks the server for besides prompts and files.

Users (``/users``), per-user settings (``/settings[/{id}]``), per-user files (``/userdata``: saved
workflows, templates, ``user.css``), translations of extension nodes (``/i18n``), web extensions
(``/extensions``), the server's feature flags (``/features``), the model library (``/experiment/models``)
and, from ``jobs_api.py``, the jobs of its queue and history panels (``/jobs``). ComfyUI registers every
route twice, plain and under ``/api/`` (its frontend uses the ``/api/`` ones): :func:`register` does the
same.

A translation layer like ``routes.py``: shapes and status codes here, files in ``service_userdata.py``.
"""

from __future__ import annotations

import mimetypes
import re
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from atelier.engine.folders import WEIGHT_EXTENSIONS

from ..deps import services_of
from ..responses import documented, error
from ..service import Services
from ..service_userdata import UnknownUser, UnsafePathError, UserRefused, file_info
from .features import server_features
from .jobs_api import router as jobs_router
from .routes import include_comfy_routes

router = APIRouter(tags=["comfyui"])
#: ComfyUI's ``/internal`` routes, for its frontend only (no ``/api`` twin)
internal = APIRouter(prefix="/internal", tags=["comfyui"], include_in_schema=False)
Svc = Depends(services_of)

#: what a user file is never served as: the page's origin would run it (stored XSS)
ACTIVE_TYPES = (
    "text/html",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/javascript",
    "application/javascript",
    "application/xml",
    "text/xml",
)
USER_CSS = "user.css"


def register(app: FastAPI) -> None:
    """Add the routes to ``app`` plain and under ``/api`` (the twins stay out of the OpenAPI schema)."""
    for routes in (router, jobs_router):
        include_comfy_routes(app, routes)
    app.include_router(internal)

    @app.exception_handler(_Refusal)
    async def on_refusal(request: Request, exc: _Refusal) -> JSONResponse:
        return error(exc.status, exc.message)


def _truthy(value: str | None) -> bool:
    return (value or "").lower() == "true"


def _user(request: Request, services: Services = Svc) -> str:
    """The user the request acts for (``Comfy-User`` header, with ``--multi-user``). Plain ``def``: it may
    read ``users.json``, so FastAPI runs it in its thread pool."""
    try:
        return services.userdata.user_of(request.headers.get("comfy-user"))
    except UnknownUser as exc:
        raise _Refusal(403, str(exc)) from exc


User = Depends(_user)


class _Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- the frontend's start-up ----------------------------------------------------------------------


@router.get("/extensions")
def extensions() -> list[str]:
    """URLs of web extensions (JavaScript modules) the frontend loads: Atelier ships none."""
    return []


@router.get("/i18n")
def i18n() -> dict[str, Any]:
    """Translations contributed by extension nodes, by locale: none."""
    return {}


@router.get("/features")
def features(services: Services = Svc) -> dict[str, Any]:
    return server_features(services.settings)


@router.get("/global_subgraphs")
def global_subgraphs() -> dict[str, Any]:
    """Subgraph blueprints the server offers, by id: none."""
    return {}


@router.get("/global_subgraphs/{subgraph_id}", responses=documented(404))
def global_subgraph(subgraph_id: str) -> Any:
    return error(404, f"no subgraph blueprint {subgraph_id!r}")


@router.get("/workflow_templates")
def workflow_templates() -> dict[str, Any]:
    """Example workflows of extension nodes, by extension: none."""
    return {}


# -- the model library ----------------------------------------------------------------------------


@router.get("/experiment/models")
def model_folders(services: Services = Svc) -> list[dict[str, Any]]:
    """Every model kind and the folders searched for it, in order."""
    models = services.engine.folders.models
    return [{"name": kind, "folders": [str(f) for f in folders]} for kind, folders in models.items()]


@router.get("/experiment/models/{kind}", responses=documented(404))
def model_files(kind: str, services: Services = Svc) -> Any:
    """The model files of a kind: name relative to its folder, the folder's index, times and size."""
    folders = services.engine.folders
    if kind not in folders.models:
        return error(404, f"unknown model kind {kind!r}")
    out = []
    for index, folder in enumerate(folders.models[kind]):
        for name in folders.list_files(folder, WEIGHT_EXTENSIONS):
            st = (folder / name).stat()
            out.append(
                {
                    "name": name,
                    "pathIndex": index,
                    "modified": st.st_mtime,
                    "created": st.st_ctime,
                    "size": st.st_size,
                }
            )
    return out


@internal.get("/folder_paths")
def folder_paths(services: Services = Svc) -> dict[str, list[str]]:
    """Every model kind and the folders searched for it."""
    return {kind: [str(f) for f in folders] for kind, folders in services.engine.folders.models.items()}


# -- users ----------------------------------------------------------------------------------------


@router.get("/users")
def get_users(services: Services = Svc) -> dict[str, Any]:
    data = services.userdata
    if data.multi_user:
        return {"storage": "server", "users": data.users()}
    return {"storage": "server", "migrated": data.has_folder("default")}


@router.post("/users", responses=documented(400, 413))
async def post_users(request: Request, services: Services = Svc) -> Any:
    body = await _json_or_none(request)
    if not isinstance(body, dict) or not isinstance(body.get("username"), str):
        return error(400, "expected {'username': NAME}")
    try:
        return await run_in_threadpool(services.userdata.add_user, body["username"])
    except UserRefused as exc:
        return error(400, str(exc))


# -- settings -------------------------------------------------------------------------------------


@router.get("/settings", responses=documented(403))
def get_settings(user: str = User, services: Services = Svc) -> dict[str, Any]:
    return services.userdata.settings(user)


@router.get("/settings/{setting_id}", responses=documented(403))
def get_setting(setting_id: str, user: str = User, services: Services = Svc) -> Any:
    return services.userdata.settings(user).get(setting_id)


@router.post("/settings", responses=documented(400, 403, 413))
async def post_settings(request: Request, user: str = User, services: Services = Svc) -> Response:
    body = await _json_or_none(request)
    if not isinstance(body, dict):
        return error(400, "expected a JSON object of settings")
    await run_in_threadpool(services.userdata.update_settings, user, body)
    return Response(status_code=200)


@router.post("/settings/{setting_id}", responses=documented(400, 403, 413))
async def post_setting(
    setting_id: str, request: Request, user: str = User, services: Services = Svc
) -> Response:
    try:
        value = await request.json()
    except ValueError:
        return error(400, f"the value of setting {setting_id!r} is not valid JSON")
    await run_in_threadpool(services.userdata.update_settings, user, {setting_id: value})
    return Response(status_code=200)


async def _json_or_none(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        return None


# -- user files -----------------------------------------------------------------------------------


@router.get("/userdata", responses=documented(400, 403, 404, 422))
def list_userdata(
    dir: str = "",
    recurse: str = "",
    full_info: str = "",
    split: str = "",
    user: str = User,
    services: Services = Svc,
) -> Any:
    """Files in a folder of the user's: relative paths, ``full_info`` dicts, or ``split`` path parts."""
    if not dir:
        return error(400, "the query parameter 'dir' is required")
    try:
        found = services.userdata.list_files(user, dir, recurse=_truthy(recurse))
    except UnsafePathError as exc:
        return error(403, str(exc))
    if found is None:
        return error(404, f"no folder {dir!r}")
    base, files = found
    if _truthy(full_info):
        return [file_info(p, base).as_dict() for p in files]
    rel = [p.relative_to(base).as_posix() for p in files]
    if _truthy(split):
        return [[r, *r.split("/")] for r in rel]
    return rel


@router.get("/v2/userdata", responses=documented(400, 403, 404, 422))
def list_userdata_v2(path: str = "", user: str = User, services: Services = Svc) -> Any:
    """Folders and files below ``path`` (default: all of the user's), folders first."""
    try:
        out = services.userdata.list_tree(user, path)
    except UnsafePathError as exc:
        return error(400, str(exc))
    except NotADirectoryError:
        return error(400, f"{path!r} is not a folder")
    return out if out is not None else error(404, f"no folder {path!r}")


_USERDATA_PATH = re.compile(r"^(?:/api)?/userdata/(.+)$")


def _raw_rest(request: Request) -> str:
    """What follows ``/userdata/`` in the request's path, still percent-encoded: the frontend encodes the
    ``/`` of a file's folders as ``%2F``, which keeps ``{file}/move/{dest}`` unambiguous."""
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else request.url.path
    match = _USERDATA_PATH.match(path)
    return match.group(1) if match else ""


def _served_as(name: str) -> tuple[str, str]:
    """(content type, disposition) for a user file: only ``user.css`` renders inline; markup and scripts
    go out as bytes to download."""
    if name == USER_CSS:
        return "text/css", "inline"
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if kind in ACTIVE_TYPES:
        kind = "application/octet-stream"
    return kind, "attachment"


@router.get("/userdata/{rest:path}", responses=documented(403, 404))
def get_userdata(request: Request, user: str = User, services: Services = Svc) -> Any:
    name = unquote(_raw_rest(request))
    try:
        path = services.userdata.path(user, name)
    except UnsafePathError as exc:
        return error(403, str(exc))
    if not path.is_file():
        if name == USER_CSS:  # the page links it always: an empty 404 stylesheet, not a JSON error
            return Response(status_code=404, media_type="text/css")
        return error(404, f"no file {name!r}")
    kind, disposition = _served_as(name)
    return FileResponse(
        path,
        media_type=kind,
        headers={"Content-Disposition": disposition, "X-Content-Type-Options": "nosniff"},
    )


@router.post("/userdata/{rest:path}", responses=documented(400, 403, 404, 409, 413, 422))
async def post_userdata(
    request: Request,
    overwrite: str = "true",
    full_info: str = "false",
    user: str = User,
    services: Services = Svc,
) -> Any:
    """Write a file (the raw body), or ``{file}/move/{dest}``: move one. Both answer the file's path
    relative to the user's folder, or its ``full_info``."""
    data = services.userdata
    may_overwrite = overwrite != "false"
    parts = _raw_rest(request).split("/")
    try:
        if len(parts) == 3 and parts[1] == "move":
            source, dest = unquote(parts[0]), unquote(parts[2])
            try:
                path = await run_in_threadpool(data.move, user, source, dest, may_overwrite)
            except FileNotFoundError:
                return error(404, f"no file {source!r}")
            name = dest
        else:
            name = unquote("/".join(parts))
            body = await request.body()
            path = await run_in_threadpool(data.write, user, name, body, may_overwrite)
    except UnsafePathError as exc:
        return error(403, str(exc))
    except IsADirectoryError:
        return error(400, "a file name is required, not a folder")
    except OSError as exc:
        return error(400, f"cannot write {name!r}: {exc.strerror or exc}")
    if path is None:
        return error(409, f"{name!r} already exists")
    user_root = data.folder(user)
    if _truthy(full_info):
        return (await run_in_threadpool(file_info, path, user_root)).as_dict()  # a stat: off the loop
    return path.relative_to(user_root).as_posix()


@router.delete("/userdata/{rest:path}", responses={204: {"description": "deleted"}, **documented(403, 404)})
def delete_userdata(request: Request, user: str = User, services: Services = Svc) -> Any:
    name = unquote(_raw_rest(request))
    try:
        deleted = services.userdata.delete(user, name)
    except UnsafePathError as exc:
        return error(403, str(exc))
    return Response(status_code=204) if deleted else error(404, f"no file {name!r}")
