"""The workflow format: versioned JSON, its migrations, and ComfyUI API-format import/export.

Atelier's own format::

    {
      "format": "atelier/workflow", "version": 1,
      "metadata": {"name": "...", "description": "...", "author": "...", "tags": ["portrait"]},
      "parameters": {
        "seed": {"type": "INT", "default": 0, "targets": ["sampler.seed"], "description": "..."}
      },
      "nodes": {
        "sampler": {"type": "KSampler", "version": "1.0.0", "title": "Sampler",
                    "inputs": {"seed": 0, "model": {"node": "loader", "output": "MODEL"}}}
      },
      "ui": {...}
    }

An input value is either a literal (JSON number, string, boolean, list) or a link: an object with exactly
the keys ``node`` and ``output`` (an output name, or its index). Unknown node types and unknown fields at
any level are kept as they are, so a load/save round trip loses nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

FORMAT = "atelier/workflow"
#: Image files whose embedded workflow :func:`read_workflow_data` reads.
IMAGE_SUFFIXES = (".png", ".webp")
CURRENT_VERSION = 1


class WorkflowFormatError(ValueError):
    """The data is not a workflow in any format Atelier reads."""


class Link(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    node: str
    output: str | int


def _as_link(value: Any) -> Any:
    if isinstance(value, dict) and value.keys() == {"node", "output"}:
        node, output = value["node"], value["output"]
        if isinstance(node, (str, int)) and not isinstance(node, bool) and isinstance(output, (str, int)):
            return Link(node=str(node), output=output)
    return value


class WorkflowNode(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    version: str | None = None
    title: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    #: ``"bypass"``: passes its inputs through; ``"mute"``: does not run (engine/modes.py)
    mode: str = "active"

    @field_validator("inputs", mode="before")
    @classmethod
    def _links(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: _as_link(x) for k, x in v.items()}
        return v

    @field_serializer("inputs")
    def _dump_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {k: (v.model_dump() if isinstance(v, Link) else v) for k, v in inputs.items()}


class Parameter(BaseModel):
    """An input exposed to callers, mapped onto one or more node inputs (``"node_id.input"``)."""

    model_config = ConfigDict(extra="allow")

    type: str
    targets: list[str]
    default: Any = None
    description: str = ""
    min: int | float | None = None
    max: int | float | None = None
    step: int | float | None = None
    choices: list[Any] | None = None
    multiline: bool | None = None

    def target_pairs(self) -> list[tuple[str, str]]:
        pairs = []
        for t in self.targets:
            node, _, name = t.rpartition(".")
            pairs.append((node, name))
        return pairs


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = ""
    description: str = ""
    author: str = ""
    tags: list[str] = Field(default_factory=list)
    #: the pipeline's version (semver) when the workflow is shared as a pipeline
    version: str | None = None


class PipelineOutput(BaseModel):
    """An output a workflow declares when used as a pipeline: which inner node's output it is."""

    model_config = ConfigDict(extra="allow")

    type: str
    node: str
    output: str | int
    description: str = ""


class Workflow(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: Literal["atelier/workflow"] = FORMAT
    version: int = CURRENT_VERSION
    metadata: Metadata = Field(default_factory=Metadata)
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    nodes: dict[str, WorkflowNode] = Field(default_factory=dict)
    #: what the workflow gives when used as a pipeline node (engine/pipeline.py)
    outputs: dict[str, PipelineOutput] = Field(default_factory=dict)
    #: pipelines embedded in this workflow, by name (used by nodes of type ``pipeline:NAME``)
    definitions: dict[str, Any] = Field(default_factory=dict)
    ui: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude_unset=True, exclude_none=False)
        return {"format": self.format, "version": self.version, **data}  # always says what it is

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def to_comfy_api(self) -> dict[str, Any]:
        """Export as ComfyUI API format (links become ``[node_id, output_index]`` where resolvable)."""
        return to_comfy_api(self)


# -- migrations ------------------------------------------------------------------------------------

