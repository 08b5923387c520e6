"""The gallery service: the output folder's images as one list, newest first, one entry per file, with the
generation parameters each carries; filters, boards, favourites, thumbnails, and copying an output into
the input folder (to paint over it).

The index (``gallery_store.py``) follows the folder: the first page of a listing walks the output folder
and indexes files that are new or changed (their metadata read once) and forgets files that are gone. A
job re-run from the cache reports the files its first run wrote: they are the same files, so the same
entries. Paging is by offset within a snapshot (``until``: the newest id when the listing began) or by a
cursor (``before``), so images that arrive meanwhile never shift or repeat a page.

Every method blocks (SQLite, folder walks, image decoding): call from a worker thread.
"""

from __future__ import annotations

import copy
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from atelier.engine import folders as F
from atelier.engine.pnginfo import read_metadata
from atelier.engine.workflow import WorkflowFormatError

from .gallery_params import GenerationParams, generation_params
from .gallery_store import FileFacts, Filters, GalleryStore, Page
from .jobs import Job
from .service_files import FileService, Uploaded, UploadRefused
from .store import Store

#: files the gallery shows (the formats a SaveImage-like node writes)
GALLERY_EXTENSIONS = (".png", ".webp", ".jpg", ".jpeg")
THUMB_SIZES = (64, 512)  # the smallest and largest thumbnail edge asked for
MAX_BOARD_NAME = 100


@dataclass(frozen=True)
class NoSuchImage:
    id: int


@dataclass(frozen=True)
class NoSuchBoard:
    id: int


@dataclass(frozen=True)
class BadBoardName:
    message: str


@dataclass(frozen=True)
class ImageGone:
    """The entry's file left the output folder (deleted or moved) since it was indexed."""

    id: int


@dataclass(frozen=True)
class Listing:
    page: Page
    images: list[dict[str, Any]]
    next: int | None  # the cursor of the next page (``before``), None at the end


