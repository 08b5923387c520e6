"""Every check before a run. Returns all problems in one pass; never raises on bad user input.

The result of a successful check is a :class:`Graph`: each node with its type class, its literal inputs
coerced to their declared types (defaults filled in) and its links resolved to ``(node_id, output_index)``.
That is what the executor plans and runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import networkx as nx
from pydantic import BaseModel, ValidationError

from . import types as T
from .comfy_ui import UiFormatError, UiProblem
from .folders import Folders
from .modes import ACTIVE, resolve_modes
from .node import InputSpec, Node
from .pipeline import SEP, Resolver, expand, is_pipeline_type, no_library, uses_pipelines
from .registry import Registry
from .traits import flow_traits
from .workflow import Link, Parameter, Workflow, WorkflowFormatError, parse_workflow


class NodeError(BaseModel):
    """One problem found by validation."""

    code: str
    message: str
    node: str | None = None
    node_type: str | None = None
    input: str | None = None
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = []
        if self.node is not None:
            path = " › ".join(self.node.split(SEP))  # a node inside pipelines: outer › inner
            where.append(f"node {path}" + (f" ({self.node_type})" if self.node_type else ""))
        if self.input is not None:
            where.append(f"input {self.input!r}")
        prefix = ", ".join(where)
        tag = "warning" if self.severity == "warning" else "error"
        return f"{tag} [{self.code}] {prefix + ': ' if prefix else ''}{self.message}"


@dataclass
class GraphNode:
    id: str
    type: type[Node]
    literals: dict[str, Any]
    links: dict[str, tuple[str, int]]
    title: str | None = None


@dataclass
class Graph:
    """A validated, executable workflow."""

    workflow: Workflow
    nodes: dict[str, GraphNode]
    outputs: list[str]
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class CheckResult:
    errors: list[NodeError]
    graph: Graph | None
    workflow: Workflow | None

    @property
    def ok(self) -> bool:
        return self.graph is not None

    @property
    def warnings(self) -> list[NodeError]:
        return [e for e in self.errors if e.severity == "warning"]


# -- literal checks --------------------------------------------------------------------------------


def describe_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def coerce_literal(
    spec: InputSpec, value: Any, files: Folders | None = None
) -> tuple[Any, tuple[str, str] | None]:
    """Coerce ``value`` to the input's type. Returns (value, None) or (None, (code, message))."""
    t = spec.type
    if t == T.INT:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, ("invalid_type", f"expected an integer, got {describe_value(value)}")
        if isinstance(value, float):
            if not value.is_integer():
                return None, ("invalid_type", f"expected an integer, got {value!r}")
            value = int(value)
    elif t == T.FLOAT:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, ("invalid_type", f"expected a number, got {describe_value(value)}")
        value = float(value)
        if not math.isfinite(value):
            return None, ("invalid_type", f"expected a finite number, got {value!r}")
    elif t == T.STRING:
        if not isinstance(value, str):
            return None, ("invalid_type", f"expected a string, got {describe_value(value)}")
    elif t == T.BOOLEAN:
        if not isinstance(value, bool):
            return None, ("invalid_type", f"expected true or false, got {describe_value(value)}")
    elif t == T.COMBO:
        try:
            choices = spec.resolved_choices(files)
        except Exception as exc:  # a broken choice source is a problem to report, not to raise
            return None, ("invalid_choices", f"could not list the choices: {exc}")
        if not _hashable_in(value, choices):
            shown = ", ".join(repr(c) for c in choices[:12]) + (", ..." if len(choices) > 12 else "")
            return None, (
                "not_in_choices",
                f"{describe_value(value)} is not one of: {shown or '(no choices)'}",
            )
        return value, None
    else:
        return None, (
            "invalid_type",
            f"{t} input needs a link from a {t} output, got a literal {describe_value(value)}",
        )
    if t in (T.INT, T.FLOAT):
        if spec.min is not None and value < spec.min:
            return None, ("out_of_range", f"{value} is below the minimum {_num(spec.min)}")
        if spec.max is not None and value > spec.max:
            return None, ("out_of_range", f"{value} is above the maximum {_num(spec.max)}")
    return value, None


