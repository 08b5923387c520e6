"""The server on a local Ray with fake GPUs and two worker actors running the tiny checkpoint.

Skipped (with the reason) where Ray is not installed; ``./dev setup`` and CI install it (``atelier[ray]``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'atelier[ray]'")

from atelier.engine.distributed.pool import RaySettings, RayWorkers, connect  # noqa: E402
from atelier.engine.models.tiny import write_tiny_checkpoint  # noqa: E402
from atelier.engine.server.app import Settings, create_app  # noqa: E402
from tests.server.harness import engine_in, free_port, portrait, served_in_thread, wait_job, write_models  # noqa: E402


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, RayWorkers, Path]]:
    root = tmp_path_factory.mktemp("ray")
    models = write_models(root / "models")
    write_tiny_checkpoint("sd15", models / "checkpoints" / "other15.safetensors", seed=1)
    engine = engine_in(root, models)
    ray_settings = RaySettings(
        workers=2, gpus_per_worker=1, cpus_per_worker=1, local_cpus=4, local_gpus=3, discover_seconds=0.5
    )
    connect(ray_settings)  # before a port is picked: Ray's processes take ports of their own
    settings = Settings(database=root / "atelier.db", ray=ray_settings)
    app = create_app(engine, settings)
    port = free_port()
    try:
        with served_in_thread(app, port, "ray-server"):
            pool = app.state.services.jobs.worker
            assert isinstance(pool, RayWorkers)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                yield client, pool, root / "output"
    finally:
        ray.shutdown()


def submit(client: httpx.Client, **overrides: Any) -> str:
    r = client.post("/atelier/v1/jobs", json=portrait(**overrides))
    assert r.status_code in (200, 201, 202), r.text
    return r.json()["id"]


def worker_of(pool: RayWorkers, job: str, what: str = "finished") -> str:
    return next(w for kind, j, w in pool.history if kind == what and j == job)


def test_jobs_run_on_workers_and_a_warm_worker_reuses_its_model_and_cache(cluster) -> None:
    client, pool, output = cluster
    first = submit(client, seed=1)
    view = wait_job(client, first, timeout=240)
    assert view["status"] == "success", view
    where = worker_of(pool, first)
    assert where in pool.slots and len(pool.slots) == 2
    second = submit(client, seed=2)
    view2 = wait_job(client, second, timeout=120)
    assert view2["status"] == "success", view2
    # routed to the worker holding the checkpoint: its loader and prompts come from that worker's cache
    assert worker_of(pool, second) == where
    loaders = [n for n in view2["cached"] if "load" in n or "ckpt" in n or "checkpoint" in n]
    assert loaders, view2["cached"]
    image = view2["outputs"]
    files = [i["filename"] for out in image.values() for i in out.get("images", [])]
    assert files and all((output / f).is_file() for f in files)


def test_queued_jobs_of_one_workflow_run_as_one_batch_on_a_worker(cluster) -> None:
    client, pool, output = cluster
    pool.partners.window_s = 2.0  # the next submission comes within it: it runs with the first job
    try:
        jobs = [submit(client, seed=500 + n) for n in range(3)]
        views = [wait_job(client, j, timeout=240) for j in jobs]
    finally:
        pool.partners.window_s = 0.005
    assert all(v["status"] == "success" for v in views), views
    batches = [(ids.split(","), w) for kind, ids, w in pool.history if kind == "batched"]
    (together, where) = next((b, w) for b, w in batches if jobs[0] in b)
    assert jobs[1] in together
    assert {worker_of(pool, j) for j in together} == {where}
    pictures = set()
    for view in views:
        (name,) = [i["filename"] for out in view["outputs"].values() for i in out.get("images", [])]
        pictures.add((output / name).read_bytes())
    assert len(pictures) == 3  # each job its own seed, its own picture


def test_a_killed_worker_loses_no_job(cluster) -> None:
    client, pool, _ = cluster
    job = submit(client, seed=11, steps=60)
    deadline = time.monotonic() + 120
    victim = None
    while time.monotonic() < deadline and victim is None:
        victim = next((s for s in list(pool.slots.values()) if job in s.running), None)
        time.sleep(0.05)
    assert victim is not None, "the job never started"
    time.sleep(0.5)
    ray.kill(victim.actor)
    view = wait_job(client, job, timeout=240)
    assert view["status"] == "success", view
    assert ("died", job, victim.name) in pool.history
    finished = [w for kind, j, w in pool.history if kind == "finished" and j == job]
    assert len(finished) == 1 and finished[0] != victim.name
    assert len(pool.slots) == 2  # the server replaced the worker it had started


def test_a_job_under_which_two_workers_die_fails_with_the_reason(cluster) -> None:
    client, pool, _ = cluster
    job = submit(client, seed=12, steps=60)
    killed = []
    deadline = time.monotonic() + 240
    while len(killed) < 2 and time.monotonic() < deadline:
        slot = next((s for s in list(pool.slots.values()) if job in s.running and s.name not in killed), None)
        if slot is not None:
            time.sleep(0.3)
            ray.kill(slot.actor)
            killed.append(slot.name)
        time.sleep(0.05)
    assert len(killed) == 2
    view = wait_job(client, job, timeout=120)
    assert view["status"] == "failed"
    assert (
        "2 workers died running this job" in view["error"]["message"]
        and killed[1] in view["error"]["message"]
    )


def test_a_hundred_jobs_from_ten_clients_complete_exactly_once(cluster) -> None:
    client, pool, _ = cluster
    ids: list[str] = []
    lock = threading.Lock()

    def one_client(k: int) -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=60) as own:
            for n in range(10):
                # small jobs, each its own picture: the queue, the routing and the bookkeeping are tested
                workflow = {
                    "format": "atelier/workflow",
                    "nodes": {
                        "blank": {
                            "type": "EmptyImage",
                            "inputs": {"width": 8, "height": 8, "color": 10 * k + n},
                        },
                        "save": {
                            "type": "SaveImage",
                            "inputs": {"images": {"node": "blank", "output": 0}, "filename_prefix": f"c{k}"},
                        },
                    },
                }
                r = own.post("/atelier/v1/jobs", json={"workflow": workflow})
                assert r.status_code in (200, 201, 202), r.text
                with lock:
                    ids.append(r.json()["id"])

    threads = [threading.Thread(target=one_client, args=(k,)) for k in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 100
    files = []
    for job in ids:
        view = wait_job(client, job, timeout=600)
        assert view["status"] == "success", view
        files += [i["filename"] for out in view["outputs"].values() for i in out.get("images", [])]
    assert len(files) == len(set(files)) == 100  # one picture per job, none twice
    finished = [j for kind, j, _ in pool.history if kind == "finished" and j in set(ids)]
    assert sorted(finished) == sorted(ids)  # each exactly once
    used = {w for kind, j, w in pool.history if kind == "finished" and j in set(ids)}
    assert len(used) == 2  # both workers took jobs


def test_workers_started_elsewhere_join_and_leave_while_jobs_run(cluster) -> None:
    from atelier.engine.distributed.pool import start_worker_actor

    client, pool, _ = cluster
    config = pool.engine.config.model_dump(mode="json")
    joined = start_worker_actor(ray, "atelier-worker-visitor", config, pool.settings, detached=True)
    deadline = time.monotonic() + 120
    while "atelier-worker-visitor" not in pool.slots and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pool.slots["atelier-worker-visitor"].owned
    jobs = [submit(client, seed=300 + n) for n in range(3)]
    assert all(wait_job(client, j, timeout=240)["status"] == "success" for j in jobs)
    ray.kill(joined)
    deadline = time.monotonic() + 60
    while "atelier-worker-visitor" in pool.slots and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "atelier-worker-visitor" not in pool.slots and len(pool.slots) == 2  # not replaced: not ours
    job = submit(client, seed=400)
    assert wait_job(client, job, timeout=240)["status"] == "success"
