"""HTTP answers both APIs give alike: JSON errors, files, and upload results (ComfyUI's ``/upload/image``
answers exactly as Atelier's ``/atelier/v1/upload`` does)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.responses import FileResponse, JSONResponse

from .service_files import FileRefused, Uploaded, UploadRefused


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    """Every refusal is JSON with an ``error`` message (and, for some, more fields)."""
    return JSONResponse({"error": message, **extra}, status_code=status)


def file_response(found: Path | FileRefused) -> FileResponse | JSONResponse:
    if isinstance(found, FileRefused):
        return error(404 if found.reason == "missing" else 400, found.message)
    return FileResponse(found)


def upload_response(out: Uploaded | UploadRefused) -> dict[str, Any] | JSONResponse:
    if isinstance(out, UploadRefused):
        return error(413 if out.reason == "too_large" else 400, out.message)
    return {
        "name": out.name,
        "subfolder": out.subfolder,
        "type": "input",
        "width": out.width,
        "height": out.height,
    }