def _hashable_in(value: Any, choices: list[Any]) -> bool:
    try:
        return any(value == c and type(value) is type(c) for c in choices) or (
            isinstance(value, (int, float)) and not isinstance(value, bool) and value in choices
        )
    except Exception:
        return False


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _widget_accepts(input_spec: InputSpec, output_type: str) -> bool:
    if output_type == T.ANY:
        return True
    if input_spec.type == T.COMBO:
        return output_type in (T.COMBO, T.STRING)
    if input_spec.type == T.FLOAT:
        return output_type in (T.FLOAT, T.INT)
    return output_type == input_spec.type


# -- the check -------------------------------------------------------------------------------------


def check(
    data: Any,
    registry: Registry,
    overrides: dict[str, Any] | None = None,
    outputs: list[str] | None = None,
    *,
    files: Folders | None = None,
    pipelines: Resolver = no_library,
) -> CheckResult:
    """Parse and check a workflow (any supported format, already parsed or raw JSON data).

    ``overrides`` maps exposed parameter names or ``"node_id.input"`` to values; ``outputs`` limits the
    run to these output node ids (default: every output node); ``files`` gives the choice lists that
    come from folders (model files, input images); ``pipelines`` finds the definitions of ``pipeline:NAME``
    nodes that the workflow does not embed (engine/pipeline.py). Nodes inside pipelines are checked with
    their paths as ids (``outer:inner``).
    """
    try:
        return _check(data, registry, overrides or {}, outputs, files, pipelines)
    except Exception as exc:  # last line of defence: validation never raises on user input
        err = NodeError(
            code="malformed", message=f"could not check the workflow: {type(exc).__name__}: {exc}"
        )
        return CheckResult([err], None, None)


def _check(
    data: Any,
    registry: Registry,
    overrides: dict[str, Any],
    outputs: list[str] | None,
    files: Folders | None,
    pipelines: Resolver = no_library,
) -> CheckResult:
    errors: list[NodeError] = []
    if isinstance(data, Workflow):
        wf = data
    else:
        try:
            wf = parse_workflow(data, registry)
        except UiFormatError as exc:  # a ComfyUI UI-format workflow: one error per node it cannot take
            return CheckResult([_ui_error(p) for p in exc.problems], None, None)
        except WorkflowFormatError as exc:
            return CheckResult([NodeError(code="malformed", message=str(exc))], None, None)
        except ValidationError as exc:
            return CheckResult(_pydantic_errors(exc), None, None)

    if not wf.nodes:
        errors.append(NodeError(code="empty", message="the workflow has no nodes"))

    # Literal inputs per node after parameters and overrides.
    values: dict[str, dict[str, Any]] = {nid: dict(n.inputs) for nid, n in wf.nodes.items()}
    # "outer:inner.input" reaches a node inside a pipeline, unless a node has that id already (the flat
    # ids ComfyUI gives the nodes of its subgraphs look the same)
    inner_overrides = {
        k: v for k, v in overrides.items() if SEP in (nid := k.rpartition(".")[0]) and nid not in wf.nodes
    }
    overrides = {k: v for k, v in overrides.items() if k not in inner_overrides}
    parameters = _apply_parameters(wf, registry, values, overrides, errors)

    for nid, node in wf.nodes.items():
        if node.mode != ACTIVE and is_pipeline_type(node.type):
            errors.append(
                NodeError(
                    code="invalid_mode",
                    node=nid,
                    node_type=node.type,
                    message=f"a pipeline node cannot be {node.mode!r}ed yet; mute or bypass the nodes inside",
                )
            )
    flat = wf
    if uses_pipelines(wf) or inner_overrides:
        applied = wf.model_copy(
            update={
                "nodes": {nid: n.model_copy(update={"inputs": values[nid]}) for nid, n in wf.nodes.items()}
            }
        )
        expanded = expand(applied, pipelines)
        errors.extend(
            NodeError(
                code=p.code,
                message=p.message,
                node=p.node,
                node_type=p.node_type,
                input=p.input,
                severity="warning" if p.severity == "warning" else "error",
            )
            for p in expanded.problems
        )
        _check_pipeline_inputs(expanded.literals, errors)
        flat = expanded.workflow
        values = {nid: dict(n.inputs) for nid, n in flat.nodes.items()}
        _apply_inner_overrides(flat, registry, values, inner_overrides, errors)

    removed: dict[str, str] = {}
    if any(n.mode != ACTIVE for n in flat.nodes.values()):
        flat, values, removed = _apply_modes(flat, values, registry, errors)

    nodes: dict[str, GraphNode] = {}
    for nid, node in flat.nodes.items():
        gn = _check_node(nid, node.type, node.version, values[nid], flat, registry, errors, files)
        if gn is not None:
            gn.title = node.title
            nodes[nid] = gn

    cycles = len(errors)
    _check_cycles(flat, errors)
    if files is not None and len(errors) == cycles:
        errors.extend(flow_traits(nodes, files))

    output_ids = _check_outputs(flat, registry, outputs, errors, removed)
    _spare_unreached(flat, output_ids, errors)
    has_errors = any(e.severity == "error" for e in errors)
    graph = None if has_errors else Graph(wf, nodes, output_ids, parameters)
    return CheckResult(errors, graph, wf)


