"""Traits: what is known about the values flowing through a graph before it runs, and what they need.

A node type may declare, from its literal inputs (a loader reads a file's header, never its weights) and
the traits flowing into it, the :class:`Trait` s of its outputs (:meth:`~.node.Node.traits`). A trait either
describes the value (``need=False``: "this MODEL is of kind X") or travels with it as a requirement
(``need=True``: "whatever this CONDITIONING meets must be of kind X"). An output a node type says nothing
about carries the traits of the node's inputs of the same socket type, so pass-through nodes need not
declare anything. Wherever a need meets a trait of the same key with another value, in the inputs of one
node, validation reports it on the node the need came from, naming both sources.

The engine gives keys and values no meaning; plugins do (Stable Diffusion's model families, for one).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import networkx as nx

from .folders import Folders

if TYPE_CHECKING:
    from .validate import GraphNode, NodeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trait:
    """One fact about a value, or one requirement it carries (``need``).

    ``key`` says what it is about and ``value`` what it is; ``node`` and ``input`` name where it comes
    from (the node and the input whose choice decides it), ``source`` names that source in messages
    ("ControlNet 'x.safetensors'") and ``value_label`` the value ("SDXL")."""

    key: str
    value: str
    node: str
    source: str
    input: str | None = None
    value_label: str = ""
    need: bool = False

    def as_need(self, key: str | None = None) -> Trait:
        """This trait as a requirement (of ``key``, by default its own)."""
        return Trait(key or self.key, self.value, self.node, self.source, self.input, self.value_label, True)

    @property
    def shown(self) -> str:
        return self.value_label or self.value


Traits = frozenset[Trait]
#: what a node type declares: traits per output index (outputs left out carry their inputs' traits)
Declared = Mapping[int, Iterable[Trait]]


def flow_traits(nodes: Mapping[str, GraphNode], files: Folders) -> list[NodeError]:
    """Walk the graph upstream first, working out each output's traits, and report every need that meets
    a trait of the same key with another value (once per pair of sources). Never raises on user input: a
    node type whose ``traits`` fails is treated as declaring nothing (the run reports the problem)."""
    from .validate import NodeError

    g = nx.DiGraph()
    g.add_nodes_from(nodes)
    for nid, gn in nodes.items():
        for src, _ in gn.links.values():
            if src in nodes:
                g.add_edge(src, nid)
    if not nx.is_directed_acyclic_graph(g):
        return []
    flowing: dict[str, dict[int, Traits]] = {}
    problems: list[NodeError] = []
    seen: set[tuple[str, str, str, str]] = set()
    for nid in nx.topological_sort(g):
        gn = nodes[nid]
        upstream: dict[str, Traits] = {
            name: flowing.get(src, {}).get(index, frozenset()) for name, (src, index) in gn.links.items()
        }
        for need, have in _conflicts(upstream.values()):
            pair = (need.node, have.node, need.value, have.value)
            if pair in seen:
                continue
            seen.add(pair)
            owner = nodes.get(need.node)
            problems.append(
                NodeError(
                    code="incompatible",
                    node=need.node,
                    node_type=owner.type.spec.type if owner is not None else None,
                    input=need.input,
                    message=(
                        f"{need.source} is for {need.shown}, but node {nid} ({gn.type.spec.type}) uses it "
                        f"with {have.source}, which is {have.shown} (node {have.node}); choose one of the "
                        "same family"
                    ),
                )
            )
        flowing[nid] = _outputs(gn, upstream, files)
    return problems


def _conflicts(inputs: Iterable[Traits]) -> list[tuple[Trait, Trait]]:
    every = frozenset().union(*inputs)
    needs = [t for t in every if t.need]
    if not needs:
        return []
    haves = [t for t in every if not t.need]
    found = [(n, h) for n in needs for h in haves if n.key == h.key and n.value != h.value]
    return sorted(found, key=lambda p: (p[0].node, p[1].node, p[0].value, p[1].value))


def _outputs(gn: GraphNode, upstream: Mapping[str, Traits], files: Folders) -> dict[int, Traits]:
    cls = gn.type
    declared: Declared = {}
    if cls.has_traits:
        try:
            declared = cls.traits(files, upstream, node_id=gn.id, **gn.literals) or {}
        except Exception as exc:  # advice before a run: a broken declaration must not refuse a job
            log.warning("traits of node %s (%s) failed: %s", gn.id, cls.spec.type, exc)
            declared = {}
    out: dict[int, Traits] = {}
    for index, spec in enumerate(cls.spec.outputs):
        if index in declared:
            out[index] = frozenset(declared[index])
            continue
        same = [
            upstream.get(i.name, frozenset())
            for i in cls.spec.inputs
            if not i.is_widget and i.name in upstream and i.type == spec.type
        ]
        out[index] = frozenset().union(*same) if same else frozenset()
    return out


def pass_through(upstream: Mapping[str, Traits], *names: str) -> set[Trait]:
    """The traits flowing into inputs ``names`` (for a declaration that adds to them)."""
    found: set[Trait] = set()
    for name in names:
        found |= upstream.get(name, frozenset())
    return found
