"""Jobs survive restarts: queued jobs run when the server starts again; the job that was running when it
stopped (cleanly or killed) is marked interrupted."""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path

import httpx

from tests.server.harness import Server, comfy_prompt, portrait, wait_job


def statuses(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as con:
        return dict(con.execute("SELECT id, status FROM jobs"))


def submit(http: httpx.Client, body: dict) -> str:
    r = http.post("/atelier/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def start_long_job_and_queue(srv: Server, seed: int) -> tuple[str, list[str]]:
    """A long job that is sampling, with three jobs queued behind it (the second a ComfyUI prompt of
    client "owner-a")."""
    with srv.client() as http, srv.ws() as ws:
        long = submit(http, portrait(seed=seed, steps=200, width=128, height=128))
        queued = [submit(http, portrait(seed=seed + 1))]
        r = http.post("/prompt", json={"prompt": comfy_prompt(seed=seed + 2), "client_id": "owner-a"})
        queued.append(r.json()["prompt_id"])
        queued.append(submit(http, portrait(seed=seed + 3)))
        for raw in iter(lambda: ws.recv(timeout=60), None):
            if isinstance(raw, str) and (m := json.loads(raw))["type"] == "progress" and m["job"] == long:
                break
        assert http.get(f"/atelier/v1/jobs/{long}").json()["status"] == "running"
        assert [j["id"] for j in http.get("/atelier/v1/queue").json()["queued"]] == queued
    return long, queued


def check_after_restart(srv: Server, long: str, queued: list[str], message: str) -> None:
    with srv.client() as http, srv.ws("clientId=owner-a") as owner, srv.ws("clientId=owner-b") as stranger:
        views = [wait_job(http, job) for job in queued]
        assert [v["status"] for v in views] == ["success"] * 3
        assert [v["number"] for v in views] == sorted(v["number"] for v in views)
        view = http.get(f"/atelier/v1/jobs/{long}").json()
        assert view["status"] == "interrupted" and view["error"]["message"] == message
        assert "save" not in view["executed"]

        # the ComfyUI prompt still reports to the client that queued it, and to no other
        def heard(ws) -> set[str]:
            # the reply to its first message, the feature flags handshake, marks the end of what came before
            ws.send(json.dumps({"type": "feature_flags", "data": {}}))
            kinds = set()
            for raw in iter(lambda: ws.recv(timeout=10), None):
                if isinstance(raw, bytes):  # previews (of this prompt, or of jobs without a client)
                    continue
                m = json.loads(raw)
                if m["type"] == "feature_flags":
                    return kinds
                if m["data"].get("prompt_id") == queued[1]:
                    kinds.add(m["type"])
            raise AssertionError("unreachable")

        assert "execution_success" in heard(owner)
        assert heard(stranger) == set()

        # numbering goes on after the restart
        later = http.post("/atelier/v1/jobs", json=portrait(seed=1)).json()
        assert later["number"] > max(v["number"] for v in views)
        wait_job(http, later["id"])


def test_restart_with_jobs_queued(tmp_path: Path, models_dir: Path) -> None:
    srv = Server(tmp_path / "srv", models_dir)
    try:
        # a clean stop (SIGTERM) while a job samples and three wait
        srv.start()
        long, queued = start_long_job_and_queue(srv, seed=1000)
        assert srv.stop(signal.SIGTERM) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after shutdown
        assert statuses(srv.database) == {long: "interrupted", **{q: "queued" for q in queued}}
        srv.start()
        check_after_restart(srv, long, queued, "the server stopped while this job was running")

        # a crash (SIGKILL): the running job is found 'running' at start and marked interrupted
        long, queued = start_long_job_and_queue(srv, seed=2000)
        srv.stop(signal.SIGKILL)
        assert statuses(srv.database)[long] == "running"
        srv.start()
        check_after_restart(srv, long, queued, "the server stopped while this job was running")
        assert "marked 1 job(s) interrupted" in srv.log()
    finally:
        srv.stop()
