"""Pipelines: a workflow used as a node in another workflow, expanded before validation.

A workflow becomes usable as a node by declaring its interface:

- its **inputs** are its ``parameters``: literal ones (INT, FLOAT, STRING, BOOLEAN, COMBO) as today, and
  socket ones (``"type": "IMAGE"``, ``"MODEL"``, ...) whose ``targets`` are the inner inputs a link feeds;
- its **outputs** are named in ``"outputs": {"image": {"type": "IMAGE", "node": "decode", "output": "IMAGE"}}``.

A node of another workflow uses it with the type ``pipeline:NAME`` (``version`` pins a library version). The
definition comes from the using workflow's ``definitions`` (embedded: ``{"NAME": {...workflow...}}``) or from
a resolver (the pipeline library). Inputs of the pipeline node are its parameters (a literal or a link);
links from it name a declared output (by name or index).

:func:`expand` splices every pipeline node's definition into the graph, recursively, so the executor plans
one flat graph: inner nodes keep their own cache signatures (an inner node identical to another anywhere in
the graph is computed once; an edit inside re-runs only what depends on it). An inner node's id is its path,
the outer ids joined by ``:`` (``face:detailer``), as ComfyUI names the nodes of an expanded subgraph, so
validation errors and events say where they are. A definition that uses itself, directly or through others,
is refused with the chain named.

This module is part of the generic core: it knows workflows, not what their nodes do.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter

from . import types as T
from .workflow import Link, Parameter, Workflow, WorkflowFormatError, WorkflowNode, parse_workflow

PREFIX = "pipeline:"
SEP = ":"


class SplicedNode(WorkflowNode):
    """A node the expansion made. Its links are :class:`Link` objects already (the splicing makes them), so
    the search for links in JSON form that parsing a node does is left out; otherwise a WorkflowNode."""

    @classmethod
    def _links(cls, v: Any) -> Any:  # replaces WorkflowNode's validator of the same name
        return v


#: the spliced nodes made into models in one call
_FLAT_NODES = TypeAdapter(dict[str, SplicedNode])


@dataclass
class Resolved:
    """What a resolver found for a reference: the definition, its version, and what the caller should know
    (a newer major version exists, say)."""

    workflow: Workflow
    version: str | None = None
    warnings: list[str] = field(default_factory=list)


#: (name, pinned version or None, the inputs the node gives) -> the definition; raises ``LookupError``
#: naming what is missing
Resolver = Callable[[str, "str | None", "dict[str, Any]"], "Workflow | Resolved"]


def is_pipeline_type(type_name: str) -> bool:
    return type_name.startswith(PREFIX)


def uses_pipelines(wf: Workflow) -> bool:
    return any(is_pipeline_type(n.type) for n in wf.nodes.values())


def path_of(node_id: str) -> list[str]:
    """The outer-to-inner ids of an expanded node (``"face:detailer"`` -> ``["face", "detailer"]``)."""
    return node_id.split(SEP)


@dataclass
class ExpansionProblem:
    """What stopped a pipeline node from expanding; ``node`` is the pipeline node's (expanded) id."""

    code: str
    message: str
    node: str | None = None
    node_type: str | None = None
    input: str | None = None
    severity: str = "error"


@dataclass
class Expanded:
    workflow: Workflow
    problems: list[ExpansionProblem] = field(default_factory=list)
    #: literal values given to pipeline inputs: (pipeline node's flat id, input, its declaration, value),
    #: for validation to check against the input's own constraints
    literals: list[tuple[str, str, Parameter, Any]] = field(default_factory=list)


def no_library(name: str, version: str | None, node_inputs: dict[str, Any] | None = None) -> Workflow:
    raise LookupError(
        f"no pipeline {name!r} in this workflow's definitions, and no pipeline library is configured"
    )


def expand(wf: Workflow, resolve: Resolver = no_library) -> Expanded:
    """The workflow with every pipeline node replaced by its inner nodes (see the module's description).

    ``wf``'s own parameters must already be applied to its nodes (validation does this first); the flat
    workflow keeps ``wf``'s metadata and carries no parameters.

    Each definition is worked out once per expansion, whatever number of instances use it (a template of its
    nodes without their links); each instance splices that template's nodes as plain dicts with its links
    made, and the flat graph's node models are made in one call at the end. Building each node model on its
    own instead made planning a nested graph twice as slow as the flat one (bench/pipelines.py)."""
    result = Expanded(Workflow(metadata=wf.metadata))
    definitions = _definitions(wf, result.problems, "")
    nodes: dict[str, NodeData] = {}
    loose: list[tuple[dict[str, Any], str]] = []
    _expand_nodes(wf, resolve, (), result, definitions, {}, nodes, loose)
    for inputs, k in loose:  # links crossing a pipeline's boundary, final now
        v = inputs[k]
        inputs[k] = Link(node=v["node"], output=v["output"])
    result.workflow.nodes = _FLAT_NODES.validate_python(nodes)
    return result


