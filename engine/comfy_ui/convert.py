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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import types as T
from ..modes import bypass_input, cut_unfed, required_links
from ..node import InputSpec, NodeSpec
from ..registry import Registry
from ..workflow import CURRENT_VERSION, FORMAT, Link, Metadata, Workflow, WorkflowFormatError, WorkflowNode
from .graph import (
    GROUP_NODE,
    SUBGRAPH_INPUTS,
    SUBGRAPH_INSTANCE,
    SUBGRAPH_OUTPUT_ID,
    FlatGraph,
    FlatNode,
    Source,
    flatten,
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
    graph = flatten(data)
    problems: list[UiProblem] = []
    nodes: dict[str, WorkflowNode] = {}
    controls: dict[str, dict[str, str]] = {}
    widget_values = _group_widget_values(graph, registry, problems)
    for nid, node in graph.nodes.items():
        if node.kind is not None or node.type in VIRTUAL_TYPES or node.mode in (MUTED, BYPASSED):
            continue
        cls = registry.get(node.type)
        if cls is None:
            problems.append(
                UiProblem(nid, node.type, "unknown_node_type", f"Atelier has no node type {node.type!r}")
            )
            continue
        values = widget_values.get(nid, node.widgets_values)
        inputs, control = _widget_inputs(cls.spec, values)
        if control:
            controls[nid] = control
        for inp in node.inputs:
            if inp.source is None:
                continue
            fed = _follow(graph, inp.type, inp.source)
            if fed is None:
                continue  # an unlinked bypass, a dangling link: a widget keeps its value, a socket stays empty
            if isinstance(fed, _Literal):
                if fed.wins:
                    inputs[inp.name] = fed.value
                else:
                    inputs.setdefault(inp.name, fed.value)
                continue
            inputs[inp.name] = fed
        nodes[nid] = WorkflowNode(type=node.type, inputs=inputs)
        if node.title:
            nodes[nid].title = node.title
    if problems:
        raise UiFormatError(problems)
    _drop_unfed(nodes, registry)
    for wnode in nodes.values():
        wnode.inputs = {k: _as_link(v, nodes, registry) for k, v in wnode.inputs.items()}
    ui = _layout(data, graph, nodes, controls)
    return Workflow(
        format=FORMAT, version=CURRENT_VERSION, metadata=Metadata(), parameters={}, nodes=nodes, ui=ui
    )


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


def _follow(graph: FlatGraph, want_type: str, source: Source) -> Source | _Literal | None:
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


def _as_link(value: Any, nodes: dict[str, WorkflowNode], registry: Registry) -> Any:
    if not isinstance(value, Source):
        return value
    origin = nodes[value.node]
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
