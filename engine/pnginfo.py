"""Workflows embedded in PNG files: written by SaveImage, read back by ``atelier run IMAGE.png``.

Atelier writes a text chunk ``atelier`` holding ``{"workflow": ..., "parameters": {...}, ...}``; ComfyUI
PNGs carry an API-format ``prompt`` chunk, which loads too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from .workflow import WorkflowFormatError

CHUNK = "atelier"


def png_info(metadata: dict[str, Any]) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_itxt(CHUNK, json.dumps(metadata, ensure_ascii=False, separators=(",", ":")), zip=True)
    return info


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The Atelier metadata of a PNG, or ``{"comfyui_prompt": ...}`` for a ComfyUI PNG."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            text = dict(getattr(im, "text", {}) or {})
    except Exception as exc:
        raise WorkflowFormatError(f"{path}: not a readable PNG ({exc})") from exc
    if CHUNK in text:
        try:
            return json.loads(text[CHUNK])
        except json.JSONDecodeError as exc:
            raise WorkflowFormatError(f"{path}: the embedded Atelier workflow is not valid JSON") from exc
    if "prompt" in text:
        try:
            return {"comfyui_prompt": json.loads(text["prompt"])}
        except json.JSONDecodeError as exc:
            raise WorkflowFormatError(f"{path}: the embedded ComfyUI prompt is not valid JSON") from exc
    raise WorkflowFormatError(f"{path}: this PNG carries no workflow (no 'atelier' or 'prompt' text chunk)")


def workflow_from_png(path: str | Path) -> dict[str, Any]:
    """The workflow a PNG was made with, its exposed parameters defaulting to the values used then."""
    meta = read_metadata(path)
    if "comfyui_prompt" in meta:
        return meta["comfyui_prompt"]
    wf = meta.get("workflow")
    if not isinstance(wf, dict):
        raise WorkflowFormatError(f"{path}: the embedded metadata has no workflow")
    wf = json.loads(json.dumps(wf))
    for name, value in (meta.get("parameters") or {}).items():
        param = wf.get("parameters", {}).get(name)
        if isinstance(param, dict):
            param["default"] = value
    return wf