class GalleryService:
    def __init__(
        self, output: Path, temp: Path, store: GalleryStore, jobs: Store, files: FileService
    ) -> None:
        self.output = output
        self.thumbs = temp / ".gallery-thumbs"
        self.store = store
        self.jobs = jobs
        self.files = files
        self._sync_lock = threading.Lock()

    # -- following the folder ---------------------------------------------------------------------

    def sync(self) -> int:
        """Index new and changed files of the output folder, forget vanished ones; returns how many are new."""
        with self._sync_lock:
            known = self.store.known()
            found = _walk(self.output)
            gone = [p for p in known if p not in found]
            changed = [(p, st) for p, st in found.items() if p not in known or known[p][1:] != (st[0], st[1])]
            if gone:
                self.store.remove_paths(gone)
            if not changed:
                return 0
            changed.sort(key=lambda item: (item[1][0], item[0]))  # oldest first: newer files get higher ids
            makers = self._recent_job_files() if any(p not in known for p, _ in changed) else {}
            facts = [self._facts(p, mtime, size, makers.get(p)) for p, (mtime, size) in changed]
            return self.store.add(facts)

    def _recent_job_files(self) -> dict[str, str]:
        """Output path -> the id of the job that reported it, over the latest successful jobs."""
        jobs, _ = self.jobs.history(limit=200, status="success")
        out: dict[str, str] = {}
        for job in reversed(jobs):  # oldest first: a cached re-run does not take over its first run's file
            for o in (job.outputs or {}).values():
                for img in o.get("images", []) if isinstance(o, dict) else []:
                    if isinstance(img, dict) and img.get("type", "output") == "output":
                        sub, name = img.get("subfolder") or "", img.get("filename") or ""
                        out.setdefault(f"{sub}/{name}" if sub else name, job.id)
        return out

    def _facts(self, rel: str, mtime_ns: int, size: int, job_id: str | None) -> FileFacts:
        path = self.output / rel
        width = height = None
        params = GenerationParams()
        try:
            with Image.open(path) as im:
                width, height = im.size
            params = generation_params(read_metadata(path))
        except (OSError, WorkflowFormatError, ValueError):
            pass  # an image without metadata (or not readable now) is listed with what is known
        return FileFacts(rel, mtime_ns, size, width, height, params, job_id)

    # -- listing ----------------------------------------------------------------------------------

    def list(
        self,
        filters: Filters,
        *,
        limit: int = 100,
        offset: int = 0,
        before: int | None = None,
        until: int | None = None,
    ) -> Listing:
        if offset == 0 and before is None and until is None:
            self.sync()
        page = self.store.page(filters, limit=limit, offset=offset, before=before, until=until)
        images = [image_view(r) for r in page.rows]
        more = len(images) == limit and (offset + limit < page.total if before is None else True)
        return Listing(page, images, images[-1]["id"] if images and more else None)

    def get(self, image_id: int) -> dict[str, Any] | NoSuchImage:
        row = self.store.get(image_id)
        return image_view(row) if row else NoSuchImage(image_id)

    def facets(self) -> dict[str, Any]:
        return {**self.store.facets(), "boards": self.store.boards()}

    def queue(self) -> dict[str, list[dict[str, Any]]]:
        """The jobs running and queued (in the order they will run) with the prompt and seed they use."""
        running, queued = self.jobs.queue()
        return {"running": [job_summary(j) for j in running], "queued": [job_summary(j) for j in queued]}

    # -- curation ---------------------------------------------------------------------------------

    def update(
        self, image_id: int, *, favourite: bool | None = None, board: int | None | object = ...
    ) -> dict[str, Any] | NoSuchImage | NoSuchBoard:
        """Mark or unmark a favourite and/or move to a board (None: out of every board)."""
        if self.store.get(image_id) is None:
            return NoSuchImage(image_id)
        if board is not ... and board is not None and self.store.board(int(board)) is None:  # type: ignore[call-overload]
            return NoSuchBoard(int(board))  # type: ignore[call-overload]
        if favourite is not None:
            self.store.set_favourite([image_id], favourite)
        if board is not ...:
            self.store.move([image_id], board)  # type: ignore[arg-type]
        return self.get(image_id)

    def move(self, ids: list[int], board: int | None) -> int | NoSuchImage | NoSuchBoard:
        """Put images into a board (None: out of every board), all or none."""
        if board is not None and self.store.board(board) is None:
            return NoSuchBoard(board)
        missing = sorted(set(ids) - self.store.existing_ids(ids))
        if missing:
            return NoSuchImage(missing[0])
        return self.store.move(ids, board)

    def boards(self) -> list[dict[str, Any]]:
        return self.store.boards()

    def create_board(self, name: str) -> dict[str, Any] | BadBoardName:
        problem = self._name_problem(name, None)
        if problem:
            return problem
        board = self.store.board(self.store.create_board(name.strip()))
        assert board is not None
        return board

    def rename_board(self, board_id: int, name: str) -> dict[str, Any] | NoSuchBoard | BadBoardName:
        if self.store.board(board_id) is None:
            return NoSuchBoard(board_id)
        problem = self._name_problem(name, board_id)
        if problem:
            return problem
        self.store.rename_board(board_id, name.strip())
        board = self.store.board(board_id)
        assert board is not None
        return board

    def delete_board(self, board_id: int) -> bool:
        return self.store.delete_board(board_id)

    def _name_problem(self, name: str, board_id: int | None) -> BadBoardName | None:
        name = name.strip()
        if not name:
            return BadBoardName("a board needs a name")
        if len(name) > MAX_BOARD_NAME:
            return BadBoardName(f"a board name has at most {MAX_BOARD_NAME} characters")
        other = self.store.board_named(name)
        if other is not None and other != board_id:
            return BadBoardName(f"there is a board named {name!r} already")
        return None

    # -- files ------------------------------------------------------------------------------------

    def file(self, image_id: int) -> Path | NoSuchImage | ImageGone:
        row = self.store.get(image_id)
        if row is None:
            return NoSuchImage(image_id)
        try:
            path = F.resolve_contained(self.output, row["path"])
        except F.UnsafePathError:
            return ImageGone(image_id)
        return path if path.is_file() else ImageGone(image_id)

    def thumbnail(self, image_id: int, size: int) -> Path | NoSuchImage | ImageGone:
        """A small WebP of the image (its longer edge ``size`` pixels at most), made once and kept in the
        temp folder until the file changes."""
        found = self.file(image_id)
        if not isinstance(found, Path):
            return found
        st = found.stat()
        key = hashlib.sha256(f"{found}\0{st.st_mtime_ns}\0{st.st_size}\0{size}".encode()).hexdigest()[:32]
        thumb = self.thumbs / f"{key}.webp"
        if thumb.is_file():
            return thumb
        self.thumbs.mkdir(parents=True, exist_ok=True)
        try:
            with Image.open(found) as im:
                im.draft("RGB", (size, size))  # JPEGs decode at a reduced scale
                small = im.convert("RGBA" if "A" in im.getbands() else "RGB")
                small.thumbnail((size, size), Image.Resampling.LANCZOS)
            tmp = thumb.with_suffix(f".{os.getpid()}.{threading.get_ident()}.part")
            small.save(tmp, format="WEBP", quality=82, method=2)
            os.replace(tmp, thumb)
        except OSError:
            return ImageGone(image_id)
        return thumb

    def to_input(self, image_id: int) -> Uploaded | UploadRefused | NoSuchImage | ImageGone:
        """Copy an output image into the input folder (a new name if one is taken), as an upload is."""
        found = self.file(image_id)
        if not isinstance(found, Path):
            return found
        return self.files.upload(found.read_bytes(), found.name, "", False)