#: version -> function upgrading a raw dict of that version to the next one.
MIGRATIONS: dict[int, Any] = {}


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    version = data.get("version", CURRENT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise WorkflowFormatError(f"workflow 'version' must be an integer, got {version!r}")
    if version > CURRENT_VERSION:
        raise WorkflowFormatError(
            f"workflow format version {version} is newer than this Atelier supports ({CURRENT_VERSION}); upgrade"
        )
    if version < 1:
        raise WorkflowFormatError(f"workflow format version {version} does not exist")
    while version < CURRENT_VERSION:
        data = MIGRATIONS[version](data)
        version = data["version"]
    return data


# -- reading ---------------------------------------------------------------------------------------


def detect_format(data: Any) -> str:
    """``atelier``, ``comfyui-api``, ``comfyui-prompt`` (a /prompt body), ``comfyui-ui`` or ``unknown``."""
    if not isinstance(data, dict):
        return "unknown"
    if data.get("format") == FORMAT:
        return "atelier"
    if isinstance(data.get("prompt"), dict) and _looks_comfy_api(data["prompt"]):
        return "comfyui-prompt"
    if isinstance(data.get("nodes"), list) and "links" in data:
        return "comfyui-ui"
    if data and _looks_comfy_api(data):
        return "comfyui-api"
    return "unknown"


def _looks_comfy_api(data: dict[str, Any]) -> bool:
    return bool(data) and all(isinstance(v, dict) and "class_type" in v for v in data.values())


def parse_workflow(data: Any, registry: Any = None) -> Workflow:
    """Read a workflow in any supported format. Raises :class:`WorkflowFormatError` or pydantic's
    ``ValidationError`` for data that is not one (validation turns both into error lists). ComfyUI's UI
    format needs the node ``registry`` (its widget values are known only by position); a UI-format
    workflow with nodes that cannot be converted raises :class:`~.comfy_ui.UiFormatError`, which names
    each of them."""
    if isinstance(data, Workflow):
        return data
    kind = detect_format(data)
    if kind == "atelier":
        return Workflow.model_validate(migrate(dict(data)))
    if kind == "comfyui-api":
        return from_comfy_api(data)
    if kind == "comfyui-prompt":
        return from_comfy_api(data["prompt"])
    if kind == "comfyui-ui":
        if registry is None:
            raise WorkflowFormatError(
                "this is a ComfyUI UI-format workflow (nodes and links lists): reading it needs the node "
                "registry (the engine's check, `atelier run` and the server read it)"
            )
        from .comfy_ui import from_comfy_ui

        return from_comfy_ui(data, registry)
    if isinstance(data, dict) and "format" in data:
        raise WorkflowFormatError(f"unknown workflow format {data['format']!r}; expected {FORMAT!r}")
    raise WorkflowFormatError(
        'not a workflow: expected an object with "format": "atelier/workflow", or a ComfyUI API-format '
        "prompt ({id: {class_type, inputs}})"
    )


def read_workflow_data(path: str | Path) -> Any:
    """The raw workflow data of a file: JSON in any format, or the workflow a PNG or WEBP carries."""
    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        from .pnginfo import workflow_from_image

        return workflow_from_image(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise WorkflowFormatError(f"{path}: not a text file ({exc.reason})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowFormatError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc


def load_workflow(path: str | Path) -> Workflow:
    """Read a workflow file (see :func:`read_workflow_data`)."""
    return parse_workflow(read_workflow_data(path))


# -- ComfyUI API format ----------------------------------------------------------------------------


def from_comfy_api(prompt: dict[str, Any]) -> Workflow:
    nodes: dict[str, WorkflowNode] = {}
    for node_id, entry in prompt.items():
        inputs = entry.get("inputs", {})
        if not isinstance(inputs, dict):
            raise WorkflowFormatError(f"node {node_id}: 'inputs' must be an object")
        converted: dict[str, Any] = {}
        for name, value in inputs.items():
            if (
                isinstance(value, list)
                and len(value) == 2
                and isinstance(value[0], (str, int))
                and not isinstance(value[0], bool)
                and isinstance(value[1], int)
                and not isinstance(value[1], bool)
            ):
                converted[name] = Link(node=str(value[0]), output=value[1])
            else:
                converted[name] = value
        extras = {k: v for k, v in entry.items() if k not in ("class_type", "inputs")}
        meta = extras.get("_meta")
        title = meta.get("title") if isinstance(meta, dict) and isinstance(meta.get("title"), str) else None
        node = WorkflowNode(type=str(entry["class_type"]), inputs=converted, **extras)
        if title is not None:
            node.title = title
            node.model_fields_set.discard("title")  # comes back out through _meta
        nodes[str(node_id)] = node
    return Workflow(nodes=nodes)


def to_comfy_api(wf: Workflow, registry: Any = None, pipelines: Any = None) -> dict[str, Any]:
    """ComfyUI's API format of ``wf``. Pipeline nodes are expanded first (embedded definitions, else the
    ``pipelines`` resolver), as ComfyUI's frontend flattens its subgraphs: their nodes get ``"outer:inner"``
    ids; raises :class:`WorkflowFormatError` naming a pipeline that cannot be expanded. The format has no
    node modes: muted and bypassed nodes are resolved away then (with the ``registry``'s specs, which say
    what a bypassed node passes through; engine/modes.py)."""
    from .pipeline import expand, no_library, uses_pipelines  # the pipeline module builds on this one

    if uses_pipelines(wf):
        expanded = expand(wf, pipelines or no_library)
        failed = [p for p in expanded.problems if p.severity == "error"]
        if failed:
            raise WorkflowFormatError(f"node {failed[0].node}: {failed[0].message}")
        wf = expanded.workflow
    given = {nid: n.inputs for nid, n in wf.nodes.items()}
    if any(n.mode != "active" for n in wf.nodes.values()):
        from .modes import resolve_modes

        def spec_of(nid: str) -> Any:
            cls = registry.get(wf.nodes[nid].type) if registry is not None else None
            return cls.spec if cls is not None else None

        given = resolve_modes({nid: n.mode for nid, n in wf.nodes.items()}, given, spec_of).inputs
    out: dict[str, Any] = {}
    for node_id, node in wf.nodes.items():
        if node_id not in given:
            continue
        inputs: dict[str, Any] = {}
        for name, value in given[node_id].items():
            if isinstance(value, Link):
                index = value.output
                if isinstance(index, str) and registry is not None:
                    src = wf.nodes.get(value.node)
                    cls = registry.get(src.type) if src else None
                    resolved = cls.spec.output_index(index) if cls else None
                    index = resolved if resolved is not None else index
                inputs[name] = [value.node, index]
            else:
                inputs[name] = value
        entry: dict[str, Any] = {"inputs": inputs, "class_type": node.type}
        extras = node.model_extra or {}
        entry.update(extras)
        if "_meta" not in extras and node.title:
            entry["_meta"] = {"title": node.title}
        out[node_id] = entry
    return out