def _apply_modes(
    flat: Workflow, values: dict[str, dict[str, Any]], registry: Registry, errors: list[NodeError]
) -> tuple[Workflow, dict[str, dict[str, Any]], dict[str, str]]:
    """The workflow without its muted and bypassed nodes (links through bypassed ones passed on), the
    remaining nodes' inputs, and why each removed node does not run (engine/modes.py)."""

    def spec_of(nid: str) -> Any:
        cls = registry.get(flat.nodes[nid].type)
        return cls.spec if cls is not None else None

    resolved = resolve_modes({nid: n.mode for nid, n in flat.nodes.items()}, values, spec_of)
    errors.extend(
        NodeError(
            code=p.code,
            node=p.node,
            node_type=flat.nodes[p.node].type,
            input=p.input,
            message=p.message,
            severity=p.severity,
        )
        for p in resolved.problems
    )
    kept = {nid: n for nid, n in flat.nodes.items() if nid in resolved.inputs}
    return flat.model_copy(update={"nodes": kept}), resolved.inputs, resolved.removed


def _ui_error(problem: UiProblem) -> NodeError:
    message = problem.message
    if problem.code == "unknown_node_type":
        message = f"unknown node type {problem.node_type!r} (is the plugin that provides it installed?)"
    return NodeError(code=problem.code, node=problem.node, node_type=problem.node_type, message=message)


def _pydantic_errors(exc: ValidationError) -> list[NodeError]:
    out = []
    for e in exc.errors():
        loc = [str(x) for x in e.get("loc", ())]
        node = loc[1] if len(loc) >= 2 and loc[0] == "nodes" else None
        inp = loc[3] if len(loc) >= 4 and loc[0] == "nodes" and loc[2] == "inputs" else None
        where = ".".join(loc)
        out.append(
            NodeError(
                code="malformed", message=f"{where or 'workflow'}: {e.get('msg')}", node=node, input=inp
            )
        )
    return out


