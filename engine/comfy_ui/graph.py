"""ComfyUI's UI format as one flat graph: links resolved by id, subgraphs and group nodes expanded.

A UI-format workflow is ``{"nodes": [...], "links": [...], "extra": {"groupNodes": {...}},
"definitions": {"subgraphs": [...]}}``. A link is ``[id, origin id, origin slot, target id, target slot,
type]`` (or the same as an object). A node's ``inputs`` name the link feeding each input; its
``widgets_values`` hold its widgets' values by position (or by name).

Flattening gives every node a string id as ComfyUI's API format has it: top-level nodes keep theirs, the
nodes inside a subgraph instance or group node ``I`` become ``"I:inner"`` (nested: ``"I:J:inner"``).
Each input holds the source that feeds it (:class:`Source`), which may still be a virtual node: a
subgraph instance, a subgraph's input node, a group node; the converter steps through those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..workflow import WorkflowFormatError

#: The ids the subgraph format gives a subgraph's own input and output nodes.
SUBGRAPH_INPUT_ID = -10
SUBGRAPH_OUTPUT_ID = -20

#: Node kinds of the flat graph that are not nodes of the API format.
SUBGRAPH_INSTANCE = "subgraph instance"
SUBGRAPH_INPUTS = "subgraph inputs"
SUBGRAPH_OUTPUTS = "subgraph outputs"
GROUP_NODE = "group node"
#: the input node of a subgraph converted on its own (as a pipeline): its output k is the pipeline's input k
PIPELINE_INPUTS = "pipeline inputs"


@dataclass(frozen=True)
class Source:
    """What feeds an input: output ``slot`` of node ``node`` (a flat id)."""

    node: str
    slot: int


@dataclass
class FlatInput:
    name: str
    type: str
    source: Source | None = None
    #: the widget this input stands for (a widget converted to an input), if any
    widget: str | None = None


@dataclass
class FlatNode:
    id: str
    type: str
    mode: int = 0
    title: str | None = None
    inputs: list[FlatInput] = field(default_factory=list)
    widgets_values: list[Any] | dict[str, Any] | None = None
    #: None for a node of the API format; else one of the virtual kinds above
    kind: str | None = None
    #: for virtual nodes: output slot -> source (a group node's outputs, a subgraph input node's slots)
    outputs: dict[int, Source | None] = field(default_factory=dict)
    #: the types of its outputs as the file has them
    output_types: list[str] = field(default_factory=list)
    #: for a subgraph's input node: the instance it belongs to, and its widget values by subgraph input
    instance: str | None = None
    widget_values: dict[int, Any] = field(default_factory=dict)
    #: an instance of a subgraph kept whole (converted as a pipeline node): the subgraph's id
    subgraph: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    def input_index(self, name: str) -> int | None:
        for n, i in enumerate(self.inputs):
            if i.name == name:
                return n
        return None


@dataclass
class FlatGraph:
    nodes: dict[str, FlatNode] = field(default_factory=dict)
    #: top-level node ids in file order (their layout is what the canvas shows)
    top: list[str] = field(default_factory=list)
    #: a subgraph flattened on its own (:func:`flatten_subgraph`): what feeds each of its outputs
    outputs: list[Source | None] = field(default_factory=list)


# -- parsing -------------------------------------------------------------------------------------------


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise WorkflowFormatError(f"{what} must be a number, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise WorkflowFormatError(f"{what} must be a number, got {value!r}") from None


def _links(raw_links: Any, where: str) -> dict[int, tuple[int, int]]:
    """link id -> (origin id, origin slot)."""
    out: dict[int, tuple[int, int]] = {}
    if raw_links is None:
        return out
    if not isinstance(raw_links, list):
        raise WorkflowFormatError(f"{where}'links' must be a list")
    for link in raw_links:
        if isinstance(link, list) and len(link) >= 5:
            lid, origin, slot = link[0], link[1], link[2]
        elif isinstance(link, dict) and {"id", "origin_id", "origin_slot"} <= link.keys():
            lid, origin, slot = link["id"], link["origin_id"], link["origin_slot"]
        else:
            raise WorkflowFormatError(
                f"{where}link {link!r} is neither [id, origin, slot, target, slot, type] nor an object"
            )
        out[_int(lid, f"{where}a link id")] = (
            _int(origin, f"{where}link {lid}'s origin"),
            _int(slot, f"{where}link {lid}'s origin slot"),
        )
    return out


def _inputs(raw: Any, links: dict[int, tuple[int, int]], prefix: str, where: str) -> list[FlatInput]:
    out: list[FlatInput] = []
    if raw is not None and not isinstance(raw, list):
        raise WorkflowFormatError(f"{where}: 'inputs' must be a list")
    for inp in raw or []:
        if not isinstance(inp, dict) or not isinstance(inp.get("name"), str):
            raise WorkflowFormatError(f"{where}: an input is not an object with a name: {inp!r}")
        source = None
        link = inp.get("link")
        if link is not None:
            found = links.get(_int(link, f"{where}: input {inp['name']!r}'s link"))
            if found is not None:  # a link id missing from the list is a dangling link: nothing feeds it
                source = Source(f"{prefix}{found[0]}", found[1])
        widget = inp.get("widget")
        out.append(
            FlatInput(
                name=inp["name"],
                type=str(inp.get("type", "*")),
                source=source,
                widget=widget.get("name") if isinstance(widget, dict) else None,
            )
        )
    return out


def subgraph_definitions(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The subgraphs a UI-format workflow defines, by id."""
    subgraphs: dict[str, dict[str, Any]] = {}
    definitions = data.get("definitions")
    if isinstance(definitions, dict):
        for sg in definitions.get("subgraphs") or []:
            if isinstance(sg, dict) and isinstance(sg.get("id"), str):
                subgraphs[sg["id"]] = sg
    return subgraphs


