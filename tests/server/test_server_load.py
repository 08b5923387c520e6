"""200 jobs from 20 concurrent clients (half Atelier API + /ws, half ComfyUI /prompt + /ws?clientId): every
job completes, once, and each client hears about its own jobs."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.server.harness import Server, comfy_prompt, portrait

CLIENTS = 20
JOBS_EACH = 10


def atelier_client(server: Server, n: int, barrier: threading.Barrier) -> dict[str, Any]:
    name = f"atelier-{n}"
    with server.client() as http, server.ws() as ws:
        barrier.wait(timeout=60)
        ids = []
        for i in range(JOBS_EACH):
            body = {**portrait(seed=10_000 + n * 100 + i, steps=1), "client_id": name}
            r = http.post("/atelier/v1/jobs", json=body)
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        finished: dict[str, int] = {}
        outputs: dict[str, str] = {}
        while len(finished) < len(ids) or any(finished[j] > 1 for j in finished):
            raw = ws.recv(timeout=60)
            if isinstance(raw, bytes):
                continue
            m = json.loads(raw)
            if m.get("job") in ids and m["type"] in ("job_finished", "job_failed", "job_interrupted"):
                assert m["type"] == "job_finished", m
                finished[m["job"]] = finished.get(m["job"], 0) + 1
                # what a client does next: the job's record already says how it ended
                assert http.get(f"/atelier/v1/jobs/{m['job']}").json()["status"] == "success"
                outputs[m["job"]] = m["outputs"]["save"]["images"][0]["filename"]
    return {"name": name, "ids": ids, "finished": finished, "outputs": outputs, "foreign": set()}


def comfy_client(server: Server, n: int, barrier: threading.Barrier) -> dict[str, Any]:
    name = f"comfy-{n}"
    with server.client() as http, server.ws(f"clientId={name}") as ws:
        barrier.wait(timeout=60)
        ids = []
        for i in range(JOBS_EACH):
            prompt = comfy_prompt(seed=20_000 + n * 100 + i, steps=1, prefix=f"load_{name}")
            r = http.post("/prompt", json={"prompt": prompt, "client_id": name})
            assert r.status_code == 200, r.text
            ids.append(r.json()["prompt_id"])
        finished: dict[str, int] = {}
        outputs: dict[str, str] = {}
        foreign: set[str] = set()
        while len(finished) < len(ids):
            raw = ws.recv(timeout=60)
            if isinstance(raw, bytes):
                continue
            m = json.loads(raw)
            pid = m["data"].get("prompt_id")
            if pid is not None and pid not in ids:
                foreign.add(pid)
            if m["type"] == "executed":
                outputs[pid] = m["data"]["output"]["images"][0]["filename"]
            if m["type"] == "executing" and m["data"]["node"] is None and pid in ids:
                finished[pid] = finished.get(pid, 0) + 1
                # what a ComfyUI client does next: its history entry is there, with the outputs
                entry = http.get(f"/history/{pid}").json()[pid]
                assert (
                    entry["status"]["completed"]
                    and entry["outputs"]["9"]["images"][0]["filename"] == outputs[pid]
                )
            assert m["type"] not in ("execution_error", "execution_interrupted"), m
    return {"name": name, "ids": ids, "finished": finished, "outputs": outputs, "foreign": foreign}


def test_200_jobs_from_20_concurrent_clients(server: Server, http: httpx.Client) -> None:
    barrier = threading.Barrier(CLIENTS)
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [
            pool.submit(atelier_client if n % 2 else comfy_client, server, n, barrier) for n in range(CLIENTS)
        ]
        results = [f.result(timeout=300) for f in futures]

    all_ids = [j for r in results for j in r["ids"]]
    assert len(all_ids) == len(set(all_ids)) == CLIENTS * JOBS_EACH
    for r in results:
        assert set(r["finished"]) == set(r["ids"]), r["name"]
        assert set(r["finished"].values()) == {1}, r["name"]  # each terminal event once
        assert r["foreign"] == set(), f"{r['name']} heard about other clients' prompts"

    views = [http.get(f"/atelier/v1/jobs/{j}").json() for j in all_ids]
    assert [v["status"] for v in views] == ["success"] * len(all_ids)
    numbers = [v["number"] for v in views]
    assert len(set(numbers)) == len(numbers)
    for r in results:  # each client's jobs ran in the order it queued them
        mine = [v for v in views if v["id"] in r["ids"]]
        assert [v["number"] for v in mine] == sorted(v["number"] for v in mine)
        assert [v["started"] for v in mine] == sorted(v["started"] for v in mine)
        assert all(v["client_id"] == r["name"] for v in mine)
    files = [name for r in results for name in r["outputs"].values()]
    assert len(set(files)) == len(all_ids)
    assert all((server.folder("output") / f).is_file() for f in files)
    assert http.get("/atelier/v1/queue").json() == {"running": [], "queued": []}
