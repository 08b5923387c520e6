"""The gallery's routes under /atelier/v1/gallery: output images newest first with their generation
parameters, filters, boards, favourites, thumbnails, and copying an image into the input folder.

Plain ``def`` routes: FastAPI runs them in its thread pool (SQLite, folder walks, thumbnails)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from .deps import services_of
from .gallery_store import Filters
from .responses import BODY, documented, error, upload_response
from .service import Services
from .service_gallery import BadBoardName, ImageGone, NoSuchBoard, NoSuchImage

#: a row id: SQLite's integers are 64-bit signed
RowId = Annotated[int, PathParam(ge=0, le=2**63 - 1)]

router = APIRouter(prefix="/atelier/v1/gallery", tags=["gallery"])

Svc = Depends(services_of)

_ID = 2**62  # ids are SQLite integers


class ImagePatch(BaseModel):
    favourite: bool | None = Field(default=None, strict=True)
    board: int | None = Field(default=None, ge=1, le=_ID, description="a board id; null: out of every board")


class MoveRequest(BaseModel):
    ids: list[int] = Field(min_length=1, max_length=10000)
    board: int | None = Field(default=None, ge=1, le=_ID, description="a board id; null: out of every board")


class BoardBody(BaseModel):
    name: str = Field(max_length=1000)


def _missing(out: NoSuchImage | NoSuchBoard | ImageGone) -> Any:
    if isinstance(out, NoSuchBoard):
        return error(404, f"no board {out.id}")
    if isinstance(out, ImageGone):
        return error(404, f"the file of gallery image {out.id} is gone from the output folder")
    return error(404, f"no gallery image {out.id}")


@router.get("/images", responses=documented(422))
def list_images(
    limit: int = Query(100, ge=1, le=500),
    offset: int = Query(0, ge=0, le=_ID),
    before: int | None = Query(None, ge=1, le=_ID, description="cursor: images older than this id"),
    until: int | None = Query(
        None, ge=0, le=_ID, description="snapshot: ids up to this one (paging by offset)"
    ),
    q: str | None = Query(None, max_length=500, description="words that must all be in the prompt"),
    workflow: str | None = Query(None, max_length=500),
    model: str | None = Query(None, max_length=500),
    board: int | None = Query(None, ge=0, le=_ID, description="a board id; 0: images in no board"),
    favourite: bool | None = None,
    services: Services = Svc,
) -> Any:
    """Output images, newest first, one per file: ``{images, total, until, next}``. The first page
    (no offset, cursor or snapshot) picks up new files; pass its ``until`` back with an ``offset``, or
    its ``next`` as ``before``, for the following pages, which images arriving meanwhile never shift."""
    filters = Filters(workflow=workflow, model=model, q=q, board=board, favourite=favourite)
    out = services.gallery.list(filters, limit=limit, offset=offset, before=before, until=until)
    return {"images": out.images, "total": out.page.total, "until": out.page.until, "next": out.next}


@router.get("/facets")
def facets(services: Services = Svc) -> Any:
    """What the filters can pick: workflows and models (with counts), boards, the favourites' count."""
    return services.gallery.facets()


@router.get("/queue")
def queue(services: Services = Svc) -> Any:
    """The jobs running and queued, each with the prompt and seed it uses (the canvas's queue rows)."""
    return services.gallery.queue()


@router.get("/images/{image_id}", responses=documented(404, 422))
def get_image(image_id: RowId, services: Services = Svc) -> Any:
    out = services.gallery.get(image_id)
    return _missing(out) if isinstance(out, NoSuchImage) else out


@router.patch("/images/{image_id}", responses=documented(*BODY, 404))
def patch_image(image_id: RowId, body: ImagePatch, services: Services = Svc) -> Any:
    """Mark or unmark a favourite, move into a board (``"board": null``: out of every board)."""
    fields = body.model_dump(exclude_unset=True)
    out = services.gallery.update(
        image_id, favourite=fields.get("favourite"), board=fields["board"] if "board" in fields else ...
    )
    return _missing(out) if isinstance(out, (NoSuchImage, NoSuchBoard)) else out


@router.post("/images/move", responses=documented(*BODY, 404))
def move_images(body: MoveRequest, services: Services = Svc) -> Any:
    """Move images into a board (null: out of every board); all of them or, if one is unknown, none."""
    out = services.gallery.move(body.ids, body.board)
    return _missing(out) if isinstance(out, (NoSuchImage, NoSuchBoard)) else {"moved": out}


@router.get(
    "/images/{image_id}/thumb",
    response_class=FileResponse,
    responses={
        200: {"content": {"image/webp": {}}, "description": "the thumbnail, WebP"},
        **documented(404, 422),
    },
)
def thumbnail(image_id: RowId, size: int = Query(256, ge=64, le=512), services: Services = Svc) -> Any:
    """A small WebP of the image (longer edge ``size``), cached until the file changes."""
    out = services.gallery.thumbnail(image_id, size)
    if isinstance(out, (NoSuchImage, ImageGone)):
        return _missing(out)
    return FileResponse(out, media_type="image/webp", headers={"Cache-Control": "max-age=86400"})


@router.post("/images/{image_id}/to-input", responses=documented(400, 404, 413, 422))
def to_input(image_id: RowId, services: Services = Svc) -> Any:
    """Copy the image into the input folder (to paint over it): ``{name, subfolder, type}`` as an upload."""
    out = services.gallery.to_input(image_id)
    if isinstance(out, (NoSuchImage, ImageGone)):
        return _missing(out)
    return upload_response(out)


@router.get("/boards")
def list_boards(services: Services = Svc) -> Any:
    return {"boards": services.gallery.boards()}


@router.post("/boards", status_code=201, responses=documented(*BODY, e400="no name, or a name taken"))
def create_board(body: BoardBody, services: Services = Svc) -> Any:
    out = services.gallery.create_board(body.name)
    return error(400, out.message) if isinstance(out, BadBoardName) else out


@router.patch("/boards/{board_id}", responses=documented(*BODY, 404, e400="no name, or a name taken"))
def rename_board(board_id: RowId, body: BoardBody, services: Services = Svc) -> Any:
    out = services.gallery.rename_board(board_id, body.name)
    if isinstance(out, BadBoardName):
        return error(400, out.message)
    return _missing(out) if isinstance(out, NoSuchBoard) else out


@router.delete("/boards/{board_id}", responses=documented(404, 422))
def delete_board(board_id: RowId, services: Services = Svc) -> Any:
    """Delete a board; its images stay, in no board."""
    if services.gallery.delete_board(board_id):
        return {"deleted": board_id}
    return error(404, f"no board {board_id}")
