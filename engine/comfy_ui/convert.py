"""ComfyUI's UI format -> Atelier's workflow, by ComfyUI's own rules for building a prompt from its canvas.

* Widget values map onto each node type's declared widget inputs in declaration order; the frontend-only
  "control after generate" value after a seed-like input (``"randomize"``, or a boolean toggle in old
  files) and a Load Image node's upload button value are skipped; the control mode goes to the layout.
* A linked input takes the link's origin, stepping through: ``Reroute`` nodes (to what feeds them);
  bypassed nodes (mode 4: to the bypassed node's input at the output's own index when its type fits, else
  its first input of exactly the fed input's type, else the first that fits, as ComfyUI's frontend does;
  nothing when that input is unlinked or none fits); subgraph boundaries (an unlinked subgraph input takes
  the instance's widget value) and group nodes. A link from a ``PrimitiveNode`` is no link: the input
  keeps the widget value (the primitive's when the target has none).
* ``Note``, ``MarkdownNote``, ``Reroute`` and ``PrimitiveNode`` are no nodes of the result; nor are muted
  nodes (mode 2): an input fed by a muted node loses that link, and a node whose required input was fed so
  is dropped too (it could not run), and so on downstream.
* A node type the registry lacks is a :class:`UiProblem` for that node; all of them are reported together.
* Subgraphs (``definitions.subgraphs``) become Atelier pipelines: each definition one embedded pipeline
  (its inputs: widget-typed ones as literal parameters with the inner widget's type, limits and value as
  default; the others as socket parameters; its outputs: what feeds the subgraph's output node), each
  instance a ``pipeline:NAME`` node. Expanded, a pipeline node's inner ids are ComfyUI's own (``"5:3"``).
  A subgraph that hands an input straight to an output (no node between: a pipeline cannot declare that)
  is expanded in place instead, as ComfyUI's frontend does for every subgraph.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .. import types as T
from ..modes import bypass_input, cut_unfed, required_links
from ..node import InputSpec, NodeSpec
from ..pipeline import PREFIX as PIPELINE_PREFIX
from ..registry import Registry
from ..workflow import (
    CURRENT_VERSION,
    FORMAT,
    Link,
    Metadata,
    Parameter,
    PipelineOutput,
    Workflow,
    WorkflowFormatError,
    WorkflowNode,
)
from .graph import (
    GROUP_NODE,
    PIPELINE_INPUTS,
    SUBGRAPH_INPUTS,
    SUBGRAPH_INSTANCE,
    SUBGRAPH_OUTPUT_ID,
    FlatGraph,
    FlatInput,
    FlatNode,
    Source,
    flatten,
    flatten_subgraph,
    promoted_inputs,
    subgraph_definitions,
)

#: Frontend-only node types that hold no computation.
NOTE_TYPES = frozenset({"Note", "MarkdownNote"})
REROUTE = "Reroute"
PRIMITIVE = "PrimitiveNode"
VIRTUAL_TYPES = NOTE_TYPES | {REROUTE, PRIMITIVE}

MUTED = 2
BYPASSED = 4

CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})
#: inputs ComfyUI's frontend gives a control-after-generate widget whatever the node declares
SEED_NAMES = frozenset({"seed", "noise_seed"})


@dataclass(frozen=True)
class UiProblem:
    """Why one node of a UI-format workflow cannot be converted."""

    node: str
    node_type: str
    code: str
    message: str


class UiFormatError(WorkflowFormatError):
    """The UI-format workflow has nodes that cannot be converted; ``problems`` names each of them."""

    def __init__(self, problems: list[UiProblem]) -> None:
        self.problems = problems
        listed = "; ".join(f"node {p.node} ({p.node_type}): {p.message}" for p in problems[:5])
        more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
        super().__init__(f"cannot convert this ComfyUI workflow: {listed}{more}")


def is_ui_format(data: Any) -> bool:
    """Whether ``data`` looks like ComfyUI's UI format (a list of nodes and a list of links)."""
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def from_comfy_ui(data: dict[str, Any], registry: Registry) -> Workflow:
    """Atelier's workflow for a UI-format workflow. Raises :class:`UiFormatError` naming every node that
    cannot be converted, or :class:`WorkflowFormatError` for data that is not a UI-format workflow."""
    if not is_ui_format(data):
        raise WorkflowFormatError("not a ComfyUI UI-format workflow (expected 'nodes' and 'links' lists)")
    try:
        return _convert(data, registry)
    except WorkflowFormatError:
        raise
    except (TypeError, KeyError, ValueError, AttributeError, IndexError) as exc:  # a shape no check foresaw
        raise WorkflowFormatError(
            f"malformed ComfyUI UI-format workflow: {type(exc).__name__}: {exc}"
        ) from exc


