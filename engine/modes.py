"""Node modes: a muted node does not run; a bypassed node is replaced by what it would pass through.

ComfyUI users know both from its canvas (Ctrl+M, Ctrl+B). The rules are ComfyUI's, kept in one place for
Atelier's own workflows (a node's ``"mode"``: ``"active"``, ``"bypass"`` or ``"mute"``) and for the
converter of ComfyUI's UI format (modes 2 and 4 there):

* a **bypassed** node's output stands for one of its inputs (:func:`bypass_input`): the input at the
  output's own index when its type fits, else the first input of exactly the wanted type, else the
  first that fits; a consumer takes what feeds that input. When no input fits, or it is not linked,
  there is nothing to pass through.
* a **muted** node is no node of the run: a link from it is cut, and a node that thereby loses a required
  input is not run either, and so on downstream (:func:`cut_unfed`). A muted output node is no goal.

:func:`resolve_modes` applies both to a workflow's nodes before the engine checks and plans them, so
signatures see the graph as it runs: a consumer of a bypassed node hashes what is passed through.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .node import NodeSpec
from .workflow import Link

NodeMode = Literal["active", "bypass", "mute"]
ACTIVE: NodeMode = "active"
BYPASS: NodeMode = "bypass"
MUTE: NodeMode = "mute"
MODES: tuple[NodeMode, ...] = (ACTIVE, BYPASS, MUTE)


def types_meet(a: str, b: str) -> bool:
    """ComfyUI's socket match: equal, either is any (``*`` or empty), or comma-separated lists that meet."""
    if a in ("*", "") or b in ("*", ""):
        return True
    return bool({t.strip().upper() for t in a.split(",")} & {t.strip().upper() for t in b.split(",")})


def bypass_input(input_types: Sequence[str], output_type: str, slot: int, want: str) -> int | None:
    """Which of a bypassed node's inputs (their types, in order) stands in for its output ``slot`` of type
    ``output_type`` feeding an input of type ``want``; None when none does."""
    if not input_types:
        return None
    if want in ("*", ""):
        want = output_type  # an input that takes anything wants what the output gives
    if want in ("*", ""):
        return slot if slot < len(input_types) else 0
    if (
        slot < len(input_types)
        and types_meet(input_types[slot], output_type)
        and types_meet(input_types[slot], want)
    ):
        return slot
    for n, t in enumerate(input_types):
        if t == want:
            return n
    for n, t in enumerate(input_types):
        if types_meet(t, output_type) and types_meet(t, want):
            return n
    return None


def cut_unfed(
    inputs: dict[str, dict[str, Any]],
    required: Callable[[str], Iterable[str]],
    source_of: Callable[[Any], str | None],
) -> dict[str, tuple[str, str]]:
    """Cut links (``source_of(value)`` is the node id a value links to, or None for a literal) to nodes not
    in ``inputs``; drop each node that thereby loses one of its ``required`` inputs, and so on. Mutates
    ``inputs``; returns each dropped node -> (the input it lost, the node that input came from)."""
    dropped: dict[str, tuple[str, str]] = {}
    changed = True
    while changed:
        changed = False
        for nid in list(inputs):
            need = set(required(nid))
            for name, value in list(inputs[nid].items()):
                src = source_of(value)
                if src is not None and src not in inputs:
                    del inputs[nid][name]
                    if name in need:
                        del inputs[nid]
                        dropped[nid] = (name, src)
                        changed = True
                        break
    return dropped


def required_links(spec: NodeSpec) -> set[str]:
    """The inputs a node cannot run without: not optional and with no default."""
    return {i.name for i in spec.inputs if not i.optional and i.default is None}


@dataclass(frozen=True)
class ModeProblem:
    """Something a node's mode did to the run, on ``node`` (``input`` of it when one is concerned)."""

    code: str
    node: str
    message: str
    input: str | None = None
    severity: Literal["error", "warning"] = "error"


@dataclass
class Resolved:
    """The inputs of the nodes that remain (links through bypassed nodes passed on), what was dropped."""

    inputs: dict[str, dict[str, Any]]
    #: node -> why it does not run (muted, bypassed, or fed by a muted node)
    removed: dict[str, str] = field(default_factory=dict)
    problems: list[ModeProblem] = field(default_factory=list)