def _definitions(wf: Workflow, problems: list[ExpansionProblem], where: str) -> dict[str, Workflow]:
    out: dict[str, Workflow] = {}
    for name, data in (wf.definitions or {}).items():
        try:
            out[name] = data if isinstance(data, Workflow) else parse_workflow(data)
        except (WorkflowFormatError, ValueError) as exc:
            problems.append(
                ExpansionProblem(
                    "invalid_pipeline", f"definition {name!r}{where}: {exc}", node_type=PREFIX + name
                )
            )
    return out


#: a node as JSON (``type``, ``inputs`` with links as ``{"node", "output"}``, ...)
NodeData = dict[str, Any]
#: a link as JSON
LinkData = dict[str, Any]


@dataclass(frozen=True)
class _Bound:
    """A link from an enclosing graph handed to a pipeline's input: its node id is already the flat one."""

    link: LinkData


def _is_link(value: Any) -> bool:
    return type(value) is dict and len(value) == 2 and "node" in value and "output" in value


@dataclass
class _Plain:
    """A node of a definition that is not a pipeline node, worked out once per definition and set of given
    inputs: its JSON without inputs, its inputs in order with the values it holds (a copy of the definition's;
    links and given inputs are filled per instance), its links inside the definition (input, source id, output, whether the source is
    a pipeline node), and the inputs the enclosing pipeline node gives."""

    nid: str
    base: NodeData
    values: dict[str, Any]
    links: list[tuple[str, str, Any, bool]]
    given: list[str]


@dataclass
class _Template:
    """A definition's nodes ready to splice: plain ones as :class:`_Plain`, pipeline nodes by id (they
    expand recursively), in the definition's order; nodes nobody would read are left out."""

    nodes: list[_Plain | str]


def _template(wf: Workflow, given: dict[str, dict[str, Any]] | None, memo: dict[Any, Any]) -> _Template:
    key = (
        "template",
        id(wf),
        frozenset((nid, k) for nid, values in given.items() for k in values) if given else None,
    )
    found = memo.get(key)
    if found is not None:
        return found
    inputs_of = {
        nid: {**n.inputs, **given[nid]} if given and nid in given else n.inputs for nid, n in wf.nodes.items()
    }
    dropped = _unread(wf, inputs_of) if given else set()
    nodes: list[_Plain | str] = []
    for nid, node in wf.nodes.items():
        if nid in dropped:
            continue
        if is_pipeline_type(node.type):
            nodes.append(nid)
            continue
        mine = given.get(nid, {}) if given else {}
        plain = _Plain(nid, node.model_dump(exclude_unset=True, exclude={"inputs"}), {}, [], [])
        for k, v in inputs_of[nid].items():
            plain.values[k] = None  # the order of the inputs is kept
            if k in mine:
                plain.given.append(k)
            elif isinstance(v, Link):
                source = wf.nodes.get(v.node)
                piped = source is not None and is_pipeline_type(source.type)
                plain.links.append((k, v.node, v.output, piped))
            else:
                plain.values[k] = copy.deepcopy(v) if isinstance(v, (list, dict)) else v
        nodes.append(plain)
    found = memo[key] = _Template(nodes)
    return found


