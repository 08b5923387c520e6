"""Server benchmark: ``python bench/server.py [--jobs 200] [--clients 20]``.

Starts ``atelier serve`` on loopback over a tiny SD1.5 checkpoint (as the server tests do), then M
concurrent clients submit N jobs between them (txt2img at 64 px, 1 step, distinct seeds), half through
Atelier's API with the Atelier websocket (every event), half through ComfyUI's ``/prompt`` with
``/ws?clientId`` (their own prompts' messages). Printed, all from this one run:
  * submit latency: the time of each ``POST /atelier/v1/jobs`` or ``POST /prompt``, p50/p90/p99/max;
  * event latency: for each JSON event an Atelier client receives, its arrival time minus the event's
    ``ts`` (when the engine emitted it), p50/p90/p99/max, over all Atelier clients;
  * throughput: jobs per second from the first submit to the last job's terminal event.
Client and server share this machine's cores, so the figures include that contention.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.server.harness import Server, comfy_prompt, portrait, wait_job, write_models  # noqa: E402

TERMINAL = {"job_finished", "job_failed", "job_interrupted"}


def percentiles(values: list[float]) -> str:
    if not values:
        return "no samples"
    xs = sorted(values)

    def pick(q: float) -> float:
        return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] * 1000

    return (
        f"p50 {pick(0.5):7.2f} ms   p90 {pick(0.9):7.2f} ms   p99 {pick(0.99):7.2f} ms   "
        f"max {xs[-1] * 1000:7.2f} ms   (n={len(xs)})"
    )


def atelier_client(srv: Server, n: int, jobs: int, barrier: threading.Barrier) -> dict[str, Any]:
    submits: list[float] = []
    arrivals: list[tuple[float, str | bytes]] = []
    ids: list[str] = []
    all_queued = threading.Event()

    def read(ws: Any) -> None:  # its own thread, so arrival times do not wait for the submits
        ended: set[str] = set()
        deadline = time.monotonic() + 600
        while not (all_queued.is_set() and ended.issuperset(ids)) and time.monotonic() < deadline:
            try:
                raw = ws.recv(timeout=0.2)
            except TimeoutError:
                continue
            arrivals.append((time.time(), raw))
            if isinstance(raw, str) and '"job_' in raw:
                m = json.loads(raw)
                if m["type"] in TERMINAL:
                    ended.add(m["job"])

    with srv.client() as http, srv.ws() as ws:
        reader = threading.Thread(target=read, args=(ws,), daemon=True)
        reader.start()
        barrier.wait(timeout=120)
        for i in range(jobs):
            body = {**portrait(seed=1_000_000 + n * 10_000 + i, steps=1), "client_id": f"atelier-{n}"}
            t = time.perf_counter()
            r = http.post("/atelier/v1/jobs", json=body)
            submits.append(time.perf_counter() - t)
            r.raise_for_status()
            ids.append(r.json()["id"])
        all_queued.set()
        reader.join(timeout=600)
    latencies = []
    for now, raw in arrivals:
        if isinstance(raw, str):
            m = json.loads(raw)
            if "ts" in m:
                latencies.append(now - m["ts"])
    return {"submits": submits, "latencies": latencies, "ids": ids, "done": arrivals[-1][0]}


def comfy_client(srv: Server, n: int, jobs: int, barrier: threading.Barrier) -> dict[str, Any]:
    submits: list[float] = []
    name = f"comfy-{n}"
    with srv.client() as http, srv.ws(f"clientId={name}") as ws:
        barrier.wait(timeout=120)
        ids = []
        for i in range(jobs):
            body = {"prompt": comfy_prompt(seed=2_000_000 + n * 10_000 + i, steps=1), "client_id": name}
            t = time.perf_counter()
            r = http.post("/prompt", json=body)
            submits.append(time.perf_counter() - t)
            r.raise_for_status()
            ids.append(r.json()["prompt_id"])
        left = set(ids)
        while left:
            raw = ws.recv(timeout=120)
            if isinstance(raw, str) and '"executing"' in raw:
                data = json.loads(raw)["data"]
                if data["node"] is None:
                    left.discard(data["prompt_id"])
        done = time.time()
    return {"submits": submits, "latencies": [], "ids": ids, "done": done}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=200, help="jobs in all (default 200)")
    ap.add_argument("--clients", type=int, default=20, help="concurrent clients (default 20)")
    ap.add_argument(
        "--torch-threads", type=int, default=1, help="server torch threads (0: torch's default; default 1)"
    )
    args = ap.parse_args()
    per_client = [
        args.jobs // args.clients + (1 if i < args.jobs % args.clients else 0) for i in range(args.clients)
    ]

    with tempfile.TemporaryDirectory(prefix="atelier-bench-") as tmp:
        root = Path(tmp)
        srv = Server(root / "server", write_models(root / "models"), torch_threads=args.torch_threads or None)
        try:
            t = time.perf_counter()
            srv.start()
            print(f"server up in {time.perf_counter() - t:.2f} s (port {srv.port})")
            with srv.client() as http:  # warm up: imports, checkpoint load, prompt encodes
                for body in (portrait(seed=1, steps=1), {"workflow": comfy_prompt(seed=1, steps=1)}):
                    wait_job(http, http.post("/atelier/v1/jobs", json=body).json()["id"], timeout=120)
                alone = []  # baseline: one client, idle server
                for i in range(20):
                    t = time.perf_counter()
                    job = http.post("/atelier/v1/jobs", json=portrait(seed=100 + i, steps=1)).json()["id"]
                    alone.append(time.perf_counter() - t)
                    wait_job(http, job)

            barrier = threading.Barrier(args.clients + 1)
            with ThreadPoolExecutor(args.clients) as pool:
                futures = [
                    pool.submit(atelier_client if i % 2 else comfy_client, srv, i, per_client[i], barrier)
                    for i in range(args.clients)
                ]
                barrier.wait(timeout=120)
                t0 = time.time()
                results = [f.result(timeout=600) for f in futures]
            elapsed = max(r["done"] for r in results) - t0
            with srv.client() as http:
                ids = [j for r in results for j in r["ids"]]
                statuses = [http.get(f"/atelier/v1/jobs/{j}").json()["status"] for j in ids]
                node_ms = [
                    v["finished"] - v["started"]
                    for v in (http.get(f"/atelier/v1/jobs/{j}").json() for j in ids[:50])
                ]
        finally:
            srv.stop()

    ok = statuses.count("success")
    submits_a = [s for i, r in enumerate(results) if i % 2 for s in r["submits"]]
    submits_c = [s for i, r in enumerate(results) if not i % 2 for s in r["submits"]]
    print(f"{len(ids)} jobs from {args.clients} concurrent clients: {ok} succeeded, {len(ids) - ok} not")
    print(
        f"throughput     {len(ids) / elapsed:7.1f} jobs/s  ({elapsed:.2f} s; median job run "
        f"{statistics.median(node_ms) * 1000:.1f} ms on the server)"
    )
    print(f"submit latency, one client alone on an idle server: {percentiles(alone)}")
    print(f"submit latency {percentiles(submits_a + submits_c)}")
    print(f"  /atelier/v1/jobs    {percentiles(submits_a)}")
    print(f"  /prompt      {percentiles(submits_c)}")
    print(f"event latency  {percentiles([x for r in results for x in r['latencies']])}")
    return 0 if ok == len(ids) else 1


if __name__ == "__main__":
    sys.exit(main())
