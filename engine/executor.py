"""Plan, signatures, run, events, interrupt.

A job runs the nodes its requested outputs need, in topological order. Each node's signature is a hash
of its type, version, literal inputs, fingerprint (for nodes that read files) and the signatures of the
outputs it is linked to; never its id. Outputs are cached under that signature, so an identical sub-graph
anywhere hits the same entries, and after an edit only the edited node and what lies downstream of it run.
A node whose result is cached, or whose consumers are all cached, does not run (``node_cached``).
"""

from __future__ import annotations

import hashlib
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import networkx as nx

from . import events as E
from .cache import OutputCache
from .node import Context, Interrupted, NodeResult, Paths
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
    #: node id -> fingerprint, for nodes that have one (file hashes of loaders, say)
    fingerprints: dict[str, Any] = field(default_factory=dict)


class NodeOutputError(RuntimeError):
    pass


def _signature(
    type_name: str, version: str, literals: dict[str, Any], upstream: list, fingerprint: Any
) -> str:
    material = repr((type_name, version, sorted(literals.items()), upstream, fingerprint))
    return hashlib.blake2b(material.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


class Executor:
    """Runs jobs one at a time against a shared output cache."""

    def __init__(
        self,
        registry: Registry,
        cache: OutputCache | None = None,
        *,
        device: str = "cpu",
        paths: Paths | None = None,
        services: Mapping[str, Any] | None = None,
    ) -> None:
        self.registry = registry
        self.cache = cache if cache is not None else OutputCache()
        self.device = device
        self.paths = paths or Paths()
        self.services: dict[str, Any] = dict(services or {})
        self.listeners: list[E.EventSink] = []
        self._lock = threading.Lock()
        self._interrupt = threading.Event()
        self._current: str | None = None

    # -- control -----------------------------------------------------------------------------------

    @property
    def current_job(self) -> str | None:
        return self._current

    def interrupt(self, job_id: str | None = None) -> bool:
        """Interrupt the running job (or only if it is ``job_id``). Returns whether one was running."""
        current = self._current
        if current is None or (job_id is not None and job_id != current):
            return False
        self._interrupt.set()
        return True

    # -- planning ----------------------------------------------------------------------------------

    def plan(self, graph: Graph, ctx_for: Callable[[str], Context] | None = None) -> Plan:
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
        for nid in order:
            node = nodes[nid]
            spec = node.type.spec
            upstream = sorted((name, signatures[src], idx) for name, (src, idx) in node.links.items())
            fp = None
            if node.type.has_fingerprint:
                ctx = (
                    ctx_for(nid)
                    if ctx_for
                    else Context("plan", nid, spec.type, device=self.device, paths=self.paths)
                )
                try:
                    fp = node.type.fingerprint(ctx, **node.literals)
                except Exception as exc:
                    exc._atelier_node = nid  # type: ignore[attr-defined]
                    raise
                if fp is not None:
                    fingerprints[nid] = fp
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
        return Plan(order, signatures, to_run, [n for n in order if n not in run_set], fingerprints)

    # -- running -----------------------------------------------------------------------------------

    def run(
        self,
        workflow: Any,
        *,
        job_id: str | None = None,
        overrides: dict[str, Any] | None = None,
        outputs: list[str] | None = None,
        on_event: E.EventSink | None = None,
        job_info: Mapping[str, Any] | None = None,
    ) -> JobResult:
        """Check and run a workflow (any format, or a checked :class:`Graph`). Never raises for a bad
        workflow or a failing node: the result says what happened."""
        job = job_id or uuid.uuid4().hex
        sinks = [s for s in (*self.listeners, on_event) if s is not None]

        def emit(event: E.Event) -> None:
            for sink in sinks:
                try:
                    sink(event)
                except Exception:  # a broken consumer must not break the job
                    pass

        if isinstance(workflow, Graph):
            graph = workflow
        else:
            checked: CheckResult = check(workflow, self.registry, overrides, outputs)
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
        with self._lock:
            self._current = job
            self._interrupt.clear()
            try:
                return self._run(graph, job, emit if sinks else None, job_info or {})
            finally:
                self._current = None
                self._interrupt.clear()

    def _run(
        self, graph: Graph, job: str, emit: Callable[[E.Event], None] | None, job_info: Mapping[str, Any]
    ) -> JobResult:
        t0 = time.perf_counter()
        nodes = graph.nodes
        info = {"workflow": graph.workflow, "parameters": graph.parameters, **job_info}
        interrupt = self._interrupt

        def make_ctx(nid: str) -> Context:
            node_type = nodes[nid].type.spec.type
            emit_node = None
            if emit is not None:

                def emit_node(kind: str, data: dict[str, Any], _nid: str = nid) -> None:
                    if kind == "progress":
                        emit(E.Progress(job=job, node=_nid, **data))
                    elif kind == "preview":
                        emit(E.Preview(job=job, node=_nid, **data))

            return Context(
                job,
                nid,
                node_type,
                device=self.device,
                paths=self.paths,
                services=self.services,
                job_info=info,
                _emit=emit_node,
                _interrupt=interrupt,
            )

        result = JobResult(job, "success")
        for _attempt in range(3):
            try:
                plan = self.plan(graph, make_ctx)
            except Exception as exc:
                # a fingerprint failed (a file that cannot be read, say): fail on that node
                return self._fail(result, graph, getattr(exc, "_atelier_node", None), exc, emit, t0)
            fetched = self._fetch_cached(plan, graph)
            if fetched is not None:
                break
        else:  # the cache kept losing entries under us (cleared concurrently): run everything
            self.cache.clear()
            plan = self.plan(graph, make_ctx)
            fetched = ({}, {})
        values, ui_cached = fetched
        info["fingerprints"] = {
            nid: {"type": nodes[nid].type.spec.type, "inputs": nodes[nid].literals, "fingerprint": fp}
            for nid, fp in plan.fingerprints.items()
        }
        info["node_versions"] = {
            nodes[nid].type.spec.type: nodes[nid].type.spec.version for nid in plan.order
        }
        outputs_wanted = set(graph.outputs)
        consumers: dict[str, int] = {}
        for nid in plan.to_run:
            for src, _ in nodes[nid].links.values():
                consumers[src] = consumers.get(src, 0) + 1
        result.cached = list(plan.cached)
        result.outputs.update(ui_cached)
        if emit is not None:
            name = graph.workflow.metadata.name
            emit(E.JobStarted(job=job, workflow=name, nodes=len(plan.order), to_run=len(plan.to_run)))
            for nid in plan.cached:
                emit(E.NodeCached(job=job, node=nid, node_type=nodes[nid].type.spec.type))

        registry = self.registry
        for nid in plan.to_run:
            node = nodes[nid]
            spec = node.type.spec
            try:
                if interrupt.is_set():
                    raise Interrupted("interrupted before node " + nid)
                if emit is not None:
                    emit(E.NodeStarted(job=job, node=nid, node_type=spec.type, title=node.title))
                kwargs = dict(node.literals)
                for name, (src, idx) in node.links.items():
                    kwargs[name] = values[src][idx]
                ctx = make_ctx(nid)
                started = time.perf_counter()
                raw = registry.instance(spec.type).run(ctx, **kwargs)
                outputs, ui = _normalise(raw, len(spec.outputs), spec.type)
                elapsed = (time.perf_counter() - started) * 1000.0
            except Interrupted:
                result.status = "interrupted"
                result.elapsed_ms = (time.perf_counter() - t0) * 1000.0
                if emit is not None:
                    emit(E.JobInterrupted(job=job, node=nid, node_type=spec.type))
                return result
            except Exception as exc:
                return self._fail(result, graph, nid, exc, emit, t0)
            self.cache.put(plan.signatures[nid], outputs, ui)
            values[nid] = outputs
            result.executed.append(nid)
            if ui is not None and nid in outputs_wanted:
                result.outputs[nid] = ui
            if emit is not None:
                emit(E.NodeFinished(job=job, node=nid, node_type=spec.type, elapsed_ms=elapsed, ui=ui))
            for src, _ in node.links.values():  # release what no later node of this job needs
                left = consumers[src] - 1
                consumers[src] = left
                if left == 0 and src not in outputs_wanted:
                    values.pop(src, None)
            if nid not in consumers and nid not in outputs_wanted:
                values.pop(nid, None)
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


def _normalise(raw: Any, n_outputs: int, type_name: str) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
    ui = None
    if isinstance(raw, NodeResult):
        ui = dict(raw.ui) if raw.ui is not None else None
        raw = raw.outputs
    if n_outputs == 0:
        return (), ui
    if n_outputs == 1 and not isinstance(raw, tuple):
        return (raw,), ui
    if not isinstance(raw, tuple) or len(raw) != n_outputs:
        got = f"a tuple of {len(raw)}" if isinstance(raw, tuple) else type(raw).__name__
        raise NodeOutputError(f"{type_name} returned {got}, but declares {n_outputs} outputs")
    return raw, ui
