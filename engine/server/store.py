"""SQLite storage: the job queue and history, and the workflow library. Survives restarts.

Every method blocks on SQLite: call them from a worker thread, never from the event loop.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .jobs import FINISHED, Job
from .migrations import migrate

#: how many queued jobs :meth:`Store.take_queued` looks at, at most
TAKE_SCAN = 64

JSON_COLUMNS = ("workflow", "overrides", "outputs_requested", "outputs", "error", "executed", "cached")


class Store:
    """One SQLite database file (WAL mode); safe to use from several threads.

    Opening it migrates its schema to this Atelier's version (``migrations.py``); a database from a newer
    Atelier raises ``SchemaError`` and is left untouched."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        try:
            with self._lock:
                # migrate first: a database from a newer Atelier is refused before anything (the journal
                # mode included) is written to it
                self.migrated_from = migrate(self._db, name=self.path)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _row(self, row: sqlite3.Row | None) -> Job | None:
        if row is None:
            return None
        d = dict(row)
        for k in JSON_COLUMNS:
            if d.get(k) is not None:
                d[k] = json.loads(d[k])
        return Job(**d)

    # -- jobs --------------------------------------------------------------------------------------

    def add_job(
        self,
        job_id: str,
        workflow: Any,
        overrides: dict[str, Any],
        *,
        priority: int = 0,
        outputs_requested: list[str] | None = None,
        client_id: str | None = None,
        source: str = "atelier",
    ) -> int:
        with self._lock:
            cur = self._db.execute("SELECT COALESCE(MAX(number), 0) + 1 FROM jobs")
            number = int(cur.fetchone()[0])
            self._db.execute(
                "INSERT INTO jobs (id, number, priority, status, workflow, overrides, outputs_requested, client_id,"
                " source, created) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    number,
                    priority,
                    json.dumps(workflow),
                    json.dumps(overrides),
                    json.dumps(outputs_requested) if outputs_requested is not None else None,
                    client_id,
                    source,
                    time.time(),
                ),
            )
            return number

    def get_job(self, job_id: str) -> Job | None:
        with self._lock:
            return self._row(self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def next_queued(self) -> Job | None:
        """Take the next queued job (highest priority, then oldest) and mark it running, atomically."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM jobs WHERE status = 'queued' ORDER BY priority DESC, number LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            started = time.time()
            self._db.execute(
                "UPDATE jobs SET status = 'running', started = ? WHERE id = ?", (started, row["id"])
            )
            job = self._row(row)
            assert job is not None
            return dataclasses.replace(job, status="running", started=started)

    def take_queued(self, limit: int, accept: Callable[[Job], bool]) -> list[Job]:
        """Take up to ``limit`` queued jobs that ``accept`` (in queue order: highest priority, then oldest)
        and mark them running, atomically: the partners a worker runs in one batch with a job. Looks at the
        first ``TAKE_SCAN`` queued jobs only."""
        if limit <= 0:
            return []
        taken: list[Job] = []
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE status = 'queued' ORDER BY priority DESC, number LIMIT ?",
                (TAKE_SCAN,),
            ).fetchall()
            started = time.time()
            for row in rows:
                job = self._row(row)
                if job is None or not accept(job):
                    continue
                self._db.execute(
                    "UPDATE jobs SET status = 'running', started = ? WHERE id = ?", (started, job.id)
                )
                taken.append(dataclasses.replace(job, status="running", started=started))
                if len(taken) >= limit:
                    break
        return taken

    def finish_job(
        self,
        job_id: str,
        status: str,
        *,
        outputs: dict[str, Any] | None = None,
        error: Any = None,
        executed: list[str] | None = None,
        cached: list[str] | None = None,
    ) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status = ?, outputs = ?, error = ?, executed = ?, cached = ?, finished = ? WHERE id = ?",
                (
                    status,
                    json.dumps(outputs or {}),
                    json.dumps(error) if error is not None else None,
                    json.dumps(executed or []),
                    json.dumps(cached or []),
                    time.time(),
                    job_id,
                ),
            )

    def cancel_queued(self, job_id: str) -> bool:
        with self._lock:
            cur = self._db.execute(
                "UPDATE jobs SET status = 'cancelled', finished = ? WHERE id = ? AND status = 'queued'",
                (time.time(), job_id),
            )
            return cur.rowcount > 0

    def cancel_all_queued(self) -> int:
        with self._lock:
            cur = self._db.execute(
                "UPDATE jobs SET status = 'cancelled', finished = ? WHERE status = 'queued'", (time.time(),)
            )
            return cur.rowcount

    def delete_job(self, job_id: str) -> bool:
        with self._lock:
            cur = self._db.execute(
                f"DELETE FROM jobs WHERE id = ? AND status IN ({_marks(FINISHED)})", (job_id, *FINISHED)
            )
            return cur.rowcount > 0

    def clear_history(self) -> int:
        with self._lock:
            cur = self._db.execute(f"DELETE FROM jobs WHERE status IN ({_marks(FINISHED)})", FINISHED)
            return cur.rowcount

    def requeue(self, job_id: str, *, died: bool = True) -> int:
        """Put a running job back in the queue, in its old place (a worker died under it, or it never started
        there); ``died`` counts the attempt. Returns the job's attempts so far."""
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status = 'queued', started = NULL, attempts = attempts + ? "
                "WHERE id = ? AND status = 'running'",
                (1 if died else 0, job_id),
            )
            row = self._db.execute("SELECT attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return int(row[0]) if row is not None else 0

    def recover_after_restart(self, *, requeue: bool = False) -> list[str]:
        """Jobs left 'running' by a stopped server are marked interrupted (or, with ``requeue``, when workers
        on a cluster may have been running them, queued again in their old place); queued ones stay queued."""
        if requeue:
            with self._lock:
                ids = [r[0] for r in self._db.execute("SELECT id FROM jobs WHERE status = 'running'")]
                self._db.execute("UPDATE jobs SET status = 'queued', started = NULL WHERE status = 'running'")
                return ids
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT id FROM jobs WHERE status = 'running'")]
            self._db.execute(
                "UPDATE jobs SET status = 'interrupted', finished = ?, error = ? WHERE status = 'running'",
                (time.time(), json.dumps({"message": "the server stopped while this job was running"})),
            )
            return ids

    def queue(self) -> tuple[list[Job], list[Job]]:
        """(running, queued in the order they will run)."""
        with self._lock:
            running = [self._row(r) for r in self._db.execute("SELECT * FROM jobs WHERE status = 'running'")]
            queued = [
                self._row(r)
                for r in self._db.execute(
                    "SELECT * FROM jobs WHERE status = 'queued' ORDER BY priority DESC, number"
                )
            ]
            return running, queued  # type: ignore[return-value]

    def count_queued(self) -> int:
        with self._lock:
            return int(
                self._db.execute(
                    "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')"
                ).fetchone()[0]
            )

    def history(
        self, *, offset: int = 0, limit: int = 50, status: str | None = None
    ) -> tuple[list[Job], int]:
        """Finished jobs, newest first, with the total count."""
        offset, limit = min(max(offset, 0), 2**62), min(max(limit, 0), 2**62)  # SQLite integers are 64-bit
        with self._lock:
            statuses = (status,) if status else FINISHED
            total = self._db.execute(
                f"SELECT COUNT(*) FROM jobs WHERE status IN ({_marks(statuses)})", statuses
            ).fetchone()[0]
            rows = self._db.execute(
                f"SELECT * FROM jobs WHERE status IN ({_marks(statuses)}) ORDER BY number DESC LIMIT ? OFFSET ?",
                (*statuses, limit, offset),
            ).fetchall()
            return [self._row(r) for r in rows], int(total)  # type: ignore[misc]

    # -- workflow library --------------------------------------------------------------------------

    def save_workflow(self, name: str, data: Any) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO workflows (name, data, updated) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET data = excluded.data, updated = excluded.updated",
                (name, json.dumps(data), time.time()),
            )

    def get_workflow(self, name: str) -> Any | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM workflows WHERE name = ?", (name,)).fetchone()
            return json.loads(row[0]) if row else None

    def list_workflows(self) -> list[dict[str, Any]]:
        with self._lock:
            out = []
            for name, data, updated in self._db.execute(
                "SELECT name, data, updated FROM workflows ORDER BY name"
            ):
                meta = json.loads(data).get("metadata", {}) if data.startswith("{") else {}
                out.append(
                    {"name": name, "updated": updated, "description": (meta or {}).get("description", "")}
                )
            return out

    def delete_workflow(self, name: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM workflows WHERE name = ?", (name,)).rowcount > 0


def _marks(values: tuple[str, ...]) -> str:
    return ", ".join("?" for _ in values)
