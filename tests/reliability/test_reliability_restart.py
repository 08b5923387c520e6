"""Kill and restart: ``atelier serve`` on the tiny checkpoint with jobs from three clients queued around a
long one is killed (SIGKILL) while that job samples. The SQLite database must pass ``PRAGMA
integrity_check`` as the kill left it; after a restart every job is there exactly once: those that had
finished stay finished, the one that was running is marked interrupted (and never run again), those that
were queued run once each. Nothing is lost, nothing duplicated, no output written twice.

With ``--runslow`` the kill comes again at unpredictable moments while short jobs stream through."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx

from tests.reliability import budget
from tests.reliability.contract import api_path
from tests.reliability.test_reliability_load import toy_graph
from tests.server.harness import Server, comfy_prompt

CLIENTS = ("a", "b", "c")


def integrity(db: Path) -> list[tuple[str]]:
    with sqlite3.connect(db) as con:
        return con.execute("PRAGMA integrity_check").fetchall()


def rows(db: Path) -> dict[str, tuple[str, int]]:
    """id -> (status, number) of every job row (duplicates would collapse: counted separately)."""
    with sqlite3.connect(db) as con:
        (count,) = con.execute("SELECT COUNT(*) FROM jobs").fetchone()
        out = {i: (s, n) for i, s, n in con.execute("SELECT id, status, number FROM jobs")}
    assert count == len(out)
    return out


class Clients:
    """Three clients submitting in turn, through Atelier's API (a, c) and ComfyUI's /prompt (b)."""

    def __init__(self, srv: Server) -> None:
        self.srv = srv
        with srv.client() as http:
            self.schema = http.get("/openapi.json").json()
        self.jobs = api_path(self.schema, "post", "/jobs")
        self.job = api_path(self.schema, "get", "/jobs/{job_id}")

    def submit(self, http: httpx.Client, client: str, graph: dict[str, Any]) -> str:
        if client == "b":
            r = http.post("/prompt", json={"prompt": graph, "client_id": client})
            assert r.status_code == 200, r.text
            return str(r.json()["prompt_id"])
        r = http.post(self.jobs, json={"workflow": graph, "client_id": client})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def status(self, http: httpx.Client, job: str) -> str:
        return str(http.get(self.job.replace("{job_id}", job)).json()["status"])

    def wait(self, http: httpx.Client, jobs: list[str], timeout: float = 180) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        out: dict[str, str] = {}
        for job in jobs:
            while (status := self.status(http, job)) in ("queued", "running"):
                assert time.monotonic() < deadline, f"job {job} still {status}"
                time.sleep(0.05)
            out[job] = status
        return out


def output_pngs(srv: Server) -> list[Path]:
    return [p for p in srv.folder("output").rglob("*.png") if not p.name.startswith(".")]


def test_sigkill_mid_queue_loses_and_duplicates_nothing(tmp_path: Path, models_dir: Path) -> None:
    srv = Server(tmp_path / "srv", models_dir)
    try:
        srv.start()
        clients = Clients(srv)
        n = 0
        with srv.client() as http:
            before = []
            for _ in range(4):
                for c in CLIENTS:
                    before.append(clients.submit(http, c, toy_graph(n, f"kill_{c}")))
                    n += 1
            long = clients.submit(http, "a", comfy_prompt(seed=5, steps=400, size=128, prefix="long"))
            after = []
            for _ in range(4):
                for c in CLIENTS:
                    after.append(clients.submit(http, c, toy_graph(n, f"kill_{c}")))
                    n += 1
            deadline = time.monotonic() + 120
            while clients.status(http, long) != "running":
                assert time.monotonic() < deadline, "the long job never started"
                time.sleep(0.02)
            time.sleep(0.3)  # well into sampling
        srv.stop(signal.SIGKILL)

        assert integrity(srv.database) == [("ok",)]
        killed = rows(srv.database)
        submitted = [*before, long, *after]
        assert set(killed) == set(submitted)
        assert all(killed[j][0] == "success" for j in before)
        assert killed[long][0] == "running"
        assert all(killed[j][0] == "queued" for j in after)

        srv.start()
        clients = Clients(srv)
        with srv.client() as http:
            final = clients.wait(http, submitted)
        assert final == {**{j: "success" for j in before + after}, long: "interrupted"}
        assert integrity(srv.database) == [("ok",)]
        end = rows(srv.database)
        assert set(end) == set(submitted)  # nothing lost, nothing added
        assert len({num for _, num in end.values()}) == len(submitted)  # numbers unique
        assert not [p for p in output_pngs(srv) if p.name.startswith("long")]  # never run again
        assert len(output_pngs(srv)) == len(before) + len(after)  # each job's picture written once

        if budget.SLOW:
            srv.stop()
            chaos(srv, rounds=5)
    finally:
        srv.stop()


def chaos(srv: Server, rounds: int) -> None:
    """Kills at unpredictable moments while short jobs stream: each time, every job ends up exactly once
    (finished, or interrupted if it was running), and the database stays sound."""
    import random

    rng = random.Random(1234)
    for r in range(rounds):
        srv.start()
        clients = Clients(srv)
        with srv.client() as http:
            jobs = [
                clients.submit(http, CLIENTS[i % 3], toy_graph(10_000 * (r + 1) + i, "chaos"))
                for i in range(60)
            ]
            time.sleep(rng.uniform(0.05, 1.5))
        srv.stop(signal.SIGKILL)
        assert integrity(srv.database) == [("ok",)]
        assert set(jobs) <= set(rows(srv.database))
        srv.start()
        clients = Clients(srv)
        with srv.client() as http:
            final = clients.wait(http, jobs)
        assert set(final.values()) <= {"success", "interrupted"}
        assert list(final.values()).count("interrupted") <= 1
        srv.stop()
