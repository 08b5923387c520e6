"""Plan, signatures, run, events, interrupt.

A job runs the nodes its requested outputs need, in topological order. Each node's signature is a hash
of its type, version, literal inputs, fingerprint (for nodes that read files) and the signatures of the
outputs it is linked to; never its id. Outputs are cached under that signature, so an identical sub-graph
anywhere hits the same entries, and after an edit only the edited node and what lies downstream of it run.
A node whose result is cached, or whose consumers are all cached, does not run (``node_cached``).

:meth:`Executor.run_many` runs several jobs together: a node that can batch (``Node.run_batch``) runs once for
all the jobs that reach it with the same batch key (``engine/batching.py``); everything else runs per job.
"""

from __future__ import annotations

import hashlib
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import networkx as nx

from . import events as E
from .batching import BatchReply, BatchRequest, JobSteps, batch_key, drive
from .cache import OutputCache
from .folders import Folders
from .limits import Limits
from .memory import DeviceBudget
from .model_loader import ModelLoader
from .node import CancelToken, Context, Interrupted, JobContext, NodeResult, Provenance
from .node_lists import ValueList, run_node
from .pipeline import Resolver, no_library
from .registry import Registry
from .validate import CheckResult, Graph, NodeError, check

Status = Literal["success", "failed", "interrupted", "invalid"]


@dataclass
class NodeFailure:
    node: str
    node_type: str
    message: str
    exception_type: str
    traceback: str


@dataclass
class JobResult:
    job: str
    status: Status
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    errors: list[NodeError] = field(default_factory=list)
    failure: NodeFailure | None = None
    elapsed_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "success"


@dataclass
class Plan:
    order: list[str]
    signatures: dict[str, str]
    to_run: list[str]
    cached: list[str]
    #: node id -> fingerprint, for nodes that have one (file identities of loaders, say)
    fingerprints: dict[str, Any] = field(default_factory=dict)
    #: nodes whose outputs are not cached: not cacheable themselves, or downstream of one that is not
    volatile: set[str] = field(default_factory=set)
    #: node to run -> an earlier node of this run with the same signature, whose outputs it takes (two
    #: instances of one pipeline, say); output nodes are never aliased, they each do their own thing
    aliases: dict[str, str] = field(default_factory=dict)


class NodeOutputError(RuntimeError):
    pass


