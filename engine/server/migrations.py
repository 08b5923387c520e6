"""The store's schema, versioned like the workflow format: ``PRAGMA user_version`` and ordered steps.

A database remembers the schema version it was last migrated to in SQLite's ``user_version`` header field.
Opening it applies every step above that version, in order, inside one write transaction that also sets
the new version, so a database is either fully at the new version or untouched (SQLite DDL and the
``user_version`` pragma are both transactional). A database written by a newer Atelier is refused rather
than read with assumptions that may no longer hold.

Databases created before versioning existed have ``user_version`` 0 but already hold the version 1 tables:
they are recognised by their ``jobs`` table and stamped as version 1 without running step 1.

Adding a change: append ``Step(N + 1, "what and why", (statements...))``; never edit a released step.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class SchemaError(RuntimeError):
    """The database cannot be used by this Atelier (too new, or not an Atelier database)."""


@dataclass(frozen=True)
class Step:
    """One migration: the statements that take a database from ``version - 1`` to ``version``."""

    version: int
    description: str
    statements: tuple[str, ...]


# Statements run one by one (``executescript`` would commit the open transaction first).
STEPS: tuple[Step, ...] = (
    Step(
        1,
        "the job queue and history, and the workflow library",
        (
            """CREATE TABLE jobs (
                id TEXT PRIMARY KEY,
                number INTEGER NOT NULL,
                priority INTEGER NOT NULL DEFAULT 0,
                status TEXT NOT NULL,
                workflow TEXT NOT NULL,
                overrides TEXT NOT NULL DEFAULT '{}',
                outputs_requested TEXT,
                client_id TEXT,
                source TEXT NOT NULL DEFAULT 'atelier',
                outputs TEXT NOT NULL DEFAULT '{}',
                error TEXT,
                executed TEXT NOT NULL DEFAULT '[]',
                cached TEXT NOT NULL DEFAULT '[]',
                created REAL NOT NULL,
                started REAL,
                finished REAL
            )""",
            "CREATE INDEX jobs_queue ON jobs(status, priority DESC, number)",
            "CREATE INDEX jobs_number ON jobs(number)",
            """CREATE TABLE workflows (
                name TEXT PRIMARY KEY,
                data TEXT NOT NULL,
                updated REAL NOT NULL
            )""",
        ),
    ),
    Step(
        2,
        "how many times a job was started on a worker that then died (Ray workers re-queue such a job once)",
        ("ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",),
    ),
)

#: the columns a version 1 ``jobs`` table has: how an unversioned database from before migrations is
#: recognised as version 1 (and a foreign database with a ``jobs`` table is not)
V1_JOB_COLUMNS = frozenset(
    "id number priority status workflow overrides outputs_requested client_id source outputs error executed"
    " cached created started finished".split()
)


def latest(steps: Sequence[Step] = STEPS) -> int:
    return steps[-1].version if steps else 0


def version_of(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection, steps: Sequence[Step] = STEPS, *, name: str = "the database") -> int:
    """Bring ``db`` (a connection in autocommit mode, ``isolation_level=None``) to the latest version of
    ``steps``; returns the version it was at before. Raises ``SchemaError`` for a database from a newer
    Atelier or one that is not Atelier's; a failing step rolls everything back and re-raises."""
    _check_order(steps)
    target = latest(steps)
    # IMMEDIATE takes the write lock before reading the version: two servers opening one file at once
    # cannot both run a step
    db.execute("BEGIN IMMEDIATE")
    try:
        found = version_of(db)
        if found > target:
            raise _newer(name, found, target)
        current = found or _unversioned(db, name)
        for step in steps:
            if step.version > current:
                for sql in step.statements:
                    db.execute(sql)
        if target != found:
            db.execute(f"PRAGMA user_version = {int(target)}")
        db.execute("COMMIT")
        return found
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _newer(name: str, found: int, target: int) -> SchemaError:
    return SchemaError(
        f"{name} has store schema version {found}, written by a newer Atelier; this Atelier reads "
        f"versions up to {target}: upgrade Atelier or start it with another --database"
    )


def refuse_newer(path: Path, steps: Sequence[Step] = STEPS) -> None:
    """Raise ``SchemaError`` if the database file at ``path`` is from a newer Atelier, reading it without
    writing anything (a missing file is fine): the server says so before it loads anything heavy."""
    if not path.is_file():
        return
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        found = version_of(db)
    finally:
        db.close()
    if found > latest(steps):
        raise _newer(str(path), found, latest(steps))


def _unversioned(db: sqlite3.Connection, name: str) -> int:
    """The version of a database whose ``user_version`` is 0: empty (0), or made before versioning (1)."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "jobs" not in tables:
        return 0
    columns = {r[1] for r in db.execute("PRAGMA table_info(jobs)")}
    if not V1_JOB_COLUMNS <= columns or "workflows" not in tables:
        raise SchemaError(f"{name} has a 'jobs' table that is not Atelier's: refusing to use it")
    return 1


def _check_order(steps: Sequence[Step]) -> None:
    if [s.version for s in steps] != list(range(1, len(steps) + 1)):
        raise ValueError("migration steps must be numbered 1, 2, 3, ... in order")