def _convert(data: dict[str, Any], registry: Registry) -> Workflow:
    subgraphs = subgraph_definitions(data)
    keep = set(subgraphs)
    while True:  # drop from ``keep`` each subgraph no pipeline can stand for, until all convert
        try:
            return _convert_with(data, registry, subgraphs, frozenset(keep))
        except _Passthrough as exc:
            keep.discard(exc.subgraph)


class _Passthrough(Exception):
    """A subgraph output fed straight by one of its inputs: it cannot be a pipeline."""

    def __init__(self, subgraph: str) -> None:
        self.subgraph = subgraph


@dataclass
class _Subgraphs:
    """The subgraphs converted as pipelines: their names and the definitions made so far."""

    raw: dict[str, dict[str, Any]]
    keep: frozenset[str]
    names: dict[str, str]
    definitions: dict[str, Workflow]
    #: subgraphs whose conversion found problems (reported once)
    failed: set[str] = field(default_factory=set)

    def param_names(self, sid: str) -> list[str]:
        return _unique([str(i.get("name", k)) for k, i in enumerate(self.inputs(sid))])

    def output_names(self, sid: str) -> list[str]:
        return _unique([str(o.get("name", k)) for k, o in enumerate(self.raw[sid].get("outputs") or [])])

    def inputs(self, sid: str) -> list[dict[str, Any]]:
        return [i for i in (self.raw[sid].get("inputs") or []) if isinstance(i, dict)]


def _unique(names: list[str]) -> list[str]:
    """Names usable as parameter/output names: no '.', none twice."""
    out: list[str] = []
    for name in names:
        base = name.replace(".", "_").strip() or "input"
        candidate, n = base, 2
        while candidate in out:
            candidate, n = f"{base}_{n}", n + 1
        out.append(candidate)
    return out


def _pipeline_names(subgraphs: dict[str, dict[str, Any]], keep: frozenset[str]) -> dict[str, str]:
    names: dict[str, str] = {}
    for sid in sorted(keep):
        raw_name = subgraphs[sid].get("name")
        base = re.sub(r"[^A-Za-z0-9_-]+", "_", raw_name if isinstance(raw_name, str) else "").strip("_")
        base = base or f"subgraph_{sid[:8]}"
        candidate, n = base, 2
        while candidate in names.values():
            candidate, n = f"{base}_{n}", n + 1
        names[sid] = candidate
    return names


def _convert_with(
    data: dict[str, Any], registry: Registry, subgraphs: dict[str, dict[str, Any]], keep: frozenset[str]
) -> Workflow:
    sgs = _Subgraphs(subgraphs, keep, _pipeline_names(subgraphs, keep), {})
    problems: list[UiProblem] = []
    for sid in sorted(keep):
        _definition(data, sid, registry, sgs, problems, ())
    graph = flatten(data, keep)
    nodes, controls, _ = _convert_level(graph, registry, sgs, problems, "")
    if problems:
        raise UiFormatError(problems)
    ui = _layout(data, graph, nodes, controls)
    used = _used_definitions(nodes, sgs)
    return Workflow(
        format=FORMAT,
        version=CURRENT_VERSION,
        metadata=Metadata(),
        parameters={},
        nodes=nodes,
        ui=ui,
        definitions={name: sgs.definitions[name].to_dict() for name in sorted(used)},
    )


def _used_definitions(nodes: dict[str, WorkflowNode], sgs: _Subgraphs) -> set[str]:
    """The pipeline names the nodes use, directly or inside the definitions they use."""
    todo = [n.type[len(PIPELINE_PREFIX) :] for n in nodes.values() if n.type.startswith(PIPELINE_PREFIX)]
    used: set[str] = set()
    while todo:
        name = todo.pop()
        if name in used or name not in sgs.definitions:
            continue
        used.add(name)
        todo.extend(
            n.type[len(PIPELINE_PREFIX) :]
            for n in sgs.definitions[name].nodes.values()
            if n.type.startswith(PIPELINE_PREFIX)
        )
    return used