def _apply_parameters(
    wf: Workflow,
    registry: Registry,
    values: dict[str, dict[str, Any]],
    overrides: dict[str, Any],
    errors: list[NodeError],
) -> dict[str, Any]:
    resolved: dict[str, Any] = {}
    for pname, param in wf.parameters.items():
        if "." in pname or not pname:
            errors.append(
                NodeError(code="invalid_parameter", message=f"parameter name {pname!r} must not contain '.'")
            )
            continue
        socket = param.type not in T.PRIMITIVES and param.type != T.COMBO
        for node_id, input_name in param.target_pairs():
            node = wf.nodes.get(node_id)
            if not node_id or node is None:
                errors.append(
                    NodeError(
                        code="invalid_parameter",
                        message=f"parameter {pname!r} targets {node_id + '.' + input_name!r}: no node {node_id!r}",
                    )
                )
                continue
            cls = registry.get(node.type)
            spec = cls.spec.input(input_name) if cls else None
            if cls is not None and spec is None:
                errors.append(
                    NodeError(
                        code="invalid_parameter",
                        node=node_id,
                        node_type=node.type,
                        input=input_name,
                        message=f"parameter {pname!r} targets input {input_name!r}, which {node.type} does not have",
                    )
                )
            elif spec is not None and not _widget_accepts(spec, param.type) and spec.type != param.type:
                errors.append(
                    NodeError(
                        code="invalid_parameter",
                        node=node_id,
                        node_type=node.type,
                        input=input_name,
                        message=f"parameter {pname!r} is {param.type} but the input is {spec.type}",
                    )
                )
        if socket:  # a socket input of the workflow used as a pipeline: a link feeds it (engine/pipeline.py)
            if param.default is not None or pname in overrides:
                errors.append(
                    NodeError(
                        code="invalid_parameter",
                        input=pname,
                        message=f"parameter {pname!r} is a {param.type} input: it is connected when the "
                        "workflow is used as a pipeline, not given a value",
                    )
                )
            continue
        if pname in overrides:
            value = overrides[pname]
        elif param.default is not None:
            value = param.default
        else:
            continue
        # the parameter's own constraints (the targets' are checked with each node)
        value, problem = coerce_parameter(param, value)
        if problem is not None:
            errors.append(
                NodeError(code=problem[0], message=f"parameter {pname!r}: {problem[1]}", input=pname)
            )
            continue
        resolved[pname] = value
        for node_id, input_name in param.target_pairs():
            if node_id in values:
                values[node_id][input_name] = value
    for name, value in overrides.items():
        if name in wf.parameters:
            continue
        node_id, dot, input_name = name.rpartition(".")
        if not dot or node_id not in wf.nodes:
            known = ", ".join(sorted(wf.parameters)) or "(none)"
            errors.append(
                NodeError(
                    code="unknown_override",
                    message=f"{name!r} is neither an exposed parameter (known: {known}) nor NODE_ID.INPUT of an existing node",
                )
            )
            continue
        node = wf.nodes[node_id]
        cls = registry.get(node.type)
        if cls is not None and cls.spec.input(input_name) is None:
            errors.append(
                NodeError(
                    code="unknown_override",
                    node=node_id,
                    node_type=node.type,
                    input=input_name,
                    message=f"{node.type} has no input {input_name!r}",
                )
            )
            continue
        values[node_id][input_name] = value
    return resolved


def coerce_parameter(param: Parameter, value: Any) -> tuple[Any, tuple[str, str] | None]:
    """``value`` checked against a parameter's own type, range and choices (a workflow's exposed input, or
    a pipeline's): the coerced value and None, or the value and (code, message). A COMBO without its own
    choices is left to the inputs it targets."""
    pspec = parameter_spec(param)
    if pspec is None:
        return value, None
    coerced, problem = coerce_literal(pspec, value)
    return (value, problem) if problem is not None else (coerced, None)


def parameter_spec(param: Parameter) -> InputSpec | None:
    """The input spec a parameter's values are checked against; None for a COMBO without its own choices
    (left to the inputs it targets)."""
    if param.type == T.COMBO and param.choices is None:
        return None
    return InputSpec(
        name="value",
        type=param.type,
        min=param.min,
        max=param.max,
        choices=tuple(param.choices) if param.choices is not None else None,
    )


