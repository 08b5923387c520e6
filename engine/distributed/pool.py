"""The server's side of a Ray cluster: worker actors fed from the SQLite queue.

:class:`RayWorkers` stands where the single-process server has its one worker thread (``server/worker.py``)
and answers the same calls (``start``, ``stop``, ``join``, ``interrupt``, ``live``, ``wakeup``,
``current``). It starts ``workers`` actors of its own (one per GPU, or CPU workers) and adopts those that
``atelier worker`` started on other machines (detached actors named ``atelier-worker-*`` in the
``atelier`` namespace), looked for every few seconds, so workers join and leave while jobs run.

A scheduler thread takes the next queued job from the store, with the queued jobs that can run with it as
one batch (``server/partners.py``, as the single-process worker does), and routes them (``routing.py``) by
what each worker last reported: model files loaded, cache signatures, jobs on it. A worker runs a batch with
``Executor.run_many``: its samplers sample once for all the jobs, and each job keeps its own events and
result. Each worker has a runner thread
that streams its job's events to the hub (websocket clients see the same messages as with one process)
and writes the result to the store once the worker is done (outputs are written by the worker into the
output folder the server serves: on one machine the same folder, across machines a shared one).

A worker that dies under a job (killed, out of memory) loses no job: the job goes back to its place in the
queue and runs elsewhere; a job under which two workers died is failed with the reason. The jobs waiting on
that worker go back too, without counting. A worker the server started is replaced.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from atelier.engine import events as E
from atelier.engine.runtime import Engine
from atelier.engine.server.jobs import Job
from atelier.engine.server.partners import BatchPartners
from atelier.engine.server.store import Store
from atelier.engine.server.worker import TERMINAL_EVENTS, LiveState, outcome

from .actor import worker_actor_class
from .routing import JobNeeds, WorkerView, route

log = logging.getLogger(__name__)

NAMESPACE = "atelier"
ACTOR_PREFIX = "atelier-worker-"
#: a job that this many workers died under is failed
MAX_ATTEMPTS = 2


class RaySettings(BaseModel):
    """``atelier serve --ray [ADDRESS]``: where the cluster is and what workers the server starts."""

    #: a running cluster ("ray://host:10001", "auto"); None starts a local Ray
    address: str | None = None
    #: workers the server starts (None: one per GPU the cluster has, else 2 on CPU)
    workers: int | None = None
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    #: jobs a worker holds at once (one running, the others waiting there)
    max_load: int = 2
    #: how often the server looks for workers started elsewhere (``atelier worker``)
    discover_seconds: float = 2.0
    #: route by loaded models and cached results (off: the least loaded worker, for comparison)
    affinity: bool = True
    #: local Ray only: resources to declare (tests declare fake GPUs)
    local_cpus: int | None = None
    local_gpus: int | None = None


@dataclass
class Slot:
    """One worker actor as the server sees it."""

    name: str
    actor: Any
    owned: bool
    #: what was routed here and waits: one job, or a batch of jobs to run together
    jobs: queue.Queue[list[Job]] = field(default_factory=queue.Queue)
    load: int = 0
    #: the jobs running there now (several when batched)
    running: list[str] = field(default_factory=list)
    models: frozenset[str] = frozenset()
    signatures: frozenset[str] = frozenset()
    alive: bool = True
    thread: threading.Thread | None = None


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RuntimeError("Ray is not installed: pip install 'atelier[ray]'") from None
    return ray


def actor_died_errors(ray: Any) -> tuple[type[BaseException], ...]:
    names = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError")
    return tuple(getattr(ray.exceptions, n) for n in names if hasattr(ray.exceptions, n))


def connect(settings: RaySettings) -> Any:
    """Ray, initialised for ``settings`` (once per process)."""
    ray = _ray()
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {
            "namespace": NAMESPACE,
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": False,
        }
        if settings.address:
            kwargs["address"] = settings.address
        else:
            if settings.local_cpus is not None:
                kwargs["num_cpus"] = settings.local_cpus
            if settings.local_gpus is not None:
                kwargs["num_gpus"] = settings.local_gpus
        ray.init(**kwargs)
    return ray


def start_worker_actor(
    ray: Any, name: str, config: dict[str, Any], settings: RaySettings, *, detached: bool
) -> Any:
    """A new worker actor ``name`` building its engine from ``config`` (an ``EngineConfig`` as JSON)."""
    options: dict[str, Any] = {
        "name": name,
        "namespace": NAMESPACE,
        "max_concurrency": 4,
        "num_cpus": settings.cpus_per_worker,
        "num_gpus": settings.gpus_per_worker,
        "max_restarts": 0,
    }
    if detached:
        options["lifetime"] = "detached"
    return worker_actor_class().options(**options).remote(name, config, _threads(settings))


def _threads(settings: RaySettings) -> int:
    return max(1, int(settings.cpus_per_worker))


class RayWorkers:
    """Worker actors on Ray behind the server's queue (see the module's description)."""

    def __init__(
        self,
        store: Store,
        engine: Engine,
        publish: Callable[[E.Event], None],
        on_queue_change: Callable[[], None],
        settings: RaySettings,
        previews: bool = True,
        *,
        max_batch: int = 8,
        batch_window_s: float = 0.005,
    ) -> None:
        self.store = store
        self.engine = engine
        self.publish = publish
        self.on_queue_change = on_queue_change
        self.settings = settings
        self.previews = previews
        self.live = LiveState()
        self.wakeup = threading.Event()
        self.stopping = threading.Event()
        self.slots: dict[str, Slot] = {}
        self._lock = threading.RLock()
        self._scheduler: threading.Thread | None = None
        self._ray: Any = None
        self._config = engine.config.model_dump(mode="json")
        #: what happened, for tests and the log: ("routed", job, worker), ("died", job, worker), ...
        self.history: list[tuple[str, str, str]] = []
        #: every worker name seen (ours from before they exist, adopted ones once found)
        self._names: set[str] = set()
        #: jobs interrupted while waiting on a worker: they end there without running
        self._cancelled: set[str] = set()
        #: a job that can batch goes to its worker with the queued jobs of its batch signature
        self.partners = BatchPartners(
            store, engine.executor, max_batch, batch_window_s, self.wakeup, self.stopping
        )

    # -- the Worker interface ------------------------------------------------------------------------

    @property
    def current(self) -> str | None:
        with self._lock:
            return next((s.running[0] for s in self.slots.values() if s.running), None)

    def start(self) -> None:
        self._ray = connect(self.settings)
        count = self.settings.workers
        if count is None:
            gpus = int(self._ray.cluster_resources().get("GPU", 0))
            count = gpus if gpus and self.settings.gpus_per_worker else 2
        for _ in range(count):
            self._spawn()
        self._discover()
        self._scheduler = threading.Thread(target=self._schedule, name="atelier-ray-scheduler", daemon=True)
        self._scheduler.start()

    def stop(self) -> None:
        self.stopping.set()
        self.wakeup.set()
        self.interrupt()

    def join(self, timeout: float | None = None) -> None:
        threads = [self._scheduler] + [s.thread for s in self.slots.values()]
        for t in threads:
            if t is not None:
                t.join(timeout)
        with self._lock:
            owned = [s for s in self.slots.values() if s.owned]
        for slot in owned:
            with contextlib.suppress(Exception):
                self._ray.kill(slot.actor)

    def interrupt(self, job_id: str | None = None) -> str | None:
        """Interrupt ``job_id`` (or every running job); a job waiting on a worker is cancelled there."""
        hit = None
        with self._lock:
            slots = list(self.slots.values())
        for slot in slots:
            for running in list(slot.running):
                if job_id in (None, running):
                    hit = hit or running
                    with contextlib.suppress(Exception):
                        slot.actor.interrupt.remote(running)
        if hit is None and job_id is not None:
            job = self.store.get_job(job_id)
            if job is not None and job.status == "running":  # taken, waiting on a worker
                self._cancelled.add(job_id)
                return job_id
        return hit

    # -- workers ---------------------------------------------------------------------------------------

    def _spawn(self) -> Slot:
        name = f"{ACTOR_PREFIX}{uuid.uuid4().hex[:8]}"
        with self._lock:
            self._names.add(name)  # before it exists: discovery must not adopt it as somebody else's
        actor = start_worker_actor(self._ray, name, self._config, self.settings, detached=False)
        return self._add(Slot(name=name, actor=actor, owned=True))

    def _add(self, slot: Slot) -> Slot:
        with self._lock:
            self.slots[slot.name] = slot
        slot.thread = threading.Thread(target=self._serve, args=(slot,), name=slot.name, daemon=True)
        slot.thread.start()
        return slot

    def _check_idle(self) -> None:
        """Forget idle workers that died (a machine that left the cluster, an actor killed between jobs)."""
        with self._lock:
            idle = [s for s in self.slots.values() if s.alive and s.load == 0]
        for slot in idle:
            try:
                self._ray.get(slot.actor.ping.remote(), timeout=10)
            except actor_died_errors(self._ray):
                log.warning("Ray worker %s is gone", slot.name)
                self._remove(slot)
            except Exception:  # slow to answer (busy machine): keep it
                continue

    def _discover(self) -> None:
        """Adopt workers started elsewhere (``atelier worker``) that are not known yet."""
        try:
            named = self._ray.util.list_named_actors(all_namespaces=True)
        except Exception:  # an old Ray, a cluster going away: try again later
            return
        for entry in named:
            name = entry["name"] if isinstance(entry, dict) else entry
            namespace = entry.get("namespace") if isinstance(entry, dict) else NAMESPACE
            with self._lock:
                if namespace != NAMESPACE or not name.startswith(ACTOR_PREFIX) or name in self._names:
                    continue
                self._names.add(name)
            try:
                actor = self._ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:
                continue
            log.warning("adopted Ray worker %s", name)
            self._add(Slot(name=name, actor=actor, owned=False))

    def reports(self) -> list[dict[str, Any]]:
        """What each live worker reports now (models loaded, loads so far, jobs run)."""
        with self._lock:
            slots = [s for s in self.slots.values() if s.alive]
        out = []
        for slot in slots:
            with contextlib.suppress(Exception):
                out.append(self._ray.get(slot.actor.report.remote(), timeout=30))
        return out

    def _refresh(self, slot: Slot) -> None:
        try:
            report = self._ray.get(slot.actor.report.remote(), timeout=30)
        except Exception:
            return
        slot.models = frozenset(report["models"])
        slot.signatures = frozenset(report["signatures"])

    # -- scheduling ------------------------------------------------------------------------------------

    def needs(self, job: Job) -> JobNeeds:
        """The model files (by file name) and node signatures of ``job``'s plan, its overrides applied
        (empty when it does not plan here: the worker will say why)."""
        models: set[str] = set()
        signatures: frozenset[str] = frozenset()
        with contextlib.suppress(Exception):
            checked = self.engine.check(job.workflow, job.overrides or {}, job.outputs_requested)
            if checked.graph is not None:
                for node in checked.graph.nodes.values():
                    for ispec in node.type.spec.inputs:
                        name = node.literals.get(ispec.name)
                        if ispec.model_kind is not None and isinstance(name, str):
                            models.add(name.replace("\\", "/").rsplit("/", 1)[-1])
                plan = self.engine.executor.plan(checked.graph, nonce=job.id)
                signatures = frozenset(plan.signatures.values())
        return JobNeeds(frozenset(models), signatures)

    def _views(self) -> list[WorkerView]:
        with self._lock:
            return [
                WorkerView(s.name, s.models, s.signatures, s.load) for s in self.slots.values() if s.alive
            ]

    def _schedule(self) -> None:
        last_discovery = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            if now - last_discovery >= self.settings.discover_seconds:
                self._check_idle()
                self._discover()
                last_discovery = now
            views = self._views()
            if not any(v.load < self.settings.max_load for v in views):
                self.wakeup.wait(0.2)
                self.wakeup.clear()
                continue
            job = self.store.next_queued()
            if job is None:
                self.wakeup.wait(0.5)
                self.wakeup.clear()
                continue
            # a batch per idle worker: eight queued jobs on two idle workers go four and four
            idle = sum(1 for v in views if v.load == 0)
            batch = [job, *self.partners.take(job, self.partners.max_batch // max(1, idle))]
            needs = self.needs(job) if self.settings.affinity else JobNeeds()
            target = route(needs, self._views(), self.settings.max_load)
            with self._lock:
                slot = self.slots.get(target) if target is not None else None
                if slot is None or not slot.alive:
                    for taken in batch:
                        self.store.requeue(taken.id, died=False)
                    continue
                slot.load += 1
                # what it will hold once the job ran there: the next job is routed on that, not on a report
                # that comes only when this one is done
                slot.models |= needs.models
                slot.signatures |= needs.signatures
            self.history.extend(("routed", taken.id, slot.name) for taken in batch)
            if len(batch) > 1:
                self.history.append(("batched", ",".join(taken.id for taken in batch), slot.name))
            slot.jobs.put(batch)
            self.on_queue_change()

    def _serve(self, slot: Slot) -> None:
        self._refresh(slot)
        while not self.stopping.is_set() and slot.alive:
            try:
                jobs = slot.jobs.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self._run(slot, jobs)
            finally:
                with self._lock:
                    slot.load -= 1
                    slot.running = []
                self.wakeup.set()

    def _run(self, slot: Slot, jobs: list[Job]) -> None:
        """Run ``jobs`` (one, or a batch) on ``slot``'s worker: stream their events to the hub and write
        each job's result to the store as soon as the worker has it (a job may end before its partners)."""
        ray = self._ray
        cancelled = {j.id for j in jobs if j.id in self._cancelled}
        for job_id in cancelled:  # interrupted while waiting here: it ends without running
            self._cancelled.discard(job_id)
            self.store.finish_job(job_id, "interrupted", error={"message": "interrupted"})
            self.publish(E.JobInterrupted(job=job_id))
        jobs = [j for j in jobs if j.id not in cancelled]
        if not jobs:
            self.on_queue_change()
            return
        with self._lock:
            slot.running = [job.id for job in jobs]
        payloads = [
            {
                "id": job.id,
                "workflow": job.workflow,
                "overrides": job.overrides or {},
                "outputs_requested": job.outputs_requested,
                "client_id": job.client_id,
                "previews": self.previews,
            }
            for job in jobs
        ]
        terminals: dict[str, list[E.Event]] = {job.id: [] for job in jobs}
        started: set[str] = set()
        finished: set[str] = set()

        def close(job_id: str) -> None:
            """The job's state is in the store: publish its terminal event."""
            finished.add(job_id)
            for ev in terminals[job_id]:
                self.live.update(ev)
                self.publish(ev)

        def fail(job_id: str, message: str, exception_type: str) -> None:
            self.store.finish_job(job_id, "failed", error={"message": message})
            terminals[job_id] = [E.JobFailed(job=job_id, message=message, exception_type=exception_type)]
            close(job_id)

        try:
            for ref in slot.actor.run_jobs.remote(payloads):
                kind, value = ray.get(ref)
                if kind == "result":
                    n, result = value
                    job = jobs[n]
                    started.add(job.id)
                    status, error = outcome(result, terminals[job.id])
                    self.store.finish_job(
                        job.id,
                        status,
                        outputs=result.outputs,
                        error=error,
                        executed=result.executed,
                        cached=result.cached,
                    )
                    self.history.append(("finished", job.id, slot.name))
                    close(job.id)
                    continue
                started.add(value.job)
                if isinstance(value, TERMINAL_EVENTS):
                    terminals[value.job].append(value)
                else:
                    self.live.update(value)
                    self.publish(value)
            self._refresh(slot)
        except actor_died_errors(ray) as exc:
            for job in jobs:
                if job.id not in finished:
                    terminals[job.id] = self._worker_died(slot, job, exc, job.id in started)
                    close(job.id)
        except Exception as exc:  # the job's own failure reaches us as a task error: fail it alone
            log.exception("jobs %s failed on worker %s", ", ".join(terminals), slot.name)
            message = f"{type(exc).__name__}: {exc}"
            for job in jobs:
                if job.id not in finished:
                    fail(job.id, message, type(exc).__name__)
        finally:
            for job in jobs:  # a job the worker never answered for (it cannot happen; be safe)
                if job.id not in finished:
                    fail(job.id, "the worker ended without this job's result", "WorkerError")
            self.on_queue_change()

    def _remove(self, slot: Slot) -> None:
        """Forget a dead worker: what waited on it goes back to the queue; the server replaces its own."""
        with self._lock:
            if not slot.alive:
                return
            slot.alive = False
            self.slots.pop(slot.name, None)
        waiting = []
        while True:
            try:
                waiting.append(slot.jobs.get_nowait())
            except queue.Empty:
                break
        for other in waiting:
            self.store.requeue(other.id, died=False)
        self.history.append(("left", "", slot.name))
        if slot.owned and not self.stopping.is_set():
            with contextlib.suppress(Exception):
                self._spawn()
        self.wakeup.set()

    def _worker_died(self, slot: Slot, job: Job, exc: BaseException, started: bool) -> list[E.Event]:
        """The worker under ``job`` is gone: re-queue the job (or fail it, the second time; a job the
        worker had not started does not count), re-queue what waited there, replace the worker if the
        server started it."""
        self.history.append(("died", job.id, slot.name))
        log.warning("Ray worker %s died running job %s: %s", slot.name, job.id, exc)
        self._remove(slot)
        if not started:
            self.store.requeue(job.id, died=False)
            return []
        attempts = job.attempts + 1
        if attempts < MAX_ATTEMPTS:
            self.store.requeue(job.id)
            self.wakeup.set()
            return []
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        message = f"{attempts} workers died running this job (the last: {slot.name}: {reason})"
        self.store.finish_job(job.id, "failed", error={"message": message, "worker": slot.name})
        return [E.JobFailed(job=job.id, message=message, exception_type="WorkerDied")]


def serve_workers(config: dict[str, Any], settings: RaySettings, count: int) -> int:
    """``atelier worker``: ``count`` detached worker actors on the cluster, pinned to this machine's node,
    which the server adopts; they are removed on Ctrl+C."""
    ray = connect(settings)
    node = ray.get_runtime_context().get_node_id()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    actors = []
    for _ in range(count):
        name = f"{ACTOR_PREFIX}{uuid.uuid4().hex[:8]}"
        options = {
            "name": name,
            "namespace": NAMESPACE,
            "lifetime": "detached",
            "max_concurrency": 4,
            "num_cpus": settings.cpus_per_worker,
            "num_gpus": settings.gpus_per_worker,
            "scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False),
        }
        actors.append(worker_actor_class().options(**options).remote(name, config, _threads(settings)))
    names = ray.get([a.ping.remote() for a in actors])
    print(f"Atelier workers ready: {', '.join(names)} (Ctrl+C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)
    return 0