def _definition(
    data: dict[str, Any],
    sid: str,
    registry: Registry,
    sgs: _Subgraphs,
    problems: list[UiProblem],
    inside: tuple[str, ...],
) -> Workflow | None:
    """Subgraph ``sid`` as a pipeline definition (made once; the subgraphs it uses first)."""
    name = sgs.names[sid]
    if name in sgs.definitions or sid in sgs.failed:
        return sgs.definitions.get(name)
    if sid in inside:
        raise WorkflowFormatError(f"subgraph {sid} contains itself")
    raw = sgs.raw[sid]
    for node in raw.get("nodes") or []:
        if isinstance(node, dict) and node.get("type") in sgs.keep:
            _definition(data, node["type"], registry, sgs, problems, (*inside, sid))
    graph = flatten_subgraph(data, sid, sgs.keep)
    before = len(problems)
    nodes, controls, targets = _convert_level(graph, registry, sgs, problems, f"inside subgraph {name!r}: ")
    if len(problems) > before:
        sgs.failed.add(sid)
        return None
    parameters: dict[str, Parameter] = {}
    for k, (pname, sgi) in enumerate(zip(sgs.param_names(sid), sgs.inputs(sid), strict=True)):
        fed = [(nid, inp) for nid, inp in targets.get(k, []) if nid in nodes]
        parameters[pname] = _parameter(str(sgi.get("type", "*")), fed, nodes, registry, sgs)
    outputs: dict[str, PipelineOutput] = {}
    out_types = [str(o.get("type", "*")) for o in raw.get("outputs") or []]
    for oname, otype, source in zip(sgs.output_names(sid), out_types, graph.outputs, strict=False):
        fed = _follow(graph, otype, source) if source is not None else None
        if isinstance(fed, _Param):
            raise _Passthrough(sid)
        if not isinstance(fed, Source) or fed.node not in nodes:
            continue  # an output nothing feeds: a link from it stays unconnected
        link = _as_link(fed, nodes, registry, sgs)
        outputs[oname] = PipelineOutput(type=otype, node=link.node, output=link.output)
    description = raw.get("description")
    wf = Workflow(
        metadata=Metadata(
            name=str(raw.get("name") or name),
            description=description if isinstance(description, str) else "",
        ),
        parameters=parameters,
        nodes=nodes,
        outputs=outputs,
        ui=_layout(raw, graph, nodes, controls),
    )
    sgs.definitions[name] = wf
    return wf


def _parameter(
    declared: str,
    fed: list[tuple[str, FlatInput]],
    nodes: dict[str, WorkflowNode],
    registry: Registry,
    sgs: _Subgraphs,
) -> Parameter:
    """A pipeline input from a subgraph input: literal (typed and limited as the first widget it feeds, its
    value the default) or a socket."""
    targets = [f"{nid}.{inp.name}" for nid, inp in fed]
    for nid, inp in fed:
        node = nodes[nid]
        if node.type.startswith(PIPELINE_PREFIX):
            inner = sgs.definitions.get(node.type[len(PIPELINE_PREFIX) :])
            param = inner.parameters.get(inp.name) if inner else None
            if param is not None and (param.type in T.PRIMITIVES or param.type == T.COMBO):
                value = node.inputs.get(inp.name, param.default)
                return param.model_copy(update={"targets": targets, "default": value})
            continue
        cls = registry.get(node.type)
        spec = cls.spec.input(inp.name) if cls else None
        if spec is not None and spec.is_widget:
            return Parameter(
                type=spec.type,
                targets=targets,
                default=node.inputs.get(inp.name, spec.default),
                min=spec.min,
                max=spec.max,
                step=spec.step,
                choices=list(spec.choices) if spec.choices else None,
                description=spec.description,
            )
    return Parameter(type=declared if declared not in ("", "*") else T.ANY, targets=targets)


