"""The store's schema versions: a fresh database, one made before versioning existed, one from a newer
Atelier, and the migration steps' order and atomicity."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from atelier.engine.server.migrations import STEPS, SchemaError, Step, latest, migrate
from atelier.engine.server.store import Store
from tests.server.harness import serve_command, server_env

# The schema as Atelier wrote it before the store had versions (verbatim from store.py at that time):
# databases in users' hands look like this, with user_version 0.
UNVERSIONED_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
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
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs(status, priority DESC, number);
CREATE INDEX IF NOT EXISTS jobs_number ON jobs(number);
CREATE TABLE IF NOT EXISTS workflows (
    name TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    updated REAL NOT NULL
);
"""

WORKFLOW = {"format": "atelier/workflow", "version": 1, "nodes": {}, "metadata": {"description": "kept"}}


def unversioned_database(path: Path) -> None:
    """A database as the store wrote it before versioning: WAL, the old schema, and jobs in every state
    (inserted with the statements that store used)."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript(UNVERSIONED_SCHEMA)
    now = time.time()
    rows = [
        ("done", 1, 0, "success", {"save": {"images": [{"filename": "a.png"}]}}, None, now - 30, now - 20),
        ("broke", 2, 0, "failed", {}, {"message": "boom", "node": "loader"}, now - 19, now - 18),
        ("busy", 3, 0, "running", {}, None, now - 10, None),
        ("waiting", 4, 5, "queued", {}, None, None, None),
    ]
    for job_id, number, priority, status, outputs, error, started, finished in rows:
        con.execute(
            "INSERT INTO jobs (id, number, priority, status, workflow, overrides, outputs_requested, client_id,"
            " source, created) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
            (job_id, number, priority, json.dumps({"1": {"class_type": "X"}}), json.dumps({"seed": number}),
             None, f"client-{number}", "comfy", now - 40),
        )  # fmt: skip
        if status != "queued":
            con.execute(
                "UPDATE jobs SET status = ?, outputs = ?, error = ?, started = ?, finished = ? WHERE id = ?",
                (
                    status,
                    json.dumps(outputs),
                    json.dumps(error) if error else None,
                    started,
                    finished,
                    job_id,
                ),
            )
    con.execute(
        "INSERT INTO workflows (name, data, updated) VALUES (?, ?, ?)", ("mine", json.dumps(WORKFLOW), now)
    )
    con.close()


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as con:
        return int(con.execute("PRAGMA user_version").fetchone()[0])


def shape(path: Path) -> dict[str, object]:
    """Tables with their columns and indexes with their columns: what a schema is, ignoring SQL text."""
    with sqlite3.connect(path) as con:
        names = con.execute("SELECT type, name, tbl_name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
        out: dict[str, object] = {}
        for kind, name, table in sorted(names):
            if kind == "table":
                out[name] = [tuple(r[1:]) for r in con.execute(f"PRAGMA table_info({name})")]
            else:
                out[name] = (table, [r[2] for r in con.execute(f"PRAGMA index_xinfo({name})") if r[5]])
        return out


def test_a_fresh_database_is_created_at_the_latest_version(tmp_path: Path) -> None:
    store = Store(tmp_path / "fresh.db")
    assert store.migrated_from == 0
    assert store.add_job("a", WORKFLOW, {}) == 1
    store.close()
    assert user_version(tmp_path / "fresh.db") == latest() == STEPS[-1].version
    assert {"jobs", "workflows", "jobs_queue", "jobs_number"} <= set(shape(tmp_path / "fresh.db"))
    again = Store(tmp_path / "fresh.db")  # opening again changes nothing
    assert again.migrated_from == latest() and again.get_job("a") is not None
    again.close()


def test_a_database_from_before_versions_is_version_1_and_keeps_its_jobs(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    unversioned_database(db)
    assert user_version(db) == 0
    store = Store(db)
    assert store.migrated_from == 0 and user_version(db) == latest()

    done = store.get_job("done")
    assert done is not None and done.status == "success" and done.number == 1
    assert done.outputs == {"save": {"images": [{"filename": "a.png"}]}}
    assert done.overrides == {"seed": 1} and done.client_id == "client-1" and done.source == "comfy"
    broke = store.get_job("broke")
    assert broke is not None and broke.error == {"message": "boom", "node": "loader"}
    running, queued = store.queue()
    assert [j.id for j in running] == ["busy"] and [j.id for j in queued] == ["waiting"]
    jobs, total = store.history()
    assert total == 2 and [j.id for j in jobs] == ["broke", "done"]
    assert store.get_workflow("mine") == WORKFLOW
    assert [w["description"] for w in store.list_workflows()] == ["kept"]
    assert store.recover_after_restart() == ["busy"]
    assert store.add_job("new", WORKFLOW, {}) == 5  # numbering goes on
    store.close()


def test_step_1_makes_the_schema_databases_before_versions_have(tmp_path: Path) -> None:
    unversioned_database(tmp_path / "old.db")
    Store(tmp_path / "old.db").close()
    Store(tmp_path / "fresh.db").close()
    assert shape(tmp_path / "old.db") == shape(tmp_path / "fresh.db")


def test_a_database_from_a_newer_atelier_is_refused_and_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "newer.db"
    con = sqlite3.connect(db)  # rollback journal: switching it to WAL would rewrite its header
    con.executescript(UNVERSIONED_SCHEMA)
    con.execute(f"PRAGMA user_version = {latest() + 1}")
    con.close()
    before = db.read_bytes()
    with pytest.raises(SchemaError) as refused:
        Store(db)
    message = str(refused.value)
    assert f"version {latest() + 1}" in message and f"up to {latest()}" in message and str(db) in message
    assert user_version(db) == latest() + 1 and db.read_bytes() == before


def test_a_foreign_jobs_table_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "foreign.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE jobs (name TEXT, salary INTEGER)")
    with pytest.raises(SchemaError, match="not Atelier's"):
        Store(db)
    assert user_version(db) == 0


def test_steps_run_in_order_and_a_failing_step_rolls_all_back(tmp_path: Path) -> None:
    db = tmp_path / "steps.db"
    unversioned_database(db)
    con = sqlite3.connect(db, isolation_level=None)
    n = latest() + 1  # the steps after this Atelier's own
    add_column = Step(n, "a column", ("ALTER TABLE jobs ADD COLUMN note TEXT", "UPDATE jobs SET note = id"))
    broken = Step(n + 1, "a mistake", ("CREATE TABLE later (x)", "SELECT * FROM no_such_table"))
    with pytest.raises(sqlite3.OperationalError):
        migrate(con, (*STEPS, add_column, broken))
    assert int(con.execute("PRAGMA user_version").fetchone()[0]) == 0  # not even stamped as version 1
    columns = {r[1] for r in con.execute("PRAGMA table_info(jobs)")}
    assert (
        "note" not in columns
        and not con.execute("SELECT 1 FROM sqlite_master WHERE name = 'later'").fetchone()
    )

    assert migrate(con, (*STEPS, add_column)) == 0
    assert int(con.execute("PRAGMA user_version").fetchone()[0]) == n
    assert dict(con.execute("SELECT id, note FROM jobs")) == {
        j: j for j in ("done", "broke", "busy", "waiting")
    }
    assert migrate(con, (*STEPS, add_column)) == n  # already there: nothing runs
    with pytest.raises(ValueError, match="in order"):
        migrate(con, (add_column, *STEPS))
    con.close()


def test_serve_refuses_a_newer_database_with_both_versions(tmp_path: Path) -> None:
    db = tmp_path / "newer.db"
    Store(db).close()
    with sqlite3.connect(db) as con:
        con.execute(f"PRAGMA user_version = {latest() + 7}")
    proc = subprocess.run(
        serve_command(["--port", "1", "--database", str(db), "--models-dir", str(tmp_path / "models")]),
        cwd=tmp_path,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"version {latest() + 7}" in proc.stderr and f"up to {latest()}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert user_version(db) == latest() + 7
