"""Ray workers: throughput with 1, 2 and 3 CPU workers, and what routing saves: ``python bench/ray_scaling.py``.

Each run starts a local Ray, a store and the server's scheduler (``engine/distributed/pool.py``) without
HTTP, queues the same jobs (the portrait workflow on tiny random checkpoints, 64 px) and times them to the
last one finished. The second part queues a mixed queue of two checkpoints, alternating, with routing by
loaded models on and off (least-loaded only), and counts the model loads the workers made. Needs Ray
(``pip install 'atelier[ray]'``). Scaling past the machine's cores is not expected: the figures say what this
machine gives.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from atelier.engine.distributed.pool import RaySettings, RayWorkers  # noqa: E402
from atelier.engine.models.tiny import write_tiny_checkpoint  # noqa: E402
from atelier.engine.runtime import EngineConfig, build_engine  # noqa: E402
from atelier.engine.server.jobs import Job  # noqa: E402
from atelier.engine.server.store import Store  # noqa: E402


def run(root: Path, workers: int, jobs: list[dict], affinity: bool = True) -> tuple[float, int]:
    import ray

    engine = build_engine(
        EngineConfig(
            device="cpu",
            models_dir=root / "models",
            output_dir=root / "output",
            input_dir=root / "input",
            temp_dir=root / "temp",
        )
    )
    store = Store(root / f"bench-{uuid.uuid4().hex[:6]}.db")
    pool = RayWorkers(
        store,
        engine,
        lambda ev: None,
        lambda: None,
        RaySettings(workers=workers, local_cpus=max(4, workers + 1), affinity=affinity, discover_seconds=60),
        previews=False,
    )
    pool.start()
    try:
        while len(pool.reports()) < workers:  # every worker built its engine
            time.sleep(0.2)
        for job in jobs:  # the server hashes each model file once to plan: not part of the figure
            pool.needs(
                Job(
                    id="warm",
                    number=0,
                    status="queued",
                    workflow=job["workflow"],
                    created=0.0,
                    overrides=job["overrides"],
                )
            )
        ids = []
        t0 = time.perf_counter()
        for job in jobs:
            job_id = uuid.uuid4().hex
            store.add_job(job_id, job["workflow"], job["overrides"])
            ids.append(job_id)
        pool.wakeup.set()
        while any(not store.get_job(j).is_finished for j in ids):
            time.sleep(0.05)
        seconds = time.perf_counter() - t0
        failed = [j for j in ids if store.get_job(j).status != "success"]
        assert not failed, store.get_job(failed[0]).error
        loads = sum(r["model_loads"] for r in pool.reports())
    finally:
        pool.stop()
        pool.join(10)
        ray.shutdown()
    return seconds, loads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=12)
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpts = root / "models" / "checkpoints"
        ckpts.mkdir(parents=True)
        write_tiny_checkpoint("sd15", ckpts / "a15.safetensors", seed=0)
        write_tiny_checkpoint("sd15", ckpts / "b15.safetensors", seed=1)
        workflow = json.loads((ROOT / "workflows" / "portrait.json").read_text(encoding="utf-8"))

        def job(seed: int, ckpt: str = "a15.safetensors") -> dict:
            values = {"checkpoint": ckpt, "steps": args.steps, "width": 64, "height": 64, "seed": seed}
            return {"workflow": workflow, "overrides": values}

        same = [job(s) for s in range(args.jobs)]
        print(
            f"{args.jobs} portrait jobs, tiny SD1.5, 64 px, {args.steps} steps, on {os.cpu_count()} CPU cores"
        )
        base = None
        for n in (1, 2, 3):
            seconds, _ = run(root, n, same)
            base = base or seconds
            print(
                f"  {n} worker(s): {seconds:6.1f} s  {args.jobs / seconds:5.2f} jobs/s  scaling {base / seconds:4.2f}x"
            )
        mixed = [job(s, "a15.safetensors" if s % 2 else "b15.safetensors") for s in range(args.jobs)]
        print("mixed queue of two checkpoints, alternating, 2 workers:")
        for affinity in (True, False):
            seconds, loads = run(root, 2, mixed, affinity=affinity)
            label = "routing by loaded models" if affinity else "least-loaded only      "
            print(f"  {label}: {seconds:6.1f} s, model loads {loads}")


if __name__ == "__main__":
    main()
