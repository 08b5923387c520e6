"""ComfyUI's shape of a refused prompt: ``{"error": {type, message, details, extra_info}, "node_errors":
{node id: {errors, dependent_outputs, class_type}}}``."""

from __future__ import annotations

from typing import Any

from atelier.engine.validate import NodeError


def prompt_error(kind: str, message: str, node_errors: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "error": {"type": kind, "message": message, "details": "", "extra_info": {}},
        "node_errors": node_errors or {},
    }


def invalid_prompt(errors: list[NodeError]) -> dict[str, Any]:
    """The body for a prompt validation refused: its first problem as the error, every problem that
    names a node under that node (problems of the whole prompt appear only as the error)."""
    first = errors[0] if errors else None
    return prompt_error(
        first.code if first else "invalid",
        first.message if first else "invalid prompt",
        node_errors(errors),
    )


def node_errors(errors: list[NodeError]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for e in errors:
        if e.node is None:
            continue
        entry = out.setdefault(e.node, {"errors": [], "dependent_outputs": [], "class_type": e.node_type})
        entry["errors"].append(
            {
                "type": e.code,
                "message": e.message,
                "details": e.input or "",
                "extra_info": {"input_name": e.input},
            }
        )
    return out