@dataclass(frozen=True)
class _NoPassThrough:
    bypassed: str
    output: str
    out_type: str


def resolve_modes(
    modes: dict[str, str],
    inputs: dict[str, dict[str, Any]],
    spec_of: Callable[[str], NodeSpec | None],
) -> Resolved:
    """Resolve the modes of a workflow's nodes (``modes``: node id -> mode; ``inputs``: node id -> its
    input values, literals or :class:`Link`; ``spec_of``: a node id's spec, None when its type is unknown).
    Nodes with another mode than the three are left to the caller's check (see ``problems``)."""
    muted = {nid for nid, m in modes.items() if m == MUTE}
    bypassed = {nid for nid, m in modes.items() if m == BYPASS}
    out = Resolved({})
    for nid, mode in modes.items():
        if mode not in MODES:
            out.problems.append(
                ModeProblem("invalid_mode", nid, f"mode {mode!r} is not one of: {', '.join(MODES)}")
            )
    for nid in muted:
        out.removed[nid] = "muted"
    for nid in bypassed:
        out.removed[nid] = "bypassed"
        if spec_of(nid) is None:
            out.problems.append(
                ModeProblem(
                    "unknown_node_type",
                    nid,
                    "a bypassed node of an unknown type: what it passes through is unknown",
                )
            )

    def follow(link: Link, want: str) -> Link | _NoPassThrough | None:
        seen: set[str] = set()
        while link.node in bypassed:
            nid = link.node
            spec = spec_of(nid)
            if spec is None or nid in seen:
                return None
            seen.add(nid)
            index = spec.output_index(link.output)
            if index is None:
                return link  # the check reports the missing output on the consumer
            out_type = spec.outputs[index].type
            given = inputs.get(nid, {})
            slots = [i for i in spec.inputs if not i.is_widget or isinstance(given.get(i.name), Link)]
            pick = bypass_input([i.type for i in slots], out_type, index, want)
            value = given.get(slots[pick].name) if pick is not None else None
            if not isinstance(value, Link):
                return _NoPassThrough(nid, spec.outputs[index].name, out_type)
            link = value
        return link

    lost: dict[str, dict[str, _NoPassThrough]] = {}
    for nid, given in inputs.items():
        if nid in out.removed:
            continue
        spec = spec_of(nid)
        kept: dict[str, Any] = {}
        for name, value in given.items():
            if not isinstance(value, Link) or (value.node not in bypassed and value.node not in muted):
                kept[name] = value
                continue
            ispec = spec.input(name) if spec is not None else None
            fed = follow(value, ispec.type if ispec is not None else "*")
            if isinstance(fed, Link):
                kept[name] = fed  # a link to a muted node stays, for cut_unfed below to cut
            elif isinstance(fed, _NoPassThrough):
                lost.setdefault(nid, {})[name] = fed
        out.inputs[nid] = kept

    def required(nid: str) -> set[str]:
        spec = spec_of(nid)
        return required_links(spec) if spec is not None else set()

    for nid, names in lost.items():
        for name, why in names.items():
            if name in required(nid):
                out.problems.append(
                    ModeProblem(
                        "bypass_no_input",
                        why.bypassed,
                        f"bypassed, but its output {why.output!r} ({why.out_type}) has no linked input of "
                        f"that type to pass through, which node {nid} needs for its input {name!r}",
                    )
                )
                if nid in out.inputs:  # not run (the problem above refuses the run)
                    del out.inputs[nid]
                    out.removed[nid] = "fed by a bypassed node with nothing to pass through"
    dropped = cut_unfed(out.inputs, required, lambda v: v.node if isinstance(v, Link) else None)
    for nid, (name, src) in dropped.items():
        why = "a muted node" if src in muted else f"node {src}, which does not run"
        out.removed[nid] = f"its input {name!r} comes from {why}"
        out.problems.append(
            ModeProblem(
                "not_run",
                nid,
                f"does not run: its input {name!r} comes from {why}",
                input=name,
                severity="warning",
            )
        )
    return out