def _expand_nodes(
    wf: Workflow,
    resolve: Resolver,
    chain: tuple[str, ...],
    result: Expanded,
    definitions: dict[str, Workflow],
    memo: dict[Any, Any],
    out: dict[str, NodeData],
    loose: list[tuple[dict[str, Any], str]],
    prefix: str = "",
    given: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str | int, LinkData]]:
    """Put ``wf``'s nodes (as JSON) in ``out`` with ids prefixed, pipeline nodes replaced by their expansion,
    and give for each pipeline node of ``wf`` the flat link producing each of its declared outputs. ``given``:
    the values the enclosing pipeline node sets on inner inputs (node id -> input -> value); nodes they leave
    without a consumer are dropped.

    A link naming a pipeline node of this level is made here, as a new dict, whether it lands on a node of
    this level or is handed into a pipeline as a bound input (then the inner nodes hold that very dict); once
    the level is expanded, each such dict is rewritten in place to the inner node producing the output. Where
    a spliced node holds such a dict is put in ``loose``, for :func:`expand` to make it a Link at the end;
    the other links are made Links here."""
    problems = result.problems
    produced: dict[str, dict[str | int, LinkData]] = {}
    pending: list[LinkData] = []
    nodes = wf.nodes

    for item in _template(wf, given, memo).nodes:
        if isinstance(item, _Plain):
            flat_inputs = item.values.copy()
            for k, source, output, piped in item.links:
                if piped:  # rewritten in place once this level is expanded
                    link = {"node": prefix + source, "output": output}
                    pending.append(link)
                    flat_inputs[k] = link
                    loose.append((flat_inputs, k))
                else:
                    flat_inputs[k] = Link(node=prefix + source, output=output)
            if item.given:
                mine = given[item.nid]  # type: ignore[index]
                for k in item.given:
                    v = mine[k]
                    if isinstance(v, _Bound):
                        flat_inputs[k] = v.link
                        loose.append((flat_inputs, k))
                    else:
                        flat_inputs[k] = v
            flat_id = prefix + item.nid
            if flat_id in out:
                _refuse_twice(flat_id, item.base.get("type"), problems)
            else:
                out[flat_id] = {**item.base, "inputs": flat_inputs}
            continue
        nid = item
        node = nodes[nid]
        flat_inputs = {}
        for k, v in ({**node.inputs, **given[nid]} if given and nid in given else node.inputs).items():
            if isinstance(v, Link):
                link = {"node": prefix + v.node, "output": v.output}
                target = nodes.get(v.node)
                if target is not None and is_pipeline_type(target.type):
                    pending.append(link)
                v = link
            elif isinstance(v, _Bound):
                v = v.link
            elif isinstance(v, (list, dict)):  # the flat graph never shares a value with a definition
                v = copy.deepcopy(v)
            flat_inputs[k] = v
        name = node.type[len(PREFIX) :]
        here = prefix + nid
        if name in chain:
            loop = " › ".join((*chain, name))
            problems.append(
                ExpansionProblem(
                    "pipeline_cycle", f"pipeline {name!r} uses itself: {loop}", node=here, node_type=node.type
                )
            )
            continue
        inner = definitions.get(name)
        if inner is None:
            try:
                found = resolve(name, node.version, flat_inputs)
            except LookupError as exc:
                message = exc.args[0] if exc.args else str(exc)
                problems.append(ExpansionProblem("unknown_pipeline", message, node=here, node_type=node.type))
                continue
            if isinstance(found, Resolved):
                problems.extend(
                    ExpansionProblem(
                        "pipeline_version", w, node=here, node_type=node.type, severity="warning"
                    )
                    for w in found.warnings
                )
                found = found.workflow
            inner = found
        inner_defs = (
            {**definitions, **_definitions(inner, problems, f" inside {name!r}")}
            if inner.definitions
            else definitions
        )
        bound = _bind_inputs(node.type, flat_inputs, inner, here, result, memo)
        inner_produced = _expand_nodes(
            inner, resolve, (*chain, name), result, inner_defs, memo, out, loose, here + SEP, bound
        )
        produced[nid] = _declared_outputs(inner, here, inner_produced)
    for link in pending:
        target = _redirect(link, prefix, produced)
        if target is not link:
            link.clear()
            link.update(target)
    return produced


def _refuse_twice(nid: str, node_type: str | None, problems: list[ExpansionProblem]) -> None:
    """An id that is already in the flat graph (a node whose id spells a path inside a pipeline,
    ``"fix:detailer"`` next to a pipeline node ``fix``) is refused, naming both."""
    problems.append(
        ExpansionProblem(
            "invalid_node_id",
            f"node id {nid!r} is used twice once pipelines are expanded (ids inside pipelines are "
            f"outer{SEP}inner paths): rename the node",
            node=nid,
            node_type=node_type,
        )
    )


def _redirect(value: LinkData, prefix: str, produced: dict[str, dict[str | int, LinkData]]) -> LinkData:
    """A link to a declared output of one of this level's pipeline nodes, replaced by the link to the inner
    node producing it."""
    node = value["node"]
    if not node.startswith(prefix):
        return value
    outs = produced.get(node[len(prefix) :])
    if outs is None:
        return value
    target = outs.get(value["output"])
    if target is None:
        names = ", ".join(f"{i}:{n}" for i, n in enumerate(k for k in outs if isinstance(k, str))) or "none"
        # left dangling on purpose: validation reports the missing output on the consuming node
        return {"node": node, "output": f"{value['output']} (outputs: {names})"}
    return target


