"""Admission control: will a validated job fit this engine's limits and memory?

:func:`admit` walks a checked :class:`~.validate.Graph` in dependency order, asks each node type that
declares one for its :meth:`~.node.Node.estimate` (handing it the extents its upstream nodes declared), holds
every figure against the :class:`~.limits.Limits`, and estimates the job's peak memory: the largest, over
the nodes, of what a node holds while it runs (the extents flowing in, those flowing out, its working
memory). Problems are :class:`~.validate.NodeError` s naming the node, the input and the limit. The server
refuses a job with problems before queueing it; the command line prints them as warnings and runs.

Nothing here knows about Stable Diffusion: the node types say what they need.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx

from .folders import Folders
from .limits import Estimate, Extent, Limits
from .validate import Graph, NodeError

log = logging.getLogger(__name__)

MemoryProbe = Callable[[str], int | None]


@dataclass
class Admission:
    """The verdict on a job: ``problems`` (empty: admitted), the estimated peak memory (bytes), the node
    where it peaks, and the memory it was held against (None when unknown: not checked)."""

    problems: list[NodeError] = field(default_factory=list)
    memory_needed: int = 0
    peak_node: str | None = None
    memory_available: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def admit(
    graph: Graph,
    limits: Limits,
    files: Folders | None = None,
    *,
    device: str = "cpu",
    memory: MemoryProbe | None = None,
) -> Admission:
    """Hold ``graph`` against ``limits`` and the memory of ``device`` (``limits.memory_bytes`` when set,
    else ``memory(device)``, by default :func:`available_memory`). Never raises on user input: a node whose
    estimate fails is skipped (and logged)."""
    files = files if files is not None else Folders()
    verdict = Admission()
    extents: dict[str, dict[int, Extent]] = {}
    #: per node, the largest value of each kind reported over its limit at or upstream of it: a size
    #: refused at its source (an empty latent) is not refused again at every node it flows through
    reported: dict[str, dict[str, int]] = {}
    order = _run_order(graph)
    for nid in order:
        gn = graph.nodes[nid]
        cls = gn.type
        upstream = {
            name: ext
            for name, (src, index) in gn.links.items()
            if (ext := extents.get(src, {}).get(index)) is not None
        }
        inherited: dict[str, int] = {}
        for src, _ in gn.links.values():
            for kind, value in reported.get(src, {}).items():
                inherited[kind] = max(value, inherited.get(kind, 0))
        reported[nid] = inherited
        est: Estimate | None = None
        if cls.has_estimate:
            try:
                est = cls.estimate(files, upstream, **gn.literals)
            except Exception as exc:  # an estimate is advice: a broken one must not refuse a job
                log.warning("estimate of node %s (%s) failed: %s", nid, cls.spec.type, exc)
        if est is None:
            continue
        extents[nid] = dict(est.outputs)
        for m in est.measures:
            why = limits.exceeded(m)
            if why is not None and m.value > inherited.get(m.kind, 0):
                reported[nid] = {**reported[nid], m.kind: max(m.value, reported[nid].get(m.kind, 0))}
                verdict.problems.append(
                    NodeError(
                        code="over_limit", node=nid, node_type=cls.spec.type, input=m.input, message=why
                    )
                )
        held = sum(e.nbytes for e in upstream.values()) + sum(e.nbytes for e in est.outputs.values())
        held += est.work_bytes
        if held > verdict.memory_needed:
            verdict.memory_needed, verdict.peak_node = held, nid
    available = limits.memory_bytes
    if available is None:
        try:
            available = (memory or available_memory)(device)
        except Exception as exc:
            log.warning("could not measure the memory of %s: %s", device, exc)
            available = None
    verdict.memory_available = available
    if available is not None and verdict.peak_node is not None:
        allowed = int(available * limits.memory_fraction)
        if verdict.memory_needed > allowed:
            node = graph.nodes[verdict.peak_node]
            verdict.problems.append(
                NodeError(
                    code="over_memory",
                    node=verdict.peak_node,
                    node_type=node.type.spec.type,
                    message=(
                        f"the job needs about {_size(verdict.memory_needed)} of {device} memory here, over "
                        f"the limit memory_fraction={limits.memory_fraction:g} of {_size(available)} "
                        f"available ({_size(allowed)})"
                    ),
                )
            )
    return verdict


def _run_order(graph: Graph) -> list[str]:
    """The nodes the job's outputs need, upstream first."""
    g = nx.DiGraph()
    g.add_nodes_from(graph.nodes)
    for nid, gn in graph.nodes.items():
        for src, _ in gn.links.values():
            if src in graph.nodes:
                g.add_edge(src, nid)
    needed: set[str] = set()
    for out in graph.outputs:
        if out in g:
            needed.add(out)
            needed |= nx.ancestors(g, out)
    return [n for n in nx.topological_sort(g) if n in needed]


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


# -- the machine's memory --------------------------------------------------------------------------


def available_memory(device: str) -> int | None:
    """Bytes a job may still use on ``device``: on a CUDA device what is free plus what this process's
    allocator holds unused; elsewhere the RAM available (``MemAvailable``), or None when unknown."""
    if str(device).startswith("cuda"):
        try:
            import torch

            dev = torch.device(device)
            free, _total = torch.cuda.mem_get_info(dev)
            return int(free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev))
        except Exception:
            return None
    return available_ram()


def available_ram(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """The RAM available to new work: Linux's ``MemAvailable``, else free pages (``sysconf``)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