def job_summary(job: Job) -> dict[str, Any]:
    """A queued or running job with the prompt, seed and workflow name its workflow and overrides give."""
    p = generation_params(job_metadata(job.workflow, job.overrides or {}))
    return {
        "id": job.id,
        "number": job.number,
        "status": job.status,
        "prompt": p.prompt,
        "seed": p.seed,
        "workflow": p.workflow,
    }


def job_metadata(workflow: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """A job's workflow and overrides in the shape of image metadata (what ``generation_params`` reads)."""
    if not isinstance(workflow, dict):
        return {}
    if not isinstance(workflow.get("nodes"), dict):  # ComfyUI's API format, as a ComfyUI client sent it
        return {"comfyui_prompt": workflow}
    wf = copy.deepcopy(workflow)
    params = wf.get("parameters") or {}
    values = {k: v for k, v in overrides.items() if k in params}
    for key, value in overrides.items():
        nid, dot, inp = key.rpartition(".")
        if key not in params and dot and isinstance(wf["nodes"].get(nid), dict):
            wf["nodes"][nid].setdefault("inputs", {})[inp] = value
    for name, param in params.items():  # parameters not overridden run with their defaults
        if isinstance(param, dict) and "default" in param:
            values.setdefault(name, param["default"])
    return {"workflow": wf, "parameters": values}


def image_view(row: dict[str, Any]) -> dict[str, Any]:
    """An index row as the API shows it: an image reference (``filename``, ``subfolder``, ``type``) the
    file routes take, and its parameters."""
    sub, _, name = row["path"].rpartition("/")
    seed = row.get("seed")
    return {
        "id": row["id"],
        "filename": name,
        "subfolder": sub,
        "type": "output",
        "width": row.get("width"),
        "height": row.get("height"),
        "created": row["created"],
        "job_id": row.get("job_id"),
        "favourite": bool(row.get("favourite")),
        "board": row.get("board_id"),
        "params": {
            "prompt": row.get("prompt", ""),
            "negative": row.get("negative", ""),
            "seed": int(seed) if seed not in (None, "") else None,
            "sampler": row.get("sampler", ""),
            "scheduler": row.get("scheduler", ""),
            "steps": row.get("steps"),
            "cfg": row.get("cfg"),
            "model": row.get("model", ""),
            "workflow": row.get("workflow", ""),
        },
    }


def _walk(folder: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (mtime_ns, size) of the gallery's files under ``folder`` (hidden ones skipped,
    linked folders not followed: what the gallery lists is what the folder holds)."""
    out: dict[str, tuple[int, int]] = {}
    if not folder.is_dir():
        return out
    stack = [(folder, "")]
    while stack:
        here, prefix = stack.pop()
        try:
            entries = list(os.scandir(here))
        except OSError:
            continue
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append((Path(e.path), f"{prefix}{e.name}/"))
                elif e.is_file(follow_symlinks=False) and e.name.lower().endswith(GALLERY_EXTENSIONS):
                    st = e.stat(follow_symlinks=False)
                    out[prefix + e.name] = (st.st_mtime_ns, st.st_size)
            except OSError:
                continue
    return out