def _group_nodes(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    extra = data.get("extra")
    groups = extra.get("groupNodes") if isinstance(extra, dict) else None
    return groups if isinstance(groups, dict) else {}


def flatten(data: dict[str, Any], keep: frozenset[str] = frozenset()) -> FlatGraph:
    """The flat graph of a UI-format workflow (see the module's docstring). Instances of the subgraphs in
    ``keep`` are not expanded: they stay nodes (with :attr:`FlatNode.subgraph` set)."""
    graph = FlatGraph()
    _add_level(
        graph,
        data.get("nodes"),
        data.get("links"),
        "",
        subgraph_definitions(data),
        _group_nodes(data),
        (),
        top=True,
        keep=keep,
    )
    return graph


def flatten_subgraph(data: dict[str, Any], sid: str, keep: frozenset[str]) -> FlatGraph:
    """The flat graph of subgraph ``sid``'s own nodes, as a workflow of its own: its input node is a
    :data:`PIPELINE_INPUTS` node ``"-10"``, and :attr:`FlatGraph.outputs` holds what feeds each output."""
    subgraphs = subgraph_definitions(data)
    sg = subgraphs[sid]
    graph = FlatGraph()
    ins = FlatNode(id=str(SUBGRAPH_INPUT_ID), type="subgraph inputs", kind=PIPELINE_INPUTS)
    graph.nodes[ins.id] = ins
    _add_level(
        graph,
        sg.get("nodes") or [],
        sg.get("links"),
        "",
        subgraphs,
        _group_nodes(data),
        (sid,),
        top=True,
        keep=keep,
    )
    graph.outputs = [None] * len(sg.get("outputs") or [])
    for k, origin, oslot in _output_links(sg, sid):
        if 0 <= k < len(graph.outputs):
            graph.outputs[k] = Source(str(origin), oslot)
    return graph


def _output_links(sg: dict[str, Any], name: str) -> list[tuple[int, Any, int]]:
    """The links into subgraph ``sg``'s output node: (its output slot, origin node id, origin slot)."""
    out = []
    for raw in sg.get("links") or []:
        target, slot = (
            (raw.get("target_id"), raw.get("target_slot")) if isinstance(raw, dict) else (raw[3], raw[4])
        )
        if target == SUBGRAPH_OUTPUT_ID:
            origin, oslot = (
                (raw["origin_id"], raw["origin_slot"]) if isinstance(raw, dict) else (raw[1], raw[2])
            )
            out.append(
                (_int(slot, f"subgraph {name}: an output link's slot"), origin, _int(oslot, "an origin slot"))
            )
    return out


def _add_level(
    graph: FlatGraph,
    raw_nodes: Any,
    raw_links: Any,
    prefix: str,
    subgraphs: dict[str, dict[str, Any]],
    group_nodes: dict[str, dict[str, Any]],
    inside: tuple[str, ...],
    *,
    top: bool = False,
    keep: frozenset[str] = frozenset(),
) -> None:
    where = f"subgraph {inside[-1]}: " if inside else ""
    if not isinstance(raw_nodes, list):
        raise WorkflowFormatError(f"{where}'nodes' must be a list")
    links = _links(raw_links, where)
    for raw in raw_nodes:
        if not isinstance(raw, dict) or "id" not in raw or not isinstance(raw.get("type"), str):
            raise WorkflowFormatError(
                f"{where}a node is not an object with an id and a type: {str(raw)[:80]}"
            )
        nid = f"{prefix}{raw['id']}"
        if nid in graph.nodes:
            raise WorkflowFormatError(f"{where}two nodes have the id {raw['id']}")
        mode = raw.get("mode", 0)
        node = FlatNode(
            id=nid,
            type=raw["type"],
            mode=mode if isinstance(mode, int) else 0,
            title=raw.get("title") if isinstance(raw.get("title"), str) else None,
            inputs=_inputs(raw.get("inputs"), links, prefix, f"{where}node {raw['id']}"),
            widgets_values=raw.get("widgets_values")
            if isinstance(raw.get("widgets_values"), (list, dict))
            else None,
            raw=raw,
        )
        graph.nodes[nid] = node
        if top:
            graph.top.append(nid)
        if node.type in subgraphs:
            if node.type in inside:
                raise WorkflowFormatError(f"subgraph {node.type} contains itself")
            if node.type in keep:
                node.subgraph = node.type
                node.output_types = [
                    str(o.get("type", "*")) for o in subgraphs[node.type].get("outputs") or []
                ]
            else:
                _expand_subgraph(graph, node, subgraphs, group_nodes, inside, keep)
        elif _group_name(node.type) in group_nodes:
            _expand_group_node(graph, node, group_nodes[_group_name(node.type)])


def _group_name(node_type: str) -> str:
    """A group node's type is ``workflow>NAME`` (``workflow/NAME`` in older files)."""
    for sep in (">", "/"):
        if node_type.startswith("workflow" + sep):
            return node_type[len("workflow") + 1 :]
    return ""


def _expand_subgraph(
    graph: FlatGraph,
    node: FlatNode,
    subgraphs: dict[str, dict[str, Any]],
    group_nodes: dict[str, dict[str, Any]],
    inside: tuple[str, ...],
    keep: frozenset[str],
) -> None:
    sg = subgraphs[node.type]
    node.kind = SUBGRAPH_INSTANCE
    inner = f"{node.id}:"
    # the subgraph's input node: its output k is what feeds the instance's input k
    ins = FlatNode(
        id=f"{inner}{SUBGRAPH_INPUT_ID}", type="subgraph inputs", kind=SUBGRAPH_INPUTS, instance=node.id
    )
    # the instance's inputs are the subgraph's, by name (files may list only some of them)
    sg_inputs = [i for i in (sg.get("inputs") or []) if isinstance(i, dict)]
    by_name = {i.name: i for i in node.inputs}
    promoted = promoted_inputs(sg)
    values = node.widgets_values
    for k, sgi in enumerate(sg_inputs):
        outer = by_name.get(str(sgi.get("name")))
        if (
            outer is None
            and not by_name.keys() & {str(i.get("name")) for i in sg_inputs}
            and k < len(node.inputs)
        ):
            outer = node.inputs[k]  # no names in common: by position
        ins.outputs[k] = outer.source if outer is not None else None
        if k in promoted and ins.outputs[k] is None:
            # an unlinked input feeding a widget inside: the instance's widget holds its value
            name, index = str(sgi.get("name")), promoted.index(k)
            if isinstance(values, dict) and name in values:
                ins.widget_values[k] = values[name]
            elif isinstance(values, list) and index < len(values):
                ins.widget_values[k] = values[index]
    graph.nodes[ins.id] = ins
    # the subgraph's output node: its input k is what comes out of the instance's output k
    outs = FlatNode(id=f"{inner}{SUBGRAPH_OUTPUT_ID}", type="subgraph outputs", kind=SUBGRAPH_OUTPUTS)
    outputs = sg.get("outputs") or []
    outs.inputs = [
        FlatInput(name=str(o.get("name", k)), type=str(o.get("type", "*"))) for k, o in enumerate(outputs)
    ]
    graph.nodes[outs.id] = outs
    _add_level(
        graph,
        sg.get("nodes") or [],
        sg.get("links"),
        inner,
        subgraphs,
        group_nodes,
        (*inside, node.type),
        keep=keep,
    )
    for k, origin, oslot in _output_links(sg, node.type):
        if 0 <= k < len(outs.inputs):
            outs.inputs[k].source = Source(f"{inner}{origin}", oslot)


def promoted_inputs(sg: dict[str, Any]) -> list[int]:
    """The subgraph's inputs that feed a widget inside (the instance shows a widget for each), in order."""
    widget_inputs = {
        (n.get("id"), slot)
        for n in sg.get("nodes") or []
        if isinstance(n, dict)
        for slot, i in enumerate(n.get("inputs") or [])
        if isinstance(i, dict) and isinstance(i.get("widget"), dict)
    }
    out = set()
    for link in sg.get("links") or []:
        if isinstance(link, dict):
            origin, slot, target, tslot = (
                link.get(k) for k in ("origin_id", "origin_slot", "target_id", "target_slot")
            )
        elif isinstance(link, list) and len(link) >= 5:
            origin, slot, target, tslot = link[1], link[2], link[3], link[4]
        else:
            continue
        if origin == SUBGRAPH_INPUT_ID and (target, tslot) in widget_inputs and isinstance(slot, int):
            out.add(slot)
    return sorted(out)


def _expand_group_node(graph: FlatGraph, node: FlatNode, definition: dict[str, Any]) -> None:
    """A group node (ComfyUI's older way to pack nodes) becomes its inner nodes ``"I:index"``.

    Its inputs are, in order, the inner nodes' sockets (not widgets) that no inner link feeds; its outputs the inner
    nodes' outputs that feed no inner node (or that the definition lists as ``external``); its widget
    values the inner nodes' widget values, node after node (split by the
    converter, which knows each type's widgets: see :func:`..convert.split_group_widgets`).
    """
    node.kind = GROUP_NODE
    inner_nodes = definition.get("nodes") or []
    inner_links = definition.get("links") or []
    fed: dict[tuple[int, int], Source] = {}
    used: set[tuple[int, int]] = set()
    for link in inner_links:
        if isinstance(link, list) and len(link) >= 4 and link[0] is not None:
            fed[(_int(link[2], "a group link's target"), _int(link[3], "a group link's slot"))] = Source(
                f"{node.id}:{link[0]}", _int(link[1], "a group link's origin slot")
            )
            used.add((_int(link[0], "a group link's origin"), _int(link[1], "a group link's origin slot")))
    external: set[tuple[int, int]] = set()
    for e in definition.get("external") or []:  # [inner node (its index, or itself), output slot, type]
        if isinstance(e, list) and len(e) >= 2:
            inner = e[0].get("index") if isinstance(e[0], dict) else e[0]
            external.add((_int(inner, "an external output's node"), _int(e[1], "an external output's slot")))
    outer_inputs = iter(node.inputs)
    out_slot = 0
    for raw in inner_nodes:
        index = _int(raw.get("index"), "a group node's inner node index")
        inner = FlatNode(
            id=f"{node.id}:{index}",
            type=str(raw.get("type")),
            mode=node.mode,
            title=raw.get("title") if isinstance(raw.get("title"), str) else None,
            raw=raw,
        )
        for slot, inp in enumerate(raw.get("inputs") or []):
            name = str(inp.get("name"))
            widget = inp.get("widget")
            fi = FlatInput(
                name=name,
                type=str(inp.get("type", "*")),
                widget=widget.get("name") if isinstance(widget, dict) else None,
            )
            if (index, slot) in fed:
                fi.source = fed[(index, slot)]
            elif fi.widget is None:  # a socket fed from outside: the group node's next input
                outer = next(outer_inputs, None)
                fi.source = outer.source if outer is not None else None
            inner.inputs.append(fi)
        for slot, _ in enumerate(raw.get("outputs") or []):
            if (index, slot) not in used or (index, slot) in external:
                node.outputs[out_slot] = Source(inner.id, slot)
                out_slot += 1
        graph.nodes[inner.id] = inner