def _bind_inputs(
    type_name: str,
    given: dict[str, Any],
    inner: Workflow,
    here: str,
    result: Expanded,
    memo: dict[Any, Any],
) -> dict[str, dict[str, Any]]:
    """What a pipeline node (of ``type_name``, with inputs ``given``) sets on its definition's inner inputs:
    inner node id -> input -> its value or, for a parameter not given, its default. ``given``'s links already
    name flat ids; they are carried as :class:`_Bound`, so the inner expansion does not prefix them again."""
    problems = result.problems
    params = inner.parameters
    bound: dict[str, dict[str, Any]] = {}
    targets = memo.get(("targets", id(inner)))
    if targets is None:
        targets = memo[("targets", id(inner))] = {
            pname: [(n, k) for n, k in p.target_pairs() if n in inner.nodes] for pname, p in params.items()
        }

    def put(pname: str, value: Any) -> None:
        for target_node, target_input in targets[pname]:
            bound.setdefault(target_node, {})[target_input] = value

    for input_name, value in given.items():
        if input_name not in params:
            known = ", ".join(params) or "none"
            problems.append(
                ExpansionProblem(
                    "unknown_input",
                    f"pipeline {type_name[len(PREFIX) :]!r} has no input {input_name!r} (inputs: {known})",
                    node=here,
                    node_type=type_name,
                    input=input_name,
                )
            )
            continue
        if _is_link(value):
            put(input_name, _Bound(value))
        else:
            result.literals.append((here, input_name, params[input_name], value))
            put(input_name, value)
    for pname, param in params.items():
        if pname in given:
            continue
        if is_socket(param) and not wired_inside(inner, param):
            problems.append(
                ExpansionProblem(
                    "missing_input",
                    f"pipeline input {pname!r} ({param.type}) is not connected",
                    node=here,
                    node_type=type_name,
                    input=pname,
                )
            )
        elif param.default is not None:
            default = param.default
            put(pname, copy.deepcopy(default) if isinstance(default, (list, dict)) else default)
    return bound


def _consumers(inputs_of: dict[str, dict[str, Any]], skip: set[str]) -> dict[str, int]:
    used = {nid: 0 for nid in inputs_of if nid not in skip}
    for nid, inputs in inputs_of.items():
        if nid in skip:
            continue
        for value in inputs.values():
            if isinstance(value, Link) and value.node in used:
                used[value.node] += 1
    return used


def _unread(inner: Workflow, inputs_of: dict[str, dict[str, Any]]) -> set[str]:
    """The nodes of ``inner`` left without a consumer once the given inputs replace links inside it."""
    before = _consumers({nid: n.inputs for nid, n in inner.nodes.items()}, set())
    declared = {decl.node for decl in (inner.outputs or {}).values()}
    dropped: set[str] = set()
    while True:
        after = _consumers(inputs_of, dropped)
        gone = {nid for nid, users in after.items() if not users and before.get(nid) and nid not in declared}
        if not gone:
            return dropped
        dropped |= gone


def _declared_outputs(
    inner: Workflow, here: str, inner_produced: dict[str, dict[str | int, LinkData]]
) -> dict[str | int, LinkData]:
    """Declared output name and index -> the flat link producing it (through nested pipelines too)."""
    outs: dict[str | int, LinkData] = {}
    for index, (name, decl) in enumerate((inner.outputs or {}).items()):
        nested = inner_produced.get(decl.node, {}).get(decl.output)
        link = nested or {"node": here + SEP + decl.node, "output": decl.output}
        outs[name] = link
        outs[index] = link
    return outs


def is_socket(param: Parameter) -> bool:
    """A parameter a link feeds (IMAGE, MODEL, ...), not a value."""
    return param.type not in T.PRIMITIVES and param.type != T.COMBO


def wired_inside(wf: Workflow, param: Parameter) -> bool:
    """Whether every input a socket parameter targets is already linked inside the definition (a LoadImage
    feeding it when the workflow runs alone): then connecting it is optional."""
    for node_id, input_name in param.target_pairs():
        node = wf.nodes.get(node_id)
        if node is None or not isinstance(node.inputs.get(input_name), Link):
            return False
    return True


def interface(wf: Workflow) -> dict[str, Any]:
    """A pipeline's interface as JSON for other programs: inputs (types, defaults, ranges, descriptions) and
    outputs (types, descriptions)."""
    inputs = {}
    for name, p in wf.parameters.items():
        entry = p.model_dump(exclude_none=True, exclude={"targets"})
        entry["socket"] = is_socket(p)
        entry["required"] = (
            is_socket(p) and not wired_inside(wf, p) or (not is_socket(p) and p.default is None)
        )
        inputs[name] = entry
    outputs = {name: {"type": d.type, "description": d.description} for name, d in (wf.outputs or {}).items()}
    return {"name": wf.metadata.name, "version": wf.metadata.version, "inputs": inputs, "outputs": outputs}
