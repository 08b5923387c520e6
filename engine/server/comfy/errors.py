"""ComfyUI's shape of a refused prompt: ``{"error": {type, message, details, extra_info}, "node_errors":
{node id: {errors, dependent_outputs, class_type}}}``, with ComfyUI's error types (``value_not_in_list``,
``prompt_outputs_failed_validation``, ...) and, beside each, Atelier's own code (``code``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from atelier.engine.validate import NodeError

#: Atelier's validation codes as ComfyUI's error types, with ComfyUI's message for each
COMFY_TYPES: dict[str, tuple[str, str]] = {
    "missing_input": ("required_input_missing", "Required input is missing"),
    "not_in_choices": ("value_not_in_list", "Value not in list"),
    "invalid_type": ("invalid_input_type", "Failed to convert an input value"),
    "type_mismatch": ("return_type_mismatch", "Return type mismatch between linked nodes"),
    "link_missing_node": ("bad_linked_input", "Bad linked input"),
    "link_missing_output": ("bad_linked_input", "Bad linked input"),
    "invalid_value": ("custom_validation_failed", "Custom validation failed for node"),
    "incompatible": ("custom_validation_failed", "Custom validation failed for node"),
    "invalid_choices": ("exception_during_validation", "Exception when validating node"),
    "cycle": ("dependency_cycle", "Dependency cycle detected"),
    "unknown_node_type": ("missing_node_type", "Node not found"),
    "no_outputs": ("prompt_no_outputs", "Prompt has no outputs"),
}


#: refusals of admission control (engine/admission.py): the error itself, named by Atelier's code, since
#: ComfyUI has no counterpart
ADMISSION_CODES = ("over_limit", "over_memory", "queue_full")


def comfy_type(e: NodeError) -> tuple[str, str]:
    """ComfyUI's error type and message for one of Atelier's problems (its own code when ComfyUI has
    no counterpart)."""
    if e.code == "out_of_range":
        below = "below the minimum" in e.message
        kind = "value_smaller_than_min" if below else "value_bigger_than_max"
        return kind, "Value smaller than min" if below else "Value bigger than max"
    return COMFY_TYPES.get(e.code, (e.code, e.message))


def prompt_error(kind: str, message: str, node_errors: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "error": {"type": kind, "message": message, "details": "", "extra_info": {}},
        "node_errors": node_errors or {},
    }


def _entry(e: NodeError) -> dict[str, Any]:
    kind, message = comfy_type(e)
    return {
        "type": kind,
        "message": message,
        "details": f"{e.input}: {e.message}" if e.input else e.message,
        "extra_info": {"input_name": e.input} if e.input else {},
        "code": e.code,
    }


def invalid_prompt(
    errors: list[NodeError], dependent_outputs: Callable[[str], list[str]] | None = None
) -> dict[str, Any]:
    """The body for a prompt validation refused, as ComfyUI's: a node type it does not know, or a
    prompt without outputs, is the error itself; otherwise the error is
    ``prompt_outputs_failed_validation`` with every problem listed in ``details`` and each node's under
    ``node_errors`` (``dependent_outputs``: the output nodes that need it). Warnings are left out."""
    refusing = [e for e in errors if e.severity == "error"] or errors
    for e in refusing:
        if e.code in ("unknown_node_type", "no_outputs", *ADMISSION_CODES):
            kind, message = comfy_type(e)
            extra: dict[str, Any] = {}
            if e.node is not None:
                extra = {"node_id": e.node, "class_type": e.node_type, "node_title": e.node_type}
            return {
                "error": {
                    "type": kind,
                    "message": e.message,
                    "details": f"Node ID '#{e.node}'" if e.node else "",
                    "extra_info": extra,
                    "code": e.code,
                },
                "node_errors": node_errors(refusing, dependent_outputs),
            }
    lines = [f"{comfy_type(e)[1]}: {_entry(e)['details']}" for e in refusing]
    first = refusing[0] if refusing else None
    return {
        "error": {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": "\n".join(lines),
            "extra_info": {},
            "code": first.code if first else "invalid",
        },
        "node_errors": node_errors(refusing, dependent_outputs),
    }


def node_errors(
    errors: list[NodeError], dependent_outputs: Callable[[str], list[str]] | None = None
) -> dict[str, Any]:
    """Problems that name a node, under that node (problems of the whole prompt appear only as the
    error)."""
    out: dict[str, Any] = {}
    for e in errors:
        if e.node is None:
            continue
        entry = out.get(e.node)
        if entry is None:
            deps = dependent_outputs(e.node) if dependent_outputs is not None else []
            entry = out[e.node] = {"errors": [], "dependent_outputs": deps, "class_type": e.node_type}
        entry["errors"].append(_entry(e))
    return out
