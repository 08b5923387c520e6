"""The model browser's routes under /atelier/v1/models/{kind}/...: every file of a kind with what its header
says, one file's whole metadata, and the preview image beside a model file (``service_models.py``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from .deps import services_of
from .responses import documented, error, file_response
from .service import Services
from .service_models import NoModel, UnknownKind

router = APIRouter(prefix="/atelier/v1", tags=["atelier"])

Svc = Depends(services_of)


def _unknown(out: UnknownKind) -> Any:
    return error(404, f"unknown model kind {out.kind!r}; kinds: {', '.join(out.kinds)}")


def _no_model(out: NoModel) -> Any:
    return error(404 if out.reason == "missing" else 400, out.message)


@router.get("/models/{kind}/browse", responses=documented(404, e404="unknown model kind"))
def browse_models(kind: str, services: Services = Svc) -> Any:
    """The files of a model kind for the model browser: name, size, time, base model family, trigger words,
    training details, preview URL (or the error that makes a file unreadable), and the loader nodes."""
    out = services.models.listing(kind)
    return _unknown(out) if isinstance(out, UnknownKind) else out


@router.get(
    "/models/{kind}/info/{name:path}",
    responses=documented(400, 404, e400="a name that climbs out of the folder", e404="no such kind or file"),
)
def model_info(kind: str, name: str, services: Services = Svc) -> Any:
    """One model file as the browser lists it, with every entry of its safetensors metadata."""
    out = services.models.details(kind, name)
    if isinstance(out, UnknownKind):
        return _unknown(out)
    return _no_model(out) if isinstance(out, NoModel) else out


@router.get(
    "/models/{kind}/preview/{name:path}",
    responses=documented(
        400, 404, e400="a name that climbs out of the folder", e404="no such file or preview"
    ),
)
def model_preview(kind: str, name: str, services: Services = Svc) -> Any:
    """The preview image beside a model file (``NAME.preview.png``, ``NAME.png``, ``.jpg``, ``.webp``)."""
    out = services.models.preview(kind, name)
    if isinstance(out, UnknownKind):
        return _unknown(out)
    return _no_model(out) if isinstance(out, NoModel) else file_response(out)
