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

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import types as T
from .workflow import Link, Parameter, Workflow, WorkflowFormatError, WorkflowNode, parse_workflow

PREFIX = "pipeline:"
SEP = ":"


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
    workflow keeps ``wf``'s metadata and carries no parameters."""
    result = Expanded(Workflow(metadata=wf.metadata))
    definitions = _definitions(wf, result.problems, "")
    result.workflow.nodes, _ = _expand_nodes(wf, resolve, (), result, definitions)
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


@dataclass(frozen=True)
class _Bound:
    """A link from an enclosing graph handed to a pipeline's input: its node id is already the flat one."""

    link: Link


def _expand_nodes(
    wf: Workflow,
    resolve: Resolver,
    chain: tuple[str, ...],
    result: Expanded,
    definitions: dict[str, Workflow],
    prefix: str = "",
    given: dict[str, dict[str, Any]] | None = None,
) -> tuple[dict[str, WorkflowNode], dict[str, dict[str | int, Link]]]:
    """``wf``'s nodes with ids prefixed, pipeline nodes replaced by their expansion, and for each pipeline
    node of ``wf`` the flat link producing each of its declared outputs. ``given``: the values the enclosing
    pipeline node sets on inner inputs (node id -> input -> value); nodes they leave without a consumer are
    dropped. Links to pipeline nodes' outputs are redirected to the inner nodes producing them."""
    problems = result.problems
    out: dict[str, WorkflowNode] = {}
    produced: dict[str, dict[str | int, Link]] = {}
    inputs_of = {
        nid: {**n.inputs, **given[nid]} if given and nid in given else n.inputs for nid, n in wf.nodes.items()
    }
    dropped = _replaced(wf, inputs_of) if given else set()
    for nid, node in wf.nodes.items():
        if nid in dropped:
            continue
        inputs = inputs_of[nid]
        if not is_pipeline_type(node.type):
            flat = {k: _flat(v, prefix) if isinstance(v, (Link, _Bound)) else v for k, v in inputs.items()}
            _add(out, prefix + nid, node.model_copy(update={"inputs": flat}), problems)
            continue
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
                found = resolve(name, node.version, inputs)
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
        inner_defs = {**definitions, **_definitions(inner, problems, f" inside {name!r}")}
        bound = _bind_inputs(node.type, inputs, inner, here, prefix, result)
        inner_nodes, inner_produced = _expand_nodes(
            inner, resolve, (*chain, name), result, inner_defs, here + SEP, bound
        )
        for inner_id, inner_node in inner_nodes.items():
            _add(out, inner_id, inner_node, problems)
        produced[nid] = _declared_outputs(inner, here, inner_produced)
    if produced:  # links that name a pipeline node of this level's output go to the inner producer
        targets = {prefix + pid for pid in produced}
        for node in out.values():
            inputs = node.inputs
            for k, v in inputs.items():
                if isinstance(v, Link) and v.node in targets:
                    inputs[k] = _redirect(v, prefix, produced)
    return out, produced


def _add(
    out: dict[str, WorkflowNode], nid: str, node: WorkflowNode, problems: list[ExpansionProblem]
) -> None:
    """Put a node in the flat graph; an id that is already there (a node whose id spells a path inside a
    pipeline, ``"fix:detailer"`` next to a pipeline node ``fix``) is refused, naming both."""
    if nid in out:
        problems.append(
            ExpansionProblem(
                "invalid_node_id",
                f"node id {nid!r} is used twice once pipelines are expanded (ids inside pipelines are "
                f"outer{SEP}inner paths): rename the node",
                node=nid,
                node_type=node.type,
            )
        )
        return
    out[nid] = node


def _flat(value: Any, prefix: str) -> Any:
    """An input value of a node at ``prefix``'s level, with its link (if any) naming the flat node id."""
    if isinstance(value, _Bound):
        return value.link
    if isinstance(value, Link):
        return Link.model_construct(node=prefix + value.node, output=value.output) if prefix else value
    return value


def _redirect(value: Any, prefix: str, produced: dict[str, dict[str | int, Link]]) -> Any:
    """A link to a declared output of one of this level's pipeline nodes, replaced by the link to the inner
    node producing it."""
    if not isinstance(value, Link) or not value.node.startswith(prefix):
        return value
    outs = produced.get(value.node[len(prefix) :])
    if outs is None:
        return value
    target = outs.get(value.output)
    if target is None:
        names = ", ".join(f"{i}:{n}" for i, n in enumerate(k for k in outs if isinstance(k, str))) or "none"
        # left dangling on purpose: validation reports the missing output on the consuming node
        return Link(node=value.node, output=f"{value.output} (outputs: {names})")
    return target


def _bind_inputs(
    type_name: str, given: dict[str, Any], inner: Workflow, here: str, prefix: str, result: Expanded
) -> dict[str, dict[str, Any]]:
    """What a pipeline node (of ``type_name``, with inputs ``given``) sets on its definition's inner inputs:
    inner node id -> input -> its value or, for a parameter not given, its default. Links from the enclosing
    graph (at ``prefix``) are carried as :class:`_Bound`, so the inner expansion does not prefix them again."""
    problems = result.problems
    params = inner.parameters
    bound: dict[str, dict[str, Any]] = {}

    def put(pname: str, value: Any) -> None:
        for target_node, target_input in params[pname].target_pairs():
            if target_node in inner.nodes:
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
        if isinstance(value, (Link, _Bound)):
            put(input_name, _Bound(_flat(value, prefix)))
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
            put(pname, param.default)
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


def _replaced(inner: Workflow, inputs_of: dict[str, dict[str, Any]]) -> set[str]:
    """The inner nodes whose every consumer now takes a pipeline input instead (the LoadImage that fed the
    definition when it ran alone), and what fed only them: they would compute nothing anybody reads."""
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
    inner: Workflow, here: str, inner_produced: dict[str, dict[str | int, Link]]
) -> dict[str | int, Link]:
    """Declared output name and index -> the flat link producing it (through nested pipelines too)."""
    outs: dict[str | int, Link] = {}
    for index, (name, decl) in enumerate((inner.outputs or {}).items()):
        nested = inner_produced.get(decl.node, {}).get(decl.output)
        link = nested or Link(node=here + SEP + decl.node, output=decl.output)
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