def _check_pipeline_inputs(literals: list[tuple[str, str, Parameter, Any]], errors: list[NodeError]) -> None:
    """The literals given to pipeline nodes' inputs, each against that input's own constraints (the inner
    inputs it reaches check theirs with their nodes). The instances of one definition share its parameters,
    so each parameter's spec is made once."""
    specs: dict[int, InputSpec | None] = {}  # by id: ``literals`` holds every parameter while this runs
    for nid, input_name, param, value in literals:
        if id(param) not in specs:
            specs[id(param)] = parameter_spec(param)
        spec = specs[id(param)]
        if spec is None:
            continue
        _, problem = coerce_literal(spec, value)
        if problem is not None:
            errors.append(NodeError(code=problem[0], message=problem[1], node=nid, input=input_name))


def _apply_inner_overrides(
    flat: Workflow,
    registry: Registry,
    values: dict[str, dict[str, Any]],
    overrides: dict[str, Any],
    errors: list[NodeError],
) -> None:
    """``"outer:inner.input"`` overrides, on the expanded graph's nodes."""
    for name, value in overrides.items():
        node_id, _, input_name = name.rpartition(".")
        node = flat.nodes.get(node_id)
        cls = registry.get(node.type) if node is not None else None
        if node is None or (cls is not None and cls.spec.input(input_name) is None):
            errors.append(
                NodeError(
                    code="unknown_override",
                    node=node_id if node is not None else None,
                    input=input_name if node is not None else None,
                    message=f"{name!r} names no input of a node inside a pipeline",
                )
            )
            continue
        values[node_id][input_name] = value


def _check_node(
    nid: str,
    type_name: str,
    version: str | None,
    given: dict[str, Any],
    wf: Workflow,
    registry: Registry,
    errors: list[NodeError],
    files: Folders | None = None,
) -> GraphNode | None:
    cls = registry.get(type_name)
    if cls is None:
        errors.append(
            NodeError(
                code="unknown_node_type",
                node=nid,
                node_type=type_name,
                message=f"unknown node type {type_name!r} (is the plugin that provides it installed?)",
            )
        )
        return None
    spec = cls.spec
    if version is not None and version.split(".")[0] != spec.version.split(".")[0]:
        errors.append(
            NodeError(
                code="node_version",
                node=nid,
                node_type=type_name,
                severity="warning",
                message=f"saved with {type_name} {version}, running {spec.version}: inputs or results may differ",
            )
        )
    literals: dict[str, Any] = {}
    links: dict[str, tuple[str, int]] = {}

    def err(code: str, message: str, input: str | None = None, severity: str = "error") -> None:
        errors.append(
            NodeError(
                code=code, node=nid, node_type=type_name, input=input, message=message, severity=severity
            )
        )

    for ispec in spec.inputs:
        name = ispec.name
        if name not in given or given[name] is None:
            if ispec.has_default and ispec.is_widget:
                value, problem = coerce_literal(ispec, ispec.default, files)
                if problem is None:
                    literals[name] = value
                elif not ispec.optional:
                    err("missing_input", f"no value given and the default is not valid: {problem[1]}", name)
            elif not ispec.optional:
                err(
                    "missing_input",
                    f"required {ispec.type} input is not connected"
                    if not ispec.is_widget
                    else f"required {ispec.type} value is missing",
                    name,
                )
            continue
        value = given[name]
        if isinstance(value, Link):
            src = wf.nodes.get(value.node)
            if src is None:
                err("link_missing_node", f"linked to node {value.node!r}, which does not exist", name)
                continue
            src_cls = registry.get(src.type)
            if src_cls is None:
                continue  # reported on the source node
            index = src_cls.spec.output_index(value.output)
            if index is None:
                outs = ", ".join(f"{i}:{o.name}" for i, o in enumerate(src_cls.spec.outputs)) or "none"
                err(
                    "link_missing_output",
                    f"linked to output {value.output!r} of node {value.node} ({src.type}), which has outputs: {outs}",
                    name,
                )
                continue
            out_type = src_cls.spec.outputs[index].type
            ok = _widget_accepts(ispec, out_type) if ispec.is_widget else T.compatible(out_type, ispec.type)
            if not ok:
                err(
                    "type_mismatch",
                    f"expects {ispec.type} but is linked to {src.type} output "
                    f"{src_cls.spec.outputs[index].name!r} ({out_type}) of node {value.node}",
                    name,
                )
                continue
            links[name] = (value.node, index)
        else:
            coerced, problem = coerce_literal(ispec, value, files)
            if problem is not None:
                err(problem[0], problem[1], name)
                continue
            literals[name] = coerced
    for name in given:
        if spec.input(name) is None:
            err(
                "unknown_input", f"{type_name} has no input {name!r}; it is ignored", name, severity="warning"
            )
    if cls.has_check_inputs and files is not None:
        try:
            problems = cls.check_inputs(files, **literals)
        except Exception as exc:  # a broken check is a problem to report, not to raise
            problems = [(None, f"could not check the inputs: {type(exc).__name__}: {exc}")]
        for input_name, message in problems:
            err("invalid_value", message, input_name)
    return GraphNode(nid, cls, literals, links)


