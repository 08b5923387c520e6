"""The conversion service: a workflow in any format Atelier reads (ComfyUI's UI and API formats, an
image's embedded workflow) as Atelier's format or ComfyUI's API format. The canvas imports through it, so
ComfyUI's UI format has one converter (engine/comfy_ui), in Python.

Parsing and image decoding block: call from a worker thread.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from atelier.engine.comfy_ui import UiFormatError, from_comfy_ui, is_ui_format
from atelier.engine.pnginfo import NoWorkflowError, read_metadata, workflow_from_metadata
from atelier.engine.runtime import Engine
from atelier.engine.validate import NodeError, check
from atelier.engine.workflow import WorkflowFormatError, detect_format, parse_workflow, to_comfy_api

Target = Literal["atelier", "comfyui-api"]


@dataclass(frozen=True)
class Converted:
    workflow: dict[str, Any]
    #: the format read: atelier, comfyui-api, comfyui-prompt, comfyui-ui
    source: str


@dataclass(frozen=True)
class NotConverted:
    """The data is no workflow, or has nodes that cannot be converted (``errors`` names each)."""

    message: str
    errors: list[NodeError]


@dataclass(frozen=True)
class NoWorkflow:
    """An image that carries no workflow."""

    message: str


class ConvertService:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def convert(self, data: Any, to: Target = "atelier") -> Converted | NotConverted:
        source = detect_format(data)
        registry = self.engine.registry
        try:
            wf = parse_workflow(data, registry)
        except UiFormatError:
            # the same errors validation gives, node by node
            errors = check(data, registry).errors
            return NotConverted("this ComfyUI workflow has nodes Atelier cannot take", errors)
        except (WorkflowFormatError, ValidationError) as exc:
            errors = check(data, registry).errors
            return NotConverted(str(exc).splitlines()[0], errors)
        if to != "comfyui-api":
            return Converted(wf.to_dict(), source)
        try:
            return Converted(to_comfy_api(wf, registry, self.engine.pipelines.resolve), source)
        except WorkflowFormatError as exc:
            return NotConverted(str(exc), check(data, registry).errors)

    def convert_image(
        self, data: bytes, filename: str, to: Target = "atelier"
    ) -> Converted | NotConverted | NoWorkflow:
        """The workflow an image carries, converted. A ComfyUI image's prompt is what ran, so it wins over
        its UI-format workflow, which gives the layout of the nodes they share."""
        try:
            meta = read_metadata(io.BytesIO(data), filename)
            found = workflow_from_metadata(meta, filename)
        except NoWorkflowError as exc:
            return NoWorkflow(str(exc))
        except WorkflowFormatError as exc:
            return NotConverted(str(exc), [NodeError(code="malformed", message=str(exc))])
        out = self.convert(found, to)
        ui_format = meta.get("comfyui_workflow")
        if (
            isinstance(out, Converted)
            and to == "atelier"
            and "comfyui_prompt" in meta
            and is_ui_format(ui_format)
        ):
            try:
                layout = from_comfy_ui(ui_format, self.engine.registry).ui or {}
            except (WorkflowFormatError, ValidationError):
                layout = {}  # the prompt still loads, laid out by the canvas
            out.workflow["ui"] = _layout_of(layout, set(out.workflow.get("nodes", {})))
        return out


def _layout_of(layout: dict[str, Any], nodes: set[str]) -> dict[str, Any]:
    """The part of a layout about ``nodes`` (and its groups)."""
    out: dict[str, Any] = {}
    for key, value in layout.items():
        if isinstance(value, dict):
            kept: Any = {k: v for k, v in value.items() if k in nodes}
        elif key == "collapsed" and isinstance(value, list):
            kept = [k for k in value if k in nodes]
        else:
            kept = value
        if kept:
            out[key] = kept
    return out
