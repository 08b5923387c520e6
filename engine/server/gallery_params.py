"""The generation parameters of an image (prompt, negative, seed, sampler, scheduler, steps, cfg, model,
workflow name) read from the metadata it carries (``engine/pnginfo.py``'s ``read_metadata``).

Pure functions of that metadata: nodes are recognised by their inputs, not their type names (a sampler has
``sampler_name`` and a ``seed`` or ``noise_seed``; a prompt encoder has a ``text``; a model loader a
``ckpt_name`` or ``unet_name``), so Atelier's workflows, ComfyUI's API prompts and custom samplers read alike.
The prompt is the text that reaches the sampler's ``positive`` input (followed upstream through any nodes in
between, such as InpaintModelConditioning); the negative, its ``negative`` input's.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

#: node id -> input name -> a literal, or ("link", source node id) for a link
Graph = dict[str, dict[str, Any]]

SEED_INPUTS = ("seed", "noise_seed")
TEXT_INPUTS = ("text", "text_g", "prompt")
MODEL_INPUTS = ("ckpt_name", "unet_name", "model_name")


@dataclass(frozen=True)
class GenerationParams:
    prompt: str = ""
    negative: str = ""
    seed: int | None = None
    sampler: str = ""
    scheduler: str = ""
    steps: int | None = None
    cfg: float | None = None
    model: str = ""
    workflow: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def generation_params(meta: dict[str, Any]) -> GenerationParams:
    """What ``meta`` (Atelier's metadata, or ``{"comfyui_prompt": ...}``) says the image was made with;
    fields it does not tell stay empty."""
    graph, name = _graph(meta)
    if not graph:
        return GenerationParams(workflow=name)
    sampler_id = next(
        (
            nid
            for nid, inputs in graph.items()
            if "sampler_name" in inputs and any(_literal(inputs.get(k)) is not None for k in SEED_INPUTS)
        ),
        None,
    ) or next((nid for nid, inputs in graph.items() if "sampler_name" in inputs), None)
    s = graph.get(sampler_id, {}) if sampler_id is not None else {}
    seed = next((_literal(s.get(k)) for k in SEED_INPUTS if _literal(s.get(k)) is not None), None)
    return GenerationParams(
        prompt=_upstream_text(graph, s.get("positive"), "positive") or _any_text(graph),
        negative=_upstream_text(graph, s.get("negative"), "negative"),
        seed=_int(seed),
        sampler=_str(s.get("sampler_name")),
        scheduler=_str(s.get("scheduler")),
        steps=_int(_literal(s.get("steps"))),
        cfg=_float(_literal(s.get("cfg"))),
        model=_upstream(graph, s.get("model"), MODEL_INPUTS) or _first(graph, MODEL_INPUTS),
        workflow=name,
    )


def _graph(meta: dict[str, Any]) -> tuple[Graph, str]:
    """The nodes' inputs with links marked, and the workflow's name, from either metadata kind."""
    if isinstance(meta.get("comfyui_prompt"), dict):
        graph: Graph = {}
        for nid, node in meta["comfyui_prompt"].items():
            if isinstance(node, dict) and isinstance(node.get("inputs"), dict):
                graph[str(nid)] = {k: _comfy_value(v) for k, v in node["inputs"].items()}
        return graph, ""
    wf = meta.get("workflow")
    if not isinstance(wf, dict) or not isinstance(wf.get("nodes"), dict):
        return {}, ""
    name = str((wf.get("metadata") or {}).get("name") or "")
    # the literals the job ran with (parameters and overrides applied), where the engine recorded them
    ran = meta.get("files") if isinstance(meta.get("files"), dict) else {}
    graph = {}
    for nid, node in wf["nodes"].items():
        if not isinstance(node, dict):
            continue
        inputs = {k: _atelier_value(v) for k, v in (node.get("inputs") or {}).items()}
        recorded = (ran.get(nid) or {}).get("inputs") if isinstance(ran.get(nid), dict) else None
        if isinstance(recorded, dict):
            inputs.update({k: v for k, v in recorded.items() if not _is_link(inputs.get(k))})
        graph[str(nid)] = inputs
    _apply_parameters(graph, wf, meta.get("parameters"))
    return graph, name


def _apply_parameters(graph: Graph, wf: dict[str, Any], values: Any) -> None:
    """Parameter values the job ran with, written into their targets (for metadata without ``files``)."""
    if not isinstance(values, dict):
        return
    for pname, value in values.items():
        param = (wf.get("parameters") or {}).get(pname)
        for target in (param or {}).get("targets", []) if isinstance(param, dict) else []:
            nid, _, inp = str(target).rpartition(".")
            if nid in graph and not _is_link(graph[nid].get(inp)):
                graph[nid][inp] = value


def _atelier_value(v: Any) -> Any:
    if isinstance(v, dict) and v.keys() == {"node", "output"}:
        return ("link", str(v["node"]))
    return v


def _comfy_value(v: Any) -> Any:
    if isinstance(v, list) and len(v) == 2 and isinstance(v[0], (str, int)) and isinstance(v[1], int):
        return ("link", str(v[0]))
    return v


def _is_link(v: Any) -> bool:
    return isinstance(v, tuple) and len(v) == 2 and v[0] == "link"


def _literal(v: Any) -> Any:
    return None if _is_link(v) else v


def _upstream(graph: Graph, start: Any, keys: tuple[str, ...], role: str = "") -> str:
    """The first string literal under one of ``keys`` met walking upstream from the link ``start``
    (breadth first: the nearest node wins). ``role``: a node with an input of that name (a conditioning
    node passing ``positive`` and ``negative`` through) is followed through that input only."""
    if not _is_link(start):
        return ""
    queue, seen = deque([start[1]]), set()
    while queue:
        nid = queue.popleft()
        if nid in seen or nid not in graph:
            continue
        seen.add(nid)
        inputs = graph[nid]
        for k in keys:
            v = inputs.get(k)
            if isinstance(v, str) and v:
                return v
        if role and _is_link(inputs.get(role)):
            queue.append(inputs[role][1])
        else:
            queue.extend(v[1] for v in inputs.values() if _is_link(v))
    return ""


def _upstream_text(graph: Graph, start: Any, role: str) -> str:
    return _upstream(graph, start, TEXT_INPUTS, role)


def _any_text(graph: Graph) -> str:
    return _first(graph, TEXT_INPUTS)


def _first(graph: Graph, keys: tuple[str, ...]) -> str:
    for inputs in graph.values():
        for k in keys:
            v = inputs.get(k)
            if isinstance(v, str) and v:
                return v
    return ""


def _str(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _float(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
