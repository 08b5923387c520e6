"""HTTP answers both APIs give alike: JSON errors, files, and upload results (ComfyUI's ``/upload/image``
answers exactly as Atelier's ``/atelier/v1/upload`` does), and the error responses routes document.

Every refusal, whichever layer makes it (a route, the guard, FastAPI's request parsing, the router), is a
JSON object with an ``error`` member; ``documented(...)`` puts that shape in the OpenAPI schema for the
status codes a route can answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from atelier.engine import folders as F

from .service_files import FileRefused, Uploaded, UploadRefused


class ErrorBody(BaseModel):
    """The one error shape: ``error`` says what is wrong (a message, or ComfyUI's error object on its
    routes); some refusals add fields (``node_errors``, ``detail``)."""

    model_config = ConfigDict(extra="allow")
    error: str | dict[str, Any] = Field(description="what is wrong")


_MEANINGS = {
    400: "the request is not valid (a body that is not JSON, a workflow that does not validate, a bad name)",
    403: "not this user's (an unknown user, a path outside the user's folder)",
    404: "no such thing",
    409: "the request conflicts with the thing's state",
    413: "the request body is over the size limit",
    422: "a parameter or body field has the wrong type or is out of range",
    503: "the server cannot take this now (a full queue): try again after `Retry-After`",
}


def documented(*codes: int, **meanings: str) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route decorator: each status code with the error shape. ``meanings`` may
    say more for a code (``e400="invalid workflow"``)."""
    return {
        code: {"model": ErrorBody, "description": meanings.get(f"e{code}", _MEANINGS[code])} for code in codes
    }


#: what a route that reads a JSON body can answer besides its own refusals: a body that does not parse
#: (400), one over the limit (413), fields of the wrong type (422)
BODY = (400, 413, 422)


def error(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """Every refusal is JSON with an ``error`` message (and, for some, more fields)."""
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def file_response(found: Path | FileRefused) -> FileResponse | JSONResponse:
    """A file by name: images are shown inline; anything else (a text file a node wrote, a page someone
    put in the folder) is only ever downloaded, never rendered on this origin (the guard adds nosniff)."""
    if isinstance(found, FileRefused):
        return error(404 if found.reason == "missing" else 400, found.message)
    inline = found.name.lower().endswith(F.IMAGE_EXTENSIONS)
    if inline:
        return FileResponse(found, content_disposition_type="inline", filename=found.name)
    return FileResponse(
        found,
        media_type="application/octet-stream",
        content_disposition_type="attachment",
        filename=found.name,
        headers={"X-Content-Type-Options": "nosniff"},
    )


def upload_response(out: Uploaded | UploadRefused) -> dict[str, Any] | JSONResponse:
    if isinstance(out, UploadRefused):
        return error({"too_large": 413, "missing": 404}.get(out.reason, 400), out.message)
    return {
        "name": out.name,
        "subfolder": out.subfolder,
        "type": "input",
        "width": out.width,
        "height": out.height,
    }
