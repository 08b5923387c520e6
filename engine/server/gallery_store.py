"""SQLite storage of the gallery: one row per output image file, with its generation parameters, its
board and whether it is a favourite; and the boards.

Its own database file next to the job store's (``atelier.gallery.db`` beside ``atelier.db``): the index
is rebuilt from the output folder whenever lost, and only boards and favourites are the user's own. Its
schema is versioned with the store's machinery (``migrations.migrate``, its own steps).

Every method blocks on SQLite: call them from a worker thread, never from the event loop.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .gallery_params import GenerationParams
from .migrations import Step, migrate

STEPS: tuple[Step, ...] = (
    Step(
        1,
        "gallery images and boards",
        (
            """CREATE TABLE boards (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                name TEXT NOT NULL UNIQUE,
                created REAL NOT NULL
            )""",
            """CREATE TABLE images (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                path TEXT NOT NULL UNIQUE,
                mtime_ns INTEGER NOT NULL,
                size INTEGER NOT NULL,
                width INTEGER,
                height INTEGER,
                job_id TEXT,
                created REAL NOT NULL,
                workflow TEXT NOT NULL DEFAULT '',
                prompt TEXT NOT NULL DEFAULT '',
                negative TEXT NOT NULL DEFAULT '',
                seed TEXT,
                sampler TEXT NOT NULL DEFAULT '',
                scheduler TEXT NOT NULL DEFAULT '',
                steps INTEGER,
                cfg REAL,
                model TEXT NOT NULL DEFAULT '',
                favourite INTEGER NOT NULL DEFAULT 0,
                board_id INTEGER
            )""",
            "CREATE INDEX images_board ON images(board_id, id)",
            "CREATE INDEX images_favourite ON images(favourite, id)",
        ),
    ),
)


@dataclass(frozen=True)
class FileFacts:
    """An output file as found on disk, with what its metadata says."""

    path: str  # relative to the output folder, with "/"
    mtime_ns: int
    size: int
    width: int | None
    height: int | None
    params: GenerationParams
    job_id: str | None = None


@dataclass(frozen=True)
class Filters:
    """What a gallery listing keeps: all given conditions hold. ``board``: a board id, or 0 for images in
    no board; ``q``: words that must each appear in the prompt (case-insensitive)."""

    workflow: str | None = None
    model: str | None = None
    q: str | None = None
    board: int | None = None
    favourite: bool | None = None


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    total: int  # rows matching the filters in the snapshot
    until: int  # the snapshot: the highest image id it holds


_PARAM_COLUMNS = ("workflow", "prompt", "negative", "seed", "sampler", "scheduler", "steps", "cfg", "model")


class GalleryStore:
    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        try:
            with self._lock:
                migrate(self._db, STEPS, name=self.path)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- the index --------------------------------------------------------------------------------

    def known(self) -> dict[str, tuple[int, int, int]]:
        """path -> (id, mtime_ns, size) of every indexed file."""
        with self._lock:
            return {
                r[0]: (r[1], r[2], r[3])
                for r in self._db.execute("SELECT path, id, mtime_ns, size FROM images")
            }

    def add(self, files: Sequence[FileFacts], created: float | None = None) -> int:
        """Index new files (in the order given: later ones get higher ids, and list first); a file already
        indexed keeps its row, id, board and favourite, its facts updated. Returns how many were new."""
        new = 0
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for f in files:
                    values = _param_values(f.params)
                    cur = self._db.execute(
                        "UPDATE images SET mtime_ns = ?, size = ?, width = ?, height = ?,"
                        " job_id = COALESCE(?, job_id), "
                        + ", ".join(f"{c} = ?" for c in _PARAM_COLUMNS)
                        + " WHERE path = ?",
                        (f.mtime_ns, f.size, f.width, f.height, f.job_id, *values, f.path),
                    )
                    if cur.rowcount:
                        continue
                    self._db.execute(
                        "INSERT INTO images (path, mtime_ns, size, width, height, job_id, created, "
                        + ", ".join(_PARAM_COLUMNS)
                        + ") VALUES (?, ?, ?, ?, ?, ?, ?, "
                        + ", ".join("?" for _ in _PARAM_COLUMNS)
                        + ")",
                        (
                            f.path,
                            f.mtime_ns,
                            f.size,
                            f.width,
                            f.height,
                            f.job_id,
                            created if created is not None else f.mtime_ns / 1e9,
                            *values,
                        ),
                    )
                    new += 1
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return new

    def remove_paths(self, paths: Iterable[str]) -> int:
        with self._lock:
            self._db.execute("BEGIN")
            n = sum(self._db.execute("DELETE FROM images WHERE path = ?", (p,)).rowcount for p in paths)
            self._db.execute("COMMIT")
            return n

    # -- reading ----------------------------------------------------------------------------------

    def get(self, image_id: int) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()
            return dict(row) if row else None

    def page(
        self,
        filters: Filters,
        *,
        limit: int,
        offset: int = 0,
        before: int | None = None,
        until: int | None = None,
    ) -> Page:
        """Images newest first (highest id first). ``until``: the snapshot (ids up to it; default the
        newest now), so offsets stay put while images arrive; ``before``: a cursor, ids below it."""
        where, args = _where(filters)
        with self._lock:
            if until is None:
                until = int(self._db.execute("SELECT COALESCE(MAX(id), 0) FROM images").fetchone()[0])
            where.append("id <= ?")
            args.append(until)
            total = int(
                self._db.execute(f"SELECT COUNT(*) FROM images WHERE {' AND '.join(where)}", args).fetchone()[
                    0
                ]
            )
            if before is not None:
                where.append("id < ?")
                args.append(before)
            rows = self._db.execute(
                f"SELECT * FROM images WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
            return Page([dict(r) for r in rows], total, until)

    def facets(self) -> dict[str, Any]:
        """The values filters can take: workflows and models with their counts, boards, favourites."""
        with self._lock:
            db = self._db
            return {
                "total": int(db.execute("SELECT COUNT(*) FROM images").fetchone()[0]),
                "favourites": int(
                    db.execute("SELECT COUNT(*) FROM images WHERE favourite = 1").fetchone()[0]
                ),
                "workflows": [
                    {"name": r[0], "count": r[1]}
                    for r in db.execute(
                        "SELECT workflow, COUNT(*) FROM images WHERE workflow != '' GROUP BY workflow ORDER BY workflow"
                    )
                ],
                "models": [
                    {"name": r[0], "count": r[1]}
                    for r in db.execute(
                        "SELECT model, COUNT(*) FROM images WHERE model != '' GROUP BY model ORDER BY model"
                    )
                ],
            }

    # -- curation ---------------------------------------------------------------------------------

    def set_favourite(self, ids: Sequence[int], favourite: bool) -> int:
        with self._lock:
            return self._db.execute(
                f"UPDATE images SET favourite = ? WHERE id IN ({_marks(ids)})", (int(favourite), *ids)
            ).rowcount

    def move(self, ids: Sequence[int], board: int | None) -> int:
        with self._lock:
            return self._db.execute(
                f"UPDATE images SET board_id = ? WHERE id IN ({_marks(ids)})", (board, *ids)
            ).rowcount

    def existing_ids(self, ids: Sequence[int]) -> set[int]:
        with self._lock:
            return {
                r[0]
                for r in self._db.execute(f"SELECT id FROM images WHERE id IN ({_marks(ids)})", tuple(ids))
            }

    def boards(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"id": r[0], "name": r[1], "created": r[2], "count": r[3]}
                for r in self._db.execute(
                    "SELECT b.id, b.name, b.created, COUNT(i.id) FROM boards b LEFT JOIN images i"
                    " ON i.board_id = b.id GROUP BY b.id ORDER BY b.name COLLATE NOCASE"
                )
            ]

    def board(self, board_id: int) -> dict[str, Any] | None:
        return next((b for b in self.boards() if b["id"] == board_id), None)

    def board_named(self, name: str) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT id FROM boards WHERE name = ?", (name,)).fetchone()
            return int(row[0]) if row else None

    def create_board(self, name: str) -> int:
        with self._lock:
            cur = self._db.execute("INSERT INTO boards (name, created) VALUES (?, ?)", (name, time.time()))
            return int(cur.lastrowid or 0)

    def rename_board(self, board_id: int, name: str) -> bool:
        with self._lock:
            return self._db.execute("UPDATE boards SET name = ? WHERE id = ?", (name, board_id)).rowcount > 0

    def delete_board(self, board_id: int) -> bool:
        """Delete a board; its images stay, in no board."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("UPDATE images SET board_id = NULL WHERE board_id = ?", (board_id,))
            gone = self._db.execute("DELETE FROM boards WHERE id = ?", (board_id,)).rowcount > 0
            self._db.execute("COMMIT")
            return gone


def _param_values(p: GenerationParams) -> tuple[Any, ...]:
    return (
        p.workflow,
        p.prompt,
        p.negative,
        str(p.seed) if p.seed is not None else None,  # seeds reach 2**64 - 1: past SQLite's integers
        p.sampler,
        p.scheduler,
        p.steps,
        p.cfg,
        p.model,
    )


def _where(f: Filters) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    if f.workflow is not None:
        where.append("workflow = ?")
        args.append(f.workflow)
    if f.model is not None:
        where.append("model = ?")
        args.append(f.model)
    for word in (f.q or "").split():
        where.append("prompt LIKE ? ESCAPE '\\'")
        args.append("%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
    if f.board is not None:
        where.append("board_id IS NULL" if f.board == 0 else "board_id = ?")
        if f.board:
            args.append(f.board)
    if f.favourite is not None:
        where.append("favourite = ?")
        args.append(int(f.favourite))
    return where or ["1"], args


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values) or "NULL"