def _check_cycles(wf: Workflow, errors: list[NodeError]) -> None:
    g = nx.DiGraph()
    for nid, node in wf.nodes.items():
        for value in node.inputs.values():
            if isinstance(value, Link) and value.node in wf.nodes:
                g.add_edge(value.node, nid)
    for component in nx.strongly_connected_components(g):
        if len(component) > 1 or any(g.has_edge(n, n) for n in component):
            members = sorted(component)
            errors.append(
                NodeError(
                    code="cycle",
                    node=members[0],
                    node_type=wf.nodes[members[0]].type,
                    message="links form a cycle through nodes " + ", ".join(members),
                )
            )


#: problems that refuse a workflow wherever they are (ComfyUI, too, refuses unknown node types anywhere)
REFUSED_ANYWHERE = frozenset({"unknown_node_type", "cycle", "malformed"})


def _spare_unreached(wf: Workflow, outputs: list[str], errors: list[NodeError]) -> None:
    """Problems of nodes that no output needs become warnings: those nodes do not run, so (as ComfyUI,
    which checks only what its outputs need) they do not refuse the workflow."""
    reached: set[str] = set()
    stack = list(outputs)
    while stack:
        nid = stack.pop()
        if nid in reached or nid not in wf.nodes:
            continue
        reached.add(nid)
        stack += [v.node for v in wf.nodes[nid].inputs.values() if isinstance(v, Link)]
    for i, e in enumerate(errors):
        if (
            e.severity == "error"
            and e.node in wf.nodes
            and e.node not in reached
            and e.code not in REFUSED_ANYWHERE
        ):
            message = f"{e.message} (the node reaches no output, so it does not run)"
            errors[i] = e.model_copy(update={"severity": "warning", "message": message})


def _check_outputs(
    wf: Workflow,
    registry: Registry,
    outputs: list[str] | None,
    errors: list[NodeError],
    removed: dict[str, str] | None = None,
) -> list[str]:
    if outputs is not None:
        chosen = []
        for nid in outputs:
            if removed and nid in removed:
                errors.append(
                    NodeError(code="not_run", node=str(nid), message=f"cannot run up to it: {removed[nid]}")
                )
            elif nid not in wf.nodes:
                errors.append(
                    NodeError(code="unknown_output", node=str(nid), message=f"no node {nid!r} to run up to")
                )
            else:
                chosen.append(nid)
        return chosen
    chosen = [
        nid
        for nid, n in wf.nodes.items()
        if (cls := registry.get(n.type)) is not None and cls.spec.output_node
    ]
    if not chosen and wf.nodes and all(registry.get(n.type) is not None for n in wf.nodes.values()):
        errors.append(
            NodeError(code="no_outputs", message="the workflow has no output node (such as SaveImage)")
        )
    return chosen
