"""Load: 100 jobs from 10 concurrent clients (half through Atelier's API, half through ComfyUI's
``/prompt``), cheap graphs with one tiny-checkpoint txt2img per client among them. Every job completes
exactly once (one terminal event each on the websocket, status success, its own output file), numbers are
unique, each client's jobs run in its order, the queue ends empty, the database passes its integrity check,
and the whole run stays within a time bound."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from websockets.sync.client import connect

from tests.reliability.conftest import LiveServer
from tests.reliability.contract import api_path, atelier_ws
from tests.server.harness import comfy_prompt

CLIENTS = 10
JOBS_EACH = 10
TIME_BOUND_S = 240  # the 100 jobs take ~10-30 s on a loaded 2-core machine
TERMINAL = ("job_finished", "job_failed", "job_interrupted")


def toy_graph(color: int, prefix: str) -> dict[str, Any]:
    """An image of one colour, saved: a job of a few milliseconds with its own output file."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": color},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def client_run(live: LiveServer, n: int, barrier: threading.Barrier) -> dict[str, Any]:
    name = f"load-{n}"
    comfy = n % 2 == 1
    jobs_path = api_path(live.app, "post", "/jobs")
    with live.client() as http, connect(f"{live.ws_base}{atelier_ws(live.app)}", open_timeout=30) as ws:
        json.loads(ws.recv(timeout=30))  # hello
        barrier.wait(timeout=60)
        ids: list[str] = []
        for i in range(JOBS_EACH):
            graph = (
                comfy_prompt(seed=n * 100 + i, steps=1, prefix=name)
                if i == JOBS_EACH // 2
                else toy_graph(n * 1000 + i, name)
            )
            if comfy:
                r = http.post("/prompt", json={"prompt": graph, "client_id": name})
                assert r.status_code == 200, r.text
                ids.append(r.json()["prompt_id"])
            else:
                r = http.post(jobs_path, json={"workflow": graph, "client_id": name})
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
        mine = set(ids)
        ends: dict[str, list[dict[str, Any]]] = {}
        while sum(len(v) for v in ends.values()) < len(ids) or len(ends) < len(ids):
            raw = ws.recv(timeout=120)
            if isinstance(raw, bytes):
                continue
            m = json.loads(raw)
            if m.get("job") in mine and m["type"] in TERMINAL:
                ends.setdefault(m["job"], []).append(m)
        # late duplicates: a notice after the last terminal event still arrives in order, so ask for the
        # state of one job and read up to its reply
        ws.send(json.dumps({"type": "state", "job": ids[-1]}))
        for raw in iter(lambda: ws.recv(timeout=30), None):
            if isinstance(raw, bytes):
                continue
            m = json.loads(raw)
            if m["type"] == "state":
                break
            if m.get("job") in mine and m["type"] in TERMINAL:
                ends.setdefault(m["job"], []).append(m)
    return {"name": name, "ids": ids, "ends": ends}


def test_100_jobs_from_10_clients_complete_exactly_once(live: LiveServer) -> None:
    barrier = threading.Barrier(CLIENTS)
    started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        results = [
            f.result(timeout=TIME_BOUND_S)
            for f in [pool.submit(client_run, live, n, barrier) for n in range(CLIENTS)]
        ]
    elapsed = time.monotonic() - started
    assert elapsed < TIME_BOUND_S

    all_ids = [j for r in results for j in r["ids"]]
    assert len(all_ids) == len(set(all_ids)) == CLIENTS * JOBS_EACH
    for r in results:
        assert set(r["ends"]) == set(r["ids"]), r["name"]
        assert all(len(events) == 1 for events in r["ends"].values()), r["name"]  # exactly once
        assert all(events[0]["type"] == "job_finished" for events in r["ends"].values()), r["name"]

    view = api_path(live.app, "get", "/jobs/{job_id}")
    with live.client() as http:
        views = [http.get(view.replace("{job_id}", j)).json() for j in all_ids]
        assert http.get(api_path(live.app, "get", "/queue")).json() == {"running": [], "queued": []}
    assert [v["status"] for v in views] == ["success"] * len(all_ids)
    assert len({v["number"] for v in views}) == len(views)
    files = []
    for r in results:
        mine = [v for v in views if v["id"] in r["ids"]]
        assert [v["number"] for v in mine] == sorted(v["number"] for v in mine)  # in the order queued
        for v in mine:
            (image,) = next(iter(v["outputs"].values()))["images"]
            files.append(image["filename"])
            assert image["filename"].startswith(r["name"] + "_")
    assert len(set(files)) == len(all_ids)
    assert all((live.root / "output" / f).is_file() for f in files)
    with sqlite3.connect(live.root / "atelier.db") as con:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = con.execute(
            f"SELECT id, COUNT(*) FROM jobs WHERE id IN ({','.join('?' * len(all_ids))}) GROUP BY id", all_ids
        ).fetchall()
    assert sorted(rows) == sorted((j, 1) for j in all_ids)
    print(
        f"load: {len(all_ids)} jobs from {CLIENTS} clients in {elapsed:.1f} s ({len(all_ids) / elapsed:.1f} jobs/s)"
    )