def _signature(
    type_name: str, version: str, literals: dict[str, Any], upstream: list, fingerprint: Any
) -> str:
    material = repr((type_name, version, sorted(literals.items()), upstream, fingerprint))
    return hashlib.blake2b(material.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


@dataclass
class JobSpec:
    """One job of :meth:`Executor.run_many`: what :meth:`Executor.run` takes."""

    workflow: Any
    job_id: str | None = None
    overrides: dict[str, Any] | None = None
    outputs: list[str] | None = None
    on_event: E.EventSink | None = None
    source: str = ""
    client_id: str | None = None
    cancel: CancelToken | None = None
    previews: bool = True


#: ``observer(node_id, node_type, outputs)`` after a node ran (for probes in tests and debugging tools)
OutputObserver = Callable[[str, str, tuple[Any, ...]], None]


class Executor:
    """Runs jobs (one at a time, or several together with :meth:`run_many`) against a shared output cache.

    Built by the composition root (``engine/runtime.py``) with the engine's folders and model loader,
    which every node reaches through its :class:`Context`."""

    def __init__(
        self,
        registry: Registry,
        cache: OutputCache | None = None,
        *,
        device: str = "cpu",
        folders: Folders | None = None,
        models: ModelLoader | None = None,
        pipelines: Resolver = no_library,
        limits: Limits | None = None,
    ) -> None:
        self.registry = registry
        self.pipelines = pipelines
        self.limits = limits if limits is not None else Limits()
        self.cache = cache if cache is not None else OutputCache()
        self.device = device
        self.folders = folders if folders is not None else Folders()
        self.models = models if models is not None else ModelLoader(device)
        self.listeners: list[E.EventSink] = []
        self.observers: list[OutputObserver] = []
        self._lock = threading.Lock()
        #: the jobs running now (several while :meth:`run_many` runs a batch) and their cancel tokens
        self._running: dict[str, CancelToken] = {}
        #: the most jobs one batched node run takes (:meth:`run_many`)
        self.max_batch = 8

    # -- control -----------------------------------------------------------------------------------

    @property
    def current_job(self) -> str | None:
        return next(iter(dict(self._running)), None)

    def interrupt(self, job_id: str | None = None) -> bool:
        """Cancel the running jobs' tokens (or only ``job_id``'s). Returns whether one was running.
        Callers that own a job's token (the server's worker) cancel it directly instead."""
        running = dict(self._running)
        if job_id is not None:
            running = {job_id: running[job_id]} if job_id in running else {}
        for token in running.values():
            token.cancel()
        return bool(running)

    # -- planning ----------------------------------------------------------------------------------

    def plan(self, graph: Graph, ctx_for: Callable[[str], Context] | None = None, nonce: str = "") -> Plan:
        """The nodes the requested outputs need, their signatures, and which must run.

        ``nonce`` (the job id) goes into the signatures of nodes that are not cacheable, so that they and
        what depends on them run again in every job."""
        nodes = graph.nodes
        g = nx.DiGraph()
        stack = list(graph.outputs)
        seen: set[str] = set()
        while stack:
            nid = stack.pop()
            if nid in seen:
                continue
            seen.add(nid)
            g.add_node(nid)
            for src, _ in nodes[nid].links.values():
                g.add_edge(src, nid)
                stack.append(src)
        order = list(nx.lexicographical_topological_sort(g))

        signatures: dict[str, str] = {}
        fingerprints: dict[str, Any] = {}
        volatile: set[str] = set()
        for nid in order:
            node = nodes[nid]
            spec = node.type.spec
            upstream = sorted((name, signatures[src], idx) for name, (src, idx) in node.links.items())
            if not node.type.cacheable or any(src in volatile for src, _ in node.links.values()):
                volatile.add(nid)
            fp = None
            if node.type.has_fingerprint:
                ctx = ctx_for(nid) if ctx_for else self.make_context(JobContext("plan"), nid, spec.type)
                try:
                    fp = node.type.fingerprint(ctx, **node.literals)
                except Exception as exc:
                    exc._atelier_node = nid  # type: ignore[attr-defined]
                    raise
                if fp is not None:
                    fingerprints[nid] = fp
            if not node.type.cacheable:
                fp = (fp, "volatile", nonce)
            signatures[nid] = _signature(spec.type, spec.version, node.literals, upstream, fp)

        cache = self.cache
        outputs = set(graph.outputs)
        needed: set[str] = set()
        to_run: list[str] = []
        for nid in reversed(order):
            if nid in outputs or nid in needed:
                if signatures[nid] not in cache:
                    to_run.append(nid)
                    for src, _ in nodes[nid].links.values():
                        needed.add(src)
        to_run.reverse()
        run_set = set(to_run)
        first: dict[str, str] = {}
        aliases: dict[str, str] = {}
        for nid in to_run:
            if nid in volatile or nodes[nid].type.spec.output_node:
                continue
            aliases_of = first.setdefault(signatures[nid], nid)
            if aliases_of != nid:
                aliases[nid] = aliases_of
        cached = [n for n in order if n not in run_set]
        return Plan(order, signatures, to_run, cached, fingerprints, volatile, aliases)

    def check(
        self, workflow: Any, overrides: dict[str, Any] | None = None, outputs: list[str] | None = None
    ) -> CheckResult:
        """Validate a job against this executor's registry, model folders and pipeline library."""
        return check(
            workflow, self.registry, overrides, outputs, files=self.folders, pipelines=self.pipelines
        )

    def batch_signature(
        self, workflow: Any, overrides: dict[str, Any] | None = None, outputs: list[str] | None = None
    ) -> Any:
        """What two jobs must share for a server to offer them to one batch (:meth:`run_many`): the graph's
        structure and every literal of its batching nodes but the ``batch_free`` ones (seeds, cfg). None
        when the job has no node that can batch, or is not valid (it then runs, and fails, alone)."""
        try:
            checked = self.check(workflow, overrides, outputs)
        except Exception:
            return None
        graph = checked.graph
        if graph is None or not any(n.type.has_batch for n in graph.nodes.values()):
            return None
        parts = []
        for nid in sorted(graph.nodes):
            node = graph.nodes[nid]
            links = tuple(sorted((name, src, idx) for name, (src, idx) in node.links.items()))
            fixed = None
            if node.type.has_batch:
                free = node.type.batch_free
                fixed = repr(sorted((k, v) for k, v in node.literals.items() if k not in free))
            parts.append((nid, node.type.spec.type, links, fixed))
        return (tuple(parts), tuple(sorted(graph.outputs)))

    def make_context(
        self, job: JobContext, nid: str, node_type: str, cancel: CancelToken | None = None, emit: Any = None
    ) -> Context:
        return Context(
            job,
            nid,
            node_type,
            device=self.device,
            files=self.folders,
            models=self.models,
            cancel=cancel if cancel is not None else CancelToken(),
            emit=emit,
            limits=self.limits,
        )

    # -- running -----------------------------------------------------------------------------------

    def run(
        self,
        workflow: Any,
        *,
        job_id: str | None = None,
        overrides: dict[str, Any] | None = None,
        outputs: list[str] | None = None,
        on_event: E.EventSink | None = None,
        source: str = "",
        client_id: str | None = None,
        cancel: CancelToken | None = None,
        previews: bool = True,
    ) -> JobResult:
        """Check and run a workflow (any format, or a checked :class:`Graph`). Never raises for a bad
        workflow or a failing node: the result says what happened.

        ``cancel`` is the job's token: cancelling it stops the job at the next node or, inside a node, at
        its next ``ctx.progress``/``ctx.check_interrupt``. A token cancelled before the run starts stops
        the job before its first node. ``previews``: whether nodes publish previews of their work."""
        spec = JobSpec(workflow, job_id, overrides, outputs, on_event, source, client_id, cancel, previews)
        return self.run_many([spec])[0]

    def run_many(
        self, jobs: Sequence[JobSpec], on_result: Callable[[int, JobResult], None] | None = None
    ) -> list[JobResult]:
        """Run several jobs together: each as :meth:`run` would, with its own events, result and errors,
        but a node that can batch (``Node.run_batch``) runs once for all the jobs that reach it with the
        same batch key (``engine/batching.py``). Results come back in the order of ``jobs``; ``on_result(n,
        result)`` is told of job ``n``'s as soon as it is known (a job may end before its partners)."""
        results: list[JobResult | None] = [None] * len(jobs)
        steps: list[JobSteps] = []
        tokens: list[CancelToken] = []
        slots: list[int] = []
        with self._lock:
            try:
                for n, job in enumerate(jobs):
                    prepared = self._prepare(job)
                    if isinstance(prepared, JobResult):
                        results[n] = prepared
                        if on_result is not None:
                            on_result(n, prepared)
                        continue
                    gen, token = prepared
                    steps.append(gen)
                    tokens.append(token)
                    slots.append(n)
                done = drive(
                    steps,
                    tokens,
                    max_batch=self.max_batch,
                    on_result=None if on_result is None else lambda i, res: on_result(slots[i], res),
                )
            finally:
                for gen in steps:
                    gen.close()
                self._running.clear()
            for n, res in zip(slots, done, strict=True):
                results[n] = res
        return [r for r in results if r is not None]

    def _prepare(self, spec: JobSpec) -> JobResult | tuple[JobSteps, CancelToken]:
        """Check a job: its result when it is not valid, else the generator of its steps and its token."""
        job = spec.job_id or uuid.uuid4().hex
        sinks = [s for s in (*self.listeners, spec.on_event) if s is not None]

        def emit(event: E.Event) -> None:
            for sink in sinks:
                try:
                    sink(event)
                except Exception:  # a broken consumer must not break the job
                    pass

        workflow = spec.workflow
        if isinstance(workflow, Graph):
            graph = workflow
        else:
            checked = self.check(workflow, spec.overrides, spec.outputs)
            if checked.graph is None:
                errs = [e for e in checked.errors if e.severity == "error"]
                if sinks:
                    emit(
                        E.JobFailed(
                            job=job,
                            message=f"the workflow is not valid ({len(errs)} error{'s' if len(errs) != 1 else ''})",
                            errors=[e.model_dump() for e in checked.errors],
                        )
                    )
                return JobResult(job, "invalid", errors=checked.errors)
            graph = checked.graph
        token = spec.cancel if spec.cancel is not None else CancelToken()
        job_ctx = JobContext(
            job,
            source=spec.source,
            client_id=spec.client_id,
            workflow=graph.workflow,
            parameters=graph.parameters,
            previews=spec.previews,
        )
        self._running[job] = token
        return self._steps(graph, job_ctx, emit if sinks else None, token), token

    def _steps(
        self, graph: Graph, job_ctx: JobContext, emit: Callable[[E.Event], None] | None, token: CancelToken
    ) -> JobSteps:
        """Run a job's nodes; pauses with a :class:`BatchRequest` at a node that may run in a batch (the
        answer is its outputs, or None to run it here). Returns the job's result."""
        try:
            return (yield from self._run(graph, job_ctx, emit, token))
        finally:
            self._running.pop(job_ctx.id, None)

    def _run(
        self, graph: Graph, job_ctx: JobContext, emit: Callable[[E.Event], None] | None, token: CancelToken
    ) -> JobSteps:
        t0 = time.perf_counter()
        job = job_ctx.id
        nodes = graph.nodes

        def make_ctx(nid: str) -> Context:
            node_type = nodes[nid].type.spec.type
            emit_node = None
            if emit is not None:

                def emit_node(kind: str, data: dict[str, Any], _nid: str = nid) -> None:
                    if kind == "progress":
                        emit(E.Progress(job=job, node=_nid, **data))
                    elif kind == "preview":
                        emit(E.Preview(job=job, node=_nid, **data))
                    elif kind == "image_output":
                        emit(E.ImageOutput(job=job, node=_nid, **data))

            return self.make_context(job_ctx, nid, node_type, token, emit_node)

        result = JobResult(job, "success")
        for _attempt in range(3):
            try:
                plan = self.plan(graph, make_ctx, nonce=job)
            except Exception as exc:
                # a fingerprint failed (a file that cannot be read, say): fail on that node
                return self._fail(result, graph, getattr(exc, "_atelier_node", None), exc, emit, t0)
            fetched = self._fetch_cached(plan, graph)
            if fetched is not None:
                break
        else:  # the cache kept losing entries under us (cleared concurrently): run everything
            self.cache.clear()
            plan = self.plan(graph, make_ctx, nonce=job)
            fetched = ({}, {})
        values, ui_cached = fetched
        job_ctx._provenance = lambda: self._provenance(graph, plan, make_ctx)
        outputs_wanted = set(graph.outputs)
        consumers: dict[str, int] = {}
        for nid in plan.to_run:
            for src in self._reads(nid, nodes, plan):
                consumers[src] = consumers.get(src, 0) + 1
        result.cached = list(plan.cached) + list(plan.aliases)
        result.outputs.update(ui_cached)
        if emit is not None:
            name = graph.workflow.metadata.name
            emit(E.JobStarted(job=job, workflow=name, nodes=len(plan.order), to_run=len(plan.to_run)))
            for nid in (*plan.cached, *plan.aliases):  # an alias is served from this run's own result
                node_type = nodes[nid].type.spec.type
                emit(E.NodeCached(job=job, node=nid, node_type=node_type, ui=ui_cached.get(nid)))

        registry = self.registry
        observers = self.observers
        memory: DeviceBudget = getattr(self.models, "budget", None) or DeviceBudget()
        for nid in plan.to_run:
            node = nodes[nid]
            spec = node.type.spec
            if nid in plan.aliases:
                values[nid] = values[plan.aliases[nid]]
                self._release(nid, nodes, plan, consumers, values, outputs_wanted)
                continue
            try:
                token.check("before node " + nid)
                if emit is not None:
                    emit(E.NodeStarted(job=job, node=nid, node_type=spec.type, title=node.title))
                kwargs = dict(node.literals)
                for name, (src, idx) in node.links.items():
                    kwargs[name] = values[src][idx]
                ctx = make_ctx(nid)
                started = time.perf_counter()
                instance = registry.instance(spec.type)
                # the models the node is handed stay on the device while it runs (alone or in a batch:
                # the scope stays open while the batch runs, with every partner's scope)
                with memory.scope():
                    if memory.enabled:
                        memory.acquire(kwargs)
                    reply: BatchReply | None = None
                    key = _batch_key(node.type, instance, kwargs)
                    if key is not None:
                        reply = yield BatchRequest(spec.type, spec.version, key, instance, ctx, kwargs)
                    if reply is not None:  # ran in a batch with other jobs
                        outputs, ui = _normalise(reply.value, spec, nid)
                    else:
                        outputs, ui = run_node(
                            lambda **args: instance.run(ctx, **args),  # noqa: B023 - called before the loop moves on
                            kwargs,
                            spec.input_is_list,
                            lambda raw: _normalise(raw, spec, nid),  # noqa: B023
                            tuple(spec.lists(n) for n in range(len(spec.outputs))),
                        )
                elapsed = (time.perf_counter() - started) * 1000.0
                for observe in observers:
                    observe(nid, spec.type, outputs)
            except Interrupted:
                result.status = "interrupted"
                result.elapsed_ms = (time.perf_counter() - t0) * 1000.0
                if emit is not None:
                    emit(E.JobInterrupted(job=job, node=nid, node_type=spec.type))
                return result
            except Exception as exc:
                return self._fail(result, graph, nid, exc, emit, t0)
            if nid not in plan.volatile:
                self.cache.put(plan.signatures[nid], outputs, ui)
            values[nid] = outputs
            result.executed.append(nid)
            if ui is not None and nid in outputs_wanted:
                result.outputs[nid] = ui
            if emit is not None:
                emit(E.NodeFinished(job=job, node=nid, node_type=spec.type, elapsed_ms=elapsed, ui=ui))
            self._release(nid, nodes, plan, consumers, values, outputs_wanted)
        result.elapsed_ms = (time.perf_counter() - t0) * 1000.0
        if emit is not None:
            emit(
                E.JobFinished(
                    job=job,
                    elapsed_ms=result.elapsed_ms,
                    executed=len(result.executed),
                    cached=len(result.cached),
                    outputs=result.outputs,
                )
            )
        return result

    @staticmethod
    def _reads(nid: str, nodes: dict[str, Any], plan: Plan) -> list[str]:
        """The nodes whose outputs ``nid`` reads when its turn comes (its aliased twin, for an alias)."""
        reads = [src for src, _ in nodes[nid].links.values()]
        if nid in plan.aliases:
            reads.append(plan.aliases[nid])
        return reads

    def _release(
        self,
        nid: str,
        nodes: dict[str, Any],
        plan: Plan,
        consumers: dict[str, int],
        values: dict[str, tuple[Any, ...]],
        outputs_wanted: set[str],
    ) -> None:
        """Drop the outputs that no later node of this job needs, once ``nid`` has read them."""
        for src in self._reads(nid, nodes, plan):
            left = consumers[src] - 1
            consumers[src] = left
            if left == 0 and src not in outputs_wanted:
                values.pop(src, None)
        if nid not in consumers and nid not in outputs_wanted:
            values.pop(nid, None)

    def _fetch_cached(
        self, plan: Plan, graph: Graph
    ) -> tuple[dict[str, tuple[Any, ...]], dict[str, dict[str, Any]]] | None:
        """Take the cached outputs this job reads (held for the job: eviction cannot lose them)."""
        wanted: set[str] = set(graph.outputs)
        for nid in plan.to_run:
            for src, _ in graph.nodes[nid].links.values():
                wanted.add(src)
        values: dict[str, tuple[Any, ...]] = {}
        ui: dict[str, dict[str, Any]] = {}
        outputs = set(graph.outputs)
        for nid in plan.cached:
            if nid not in wanted:
                continue
            entry = self.cache.get(plan.signatures[nid])
            if entry is None:
                return None  # cleared under us: plan again
            values[nid] = entry.outputs
            if nid in outputs and entry.ui:
                ui[nid] = dict(entry.ui)
        return values, ui

    def _provenance(self, graph: Graph, plan: Plan, make_ctx: Callable[[str], Context]) -> Provenance:
        """What this job's results are made from (asked for by nodes that save results)."""
        nodes = graph.nodes
        files: dict[str, dict[str, Any]] = {}
        for nid, fp in plan.fingerprints.items():
            node = nodes[nid]
            entry: dict[str, Any] = {"type": node.type.spec.type, "inputs": node.literals, "fingerprint": fp}
            if node.type.has_provenance:
                entry.update(node.type.provenance(make_ctx(nid), **node.literals) or {})
            files[nid] = entry
        return Provenance(
            workflow=graph.workflow.to_dict(),
            parameters=dict(graph.parameters),
            node_versions={nodes[n].type.spec.type: nodes[n].type.spec.version for n in plan.order},
            files=files,
        )

    def _fail(
        self,
        result: JobResult,
        graph: Graph,
        nid: str | None,
        exc: BaseException,
        emit: Callable[[E.Event], None] | None,
        t0: float,
    ) -> JobResult:
        node_type = graph.nodes[nid].type.spec.type if nid in graph.nodes else ""
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        message = str(exc) or type(exc).__name__
        result.status = "failed"
        result.failure = NodeFailure(nid or "", node_type, message, type(exc).__name__, tb)
        result.elapsed_ms = (time.perf_counter() - t0) * 1000.0
        if emit is not None:
            if nid is not None:
                emit(
                    E.NodeFailed(
                        job=result.job,
                        node=nid,
                        node_type=node_type,
                        message=message,
                        exception_type=type(exc).__name__,
                        traceback=tb,
                    )
                )
            emit(
                E.JobFailed(
                    job=result.job,
                    node=nid,
                    node_type=node_type or None,
                    message=f"{node_type} node {nid} failed: {message}" if nid else message,
                    exception_type=type(exc).__name__,
                    traceback=tb,
                )
            )
        return result


def _batch_key(node_type: Any, instance: Any, kwargs: dict[str, Any]) -> Any:
    """The batch key of a node about to run, or None: not a batching node, or list inputs or outputs
    (those run element by element, see node_lists.py)."""
    if not node_type.has_batch:
        return None
    spec = node_type.spec
    if (
        spec.input_is_list
        or any(spec.output_is_list)
        or any(isinstance(v, ValueList) for v in kwargs.values())
    ):
        return None
    return batch_key(instance, kwargs)


def _normalise(raw: Any, spec: Any, nid: str) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
    """A node's return value as a tuple of outputs (checked against the declared carriers) and UI data."""
    ui = None
    n_outputs = len(spec.outputs)
    if isinstance(raw, NodeResult):
        ui = dict(raw.ui) if raw.ui is not None else None
        raw = raw.outputs
    if n_outputs == 0:
        return (), ui
    if n_outputs == 1 and not isinstance(raw, tuple):
        raw = (raw,)
    if not isinstance(raw, tuple) or len(raw) != n_outputs:
        got = f"a tuple of {len(raw)}" if isinstance(raw, tuple) else type(raw).__name__
        raise NodeOutputError(f"{spec.type} returned {got}, but declares {n_outputs} outputs")
    for n, (out, value) in enumerate(zip(spec.outputs, raw, strict=True)):
        if spec.lists(n) and not isinstance(value, (list, tuple)):
            raise NodeOutputError(
                f"{spec.type} node {nid} returned {type(value).__name__} for its list output {out.name!r}"
            )
        socket = out.socket
        for item in value if spec.lists(n) else (value,):
            if socket is not None and socket.carrier is not None and not isinstance(item, socket.carrier):
                raise NodeOutputError(
                    f"{spec.type} node {nid} returned {type(item).__name__} for its output {out.name!r}, "
                    f"but {out.type} carries {_carrier_name(socket.carrier)}"
                )
    return raw, ui


def _carrier_name(carrier: type | tuple[type, ...]) -> str:
    if isinstance(carrier, tuple):
        return " or ".join(c.__name__ for c in carrier)
    return carrier.__name__