def _instance_widgets(node: FlatNode, sid: str, sgs: _Subgraphs) -> dict[str, Any]:
    """A kept subgraph instance's widget values (for its unlinked inputs that feed widgets inside), by input."""
    values = node.widgets_values
    names = sgs.param_names(sid)
    raw_names = [str(i.get("name")) for i in sgs.inputs(sid)]
    out: dict[str, Any] = {}
    for index, k in enumerate(promoted_inputs(sgs.raw[sid])):
        if k >= len(names):
            continue
        if isinstance(values, dict) and raw_names[k] in values:
            out[names[k]] = values[raw_names[k]]
        elif isinstance(values, list) and index < len(values):
            out[names[k]] = values[index]
    return out


def _instance_input_name(node: FlatNode, position: int, sid: str, sgs: _Subgraphs) -> str | None:
    """The pipeline input an instance's input stands for: by name, else (no names in common) by position."""
    raw_names = [str(i.get("name")) for i in sgs.inputs(sid)]
    names = sgs.param_names(sid)
    name = node.inputs[position].name
    if name in raw_names:
        return names[raw_names.index(name)]
    if not {i.name for i in node.inputs} & set(raw_names) and position < len(names):
        return names[position]
    return None


def _convert_level(
    graph: FlatGraph, registry: Registry, sgs: _Subgraphs, problems: list[UiProblem], where: str
) -> tuple[dict[str, WorkflowNode], dict[str, dict[str, str]], dict[int, list[tuple[str, FlatInput]]]]:
    """The nodes of one graph (the workflow's, or a subgraph's own), the control modes of their seeds, and
    (for a subgraph) which inner inputs each of its inputs feeds."""
    nodes: dict[str, WorkflowNode] = {}
    controls: dict[str, dict[str, str]] = {}
    targets: dict[int, list[tuple[str, FlatInput]]] = {}
    widget_values = _group_widget_values(graph, registry, problems)
    for nid, node in graph.nodes.items():
        if node.kind is not None or node.type in VIRTUAL_TYPES or node.mode in (MUTED, BYPASSED):
            continue
        if node.subgraph is not None:
            type_name = PIPELINE_PREFIX + sgs.names[node.subgraph]
            inputs = _instance_widgets(node, node.subgraph, sgs)
        else:
            cls = registry.get(node.type)
            if cls is None:
                problems.append(
                    UiProblem(
                        nid, node.type, "unknown_node_type", f"{where}Atelier has no node type {node.type!r}"
                    )
                )
                continue
            type_name = node.type
            values = widget_values.get(nid, node.widgets_values)
            inputs, control = _widget_inputs(cls.spec, values)
            if control:
                controls[nid] = control
        for position, inp in enumerate(node.inputs):
            if inp.source is None:
                continue
            name = inp.name
            if node.subgraph is not None:
                found = _instance_input_name(node, position, node.subgraph, sgs)
                if found is None:
                    continue
                name = found
                inp = FlatInput(name=name, type=inp.type, source=inp.source, widget=inp.widget)
            fed = _follow(graph, inp.type, inp.source)
            if fed is None:
                continue  # an unlinked bypass, a dangling link: a widget keeps its value, a socket stays empty
            if isinstance(fed, _Param):
                targets.setdefault(fed.slot, []).append((nid, inp))
                continue
            if isinstance(fed, _Literal):
                if fed.wins:
                    inputs[name] = fed.value
                else:
                    inputs.setdefault(name, fed.value)
                continue
            inputs[name] = fed
        nodes[nid] = WorkflowNode(type=type_name, inputs=inputs)
        if node.title:
            nodes[nid].title = node.title
    _drop_unfed(nodes, registry)
    for wnode in nodes.values():
        wnode.inputs = {k: _as_link(v, nodes, registry, sgs) for k, v in wnode.inputs.items()}
    return nodes, controls, targets


@dataclass(frozen=True)
class _Param:
    """An input fed by the enclosing subgraph's input ``slot`` (a pipeline input)."""

    slot: int


@dataclass(frozen=True)
class _Literal:
    """A value instead of a link: a primitive's (the target's own widget value wins) or a subgraph
    instance's widget for an unlinked subgraph input (it wins)."""

    value: Any
    wins: bool = False


def _bypass_input(node: FlatNode, slot: int, want: str) -> int | None:
    """Which input of a bypassed node stands in for its output ``slot`` feeding an input of type ``want``
    (the engine's rule for bypassed nodes, engine/modes.py)."""
    out_type = node.output_types[slot] if slot < len(node.output_types) else "*"
    return bypass_input([i.type for i in node.inputs], out_type, slot, want)


def _follow(graph: FlatGraph, want_type: str, source: Source) -> Source | _Literal | _Param | None:
    """What really feeds an input of type ``want_type`` linked to ``source`` (see the module's docstring)."""
    seen: set[Source] = set()
    current: Source | None = source
    while current is not None:
        if current in seen:
            return None
        seen.add(current)
        origin = graph.nodes.get(current.node)
        if origin is None:
            return None  # a link to a node that is not there: ComfyUI drops it
        if origin.kind == SUBGRAPH_INSTANCE:
            outs = graph.nodes.get(f"{origin.id}:{SUBGRAPH_OUTPUT_ID}")
            ok = outs is not None and current.slot < len(outs.inputs)
            current = outs.inputs[current.slot].source if outs is not None and ok else None
        elif origin.kind == SUBGRAPH_INPUTS:
            fed = origin.outputs.get(current.slot)
            if fed is None:
                if current.slot in origin.widget_values:  # the instance's widget for this input
                    return _Literal(origin.widget_values[current.slot], wins=True)
                return None
            current = fed
        elif origin.kind == PIPELINE_INPUTS:
            return _Param(current.slot)
        elif origin.kind == GROUP_NODE:
            current = origin.outputs.get(current.slot)
        elif origin.type == REROUTE:
            current = origin.inputs[0].source if origin.inputs else None
        elif origin.type == PRIMITIVE:
            values = origin.widgets_values
            return _Literal(values[0]) if isinstance(values, list) and values else None
        elif origin.mode == BYPASSED:
            match = _bypass_input(origin, current.slot, want_type)
            if match is None:
                return None  # no input stands in: the input goes without (ComfyUI warns)
            current = origin.inputs[match].source
        else:
            return current
    return None


def _is_control(value: Any) -> bool:
    return isinstance(value, bool) or (isinstance(value, str) and value in CONTROL_VALUES)


def _has_control(spec: InputSpec) -> bool:
    return spec.control_after_generate or (spec.type == T.INT and spec.name in SEED_NAMES)


def widget_specs(spec: NodeSpec) -> list[InputSpec]:
    return [i for i in spec.inputs if i.is_widget]


def _widget_inputs(spec: NodeSpec, values: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """Literal inputs from a node's ``widgets_values``, and the control modes of its seeds."""
    inputs: dict[str, Any] = {}
    control: dict[str, str] = {}
    if isinstance(values, dict):  # by name (some newer files)
        for w in widget_specs(spec):
            if w.name in values:
                inputs[w.name] = values[w.name]
        return inputs, control
    if not isinstance(values, list):
        return inputs, control
    widgets = widget_specs(spec)
    excess = len(values) - len(widgets)  # frontend-only values the list carries
    pos = 0
    for n, w in enumerate(widgets):
        if pos >= len(values):
            break
        inputs[w.name] = values[pos]
        pos += 1
        if pos >= len(values):
            break
        nxt = values[pos]
        if _has_control(w) and _is_control(nxt):
            following = widgets[n + 1] if n + 1 < len(widgets) else None
            # an old file's boolean toggle, unless it is the next (boolean) widget's own value
            if isinstance(nxt, str) or following is None or following.type != T.BOOLEAN or excess > 0:
                if isinstance(nxt, str):
                    control[w.name] = nxt
                elif nxt:
                    control[w.name] = "randomize"
                pos += 1
                excess -= 1
        elif w.type == T.COMBO and w.name == "image" and nxt == "image" and excess > 0:
            pos += 1  # Load Image's upload button
            excess -= 1
    return inputs, control


def _group_widget_values(graph: FlatGraph, registry: Registry, problems: list[UiProblem]) -> dict[str, Any]:
    """The widget values of group nodes' inner nodes: the group node's list, cut node by node."""
    out: dict[str, Any] = {}
    for gid, group in graph.nodes.items():
        if group.kind != GROUP_NODE or not isinstance(group.widgets_values, list):
            continue
        values = list(group.widgets_values)
        inner = [
            n
            for nid, n in graph.nodes.items()
            if nid.startswith(f"{gid}:") and nid.count(":") == gid.count(":") + 1
        ]
        for node in inner:
            if node.type in VIRTUAL_TYPES:
                if node.type == PRIMITIVE and values:
                    node.widgets_values = [values.pop(0)]
                continue
            cls = registry.get(node.type)
            if cls is None:
                continue  # reported with the other unknown types
            take: list[Any] = []
            for w in widget_specs(cls.spec):
                if not values:
                    break
                take.append(values.pop(0))
                if _has_control(w) and values and _is_control(values[0]):
                    take.append(values.pop(0))
            out[node.id] = take
    return out


def _drop_unfed(nodes: dict[str, WorkflowNode], registry: Registry) -> None:
    """Cut links to nodes not in the result (muted ones); drop nodes that thereby lose a required input."""

    def required(nid: str) -> set[str]:
        cls = registry.get(nodes[nid].type)
        return required_links(cls.spec) if cls else set()

    inputs = {nid: n.inputs for nid, n in nodes.items()}
    for nid in cut_unfed(inputs, required, lambda v: v.node if isinstance(v, Source) else None):
        del nodes[nid]


def _as_link(value: Any, nodes: dict[str, WorkflowNode], registry: Registry, sgs: _Subgraphs) -> Any:
    if not isinstance(value, Source):
        return value
    origin = nodes[value.node]
    if origin.type.startswith(PIPELINE_PREFIX):
        name = origin.type[len(PIPELINE_PREFIX) :]
        sid = next((k for k, v in sgs.names.items() if v == name), None)
        names = sgs.output_names(sid) if sid is not None else []
        return Link(node=value.node, output=names[value.slot] if 0 <= value.slot < len(names) else value.slot)
    cls = registry.get(origin.type)
    outputs = cls.spec.outputs if cls else ()
    output: str | int = outputs[value.slot].name if 0 <= value.slot < len(outputs) else value.slot
    return Link(node=value.node, output=output)


def _xy(value: Any) -> list[float] | None:
    if isinstance(value, dict):
        value = [value.get("0"), value.get("1")]
    if isinstance(value, list) and len(value) >= 2 and all(isinstance(v, (int, float)) for v in value[:2]):
        return [float(value[0]), float(value[1])]
    return None


def _layout(
    data: dict[str, Any],
    graph: FlatGraph,
    nodes: dict[str, WorkflowNode],
    controls: dict[str, dict[str, str]],
) -> dict[str, Any]:
    """The canvas layout of the kept top-level nodes (positions, sizes, colours, groups, seed modes)."""
    positions: dict[str, list[float]] = {}
    sizes: dict[str, list[float]] = {}
    colors: dict[str, dict[str, str]] = {}
    collapsed: list[str] = []
    for nid in graph.top:
        if nid not in nodes:
            continue
        raw = graph.nodes[nid].raw
        if (pos := _xy(raw.get("pos"))) is not None:
            positions[nid] = pos
        if (size := _xy(raw.get("size"))) is not None:
            sizes[nid] = size
        color = {k: raw[k] for k in ("color", "bgcolor") if isinstance(raw.get(k), str)}
        if color:
            colors[nid] = color
        flags = raw.get("flags")
        if isinstance(flags, dict) and flags.get("collapsed"):
            collapsed.append(nid)
    ui: dict[str, Any] = {}
    if positions:
        ui["positions"] = positions
    if sizes:
        ui["sizes"] = sizes
    if colors:
        ui["colors"] = colors
    if collapsed:
        ui["collapsed"] = collapsed
    groups = [
        {
            "title": str(g.get("title", "")),
            "bounding": g["bounding"],
            **({"color": g["color"]} if "color" in g else {}),
        }
        for g in (data.get("groups") if isinstance(data.get("groups"), list) else [])
        if isinstance(g, dict) and isinstance(g.get("bounding"), list)
    ]
    if groups:
        ui["groups"] = groups
    kept = {nid: c for nid, c in controls.items() if nid in nodes and any(m != "fixed" for m in c.values())}
    if kept:
        ui["controls"] = {nid: {k: m for k, m in c.items() if m != "fixed"} for nid, c in kept.items()}
    return ui
