"""Workflows embedded in images: written by SaveImage, read back by ``atelier run IMAGE.png``.

Atelier writes a PNG text chunk ``atelier`` holding ``{"workflow": ..., "parameters": {...}, ...}``.
ComfyUI writes its API-format ``prompt`` and its UI-format ``workflow`` as PNG text chunks, and in WEBP
files as EXIF strings of the first IFD (``"prompt:{json}"`` in tag 0x0110, then each extra item such as
``"workflow:{json}"`` from tag 0x010F downwards); both load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from PIL import Image, PngImagePlugin

from .workflow import WorkflowFormatError

CHUNK = "atelier"


class NoWorkflowError(WorkflowFormatError):
    """The image is readable but carries no workflow."""


#: The EXIF tags ComfyUI writes its "key:json" strings into (0x0110 for the prompt, downwards for the rest).
_EXIF_TAGS = range(0x0100, 0x0111)


def png_info(metadata: dict[str, Any]) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_itxt(CHUNK, json.dumps(metadata, ensure_ascii=False, separators=(",", ":")), zip=True)
    return info


def embedded_texts(path: str | Path | IO[bytes]) -> dict[str, str]:
    """The text an image (a path or an open binary file) carries by key: a PNG's text chunks, or the
    ``key:value`` EXIF strings ComfyUI writes into WEBP (and other EXIF-carrying) files."""
    path = path if hasattr(path, "read") else Path(path)  # type: ignore[arg-type]
    try:
        with Image.open(path) as im:
            texts = {str(k): str(v) for k, v in (getattr(im, "text", None) or {}).items()}
            exif = im.getexif()
    except Exception as exc:
        raise WorkflowFormatError(f"{path}: not a readable image ({exc})") from exc
    for tag in _EXIF_TAGS:
        value = exif.get(tag)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            key, sep, rest = value.partition(":")
            if sep and key.isidentifier() and key not in texts:
                texts[key] = rest
    return texts


def _json(path: Any, texts: dict[str, str], key: str, what: str) -> Any:
    try:
        return json.loads(texts[key])
    except json.JSONDecodeError as exc:
        raise WorkflowFormatError(f"{path}: the embedded {what} is not valid JSON") from exc


def read_metadata(path: str | Path | IO[bytes], name: str | None = None) -> dict[str, Any]:
    """The Atelier metadata of an image, or ``{"comfyui_prompt": ..., "comfyui_workflow": ...}`` (either
    may be missing) for a ComfyUI image. ``name`` names an open file in messages."""
    texts = embedded_texts(path)
    path = name or path
    if CHUNK in texts:
        return _json(path, texts, CHUNK, "Atelier workflow")
    out: dict[str, Any] = {}
    if "prompt" in texts:
        out["comfyui_prompt"] = _json(path, texts, "prompt", "ComfyUI prompt")
    if "workflow" in texts:
        out["comfyui_workflow"] = _json(path, texts, "workflow", "ComfyUI workflow")
    if not out:
        raise NoWorkflowError(
            f"{path}: this image carries no workflow (no 'atelier', 'prompt' or 'workflow' metadata)"
        )
    return out


def workflow_from_image(path: str | Path) -> dict[str, Any]:
    """The workflow an image was made with: Atelier's, its exposed parameters defaulting to the values
    used then; ComfyUI's API-format prompt (what ComfyUI ran), or else its UI-format workflow."""
    return workflow_from_metadata(read_metadata(path), str(path))


def workflow_from_metadata(meta: dict[str, Any], name: str, *, prefer_ui: bool = False) -> dict[str, Any]:
    """The workflow of :func:`read_metadata`'s answer; ``prefer_ui``: ComfyUI's UI-format workflow (it
    has the layout) before its prompt."""
    if "comfyui_prompt" in meta or "comfyui_workflow" in meta:
        order = (
            ("comfyui_workflow", "comfyui_prompt") if prefer_ui else ("comfyui_prompt", "comfyui_workflow")
        )
        found = meta.get(order[0], meta.get(order[1]))
        if not isinstance(found, dict):
            raise WorkflowFormatError(f"{name}: the embedded ComfyUI workflow is not a JSON object")
        return found
    wf = meta.get("workflow")
    if not isinstance(wf, dict):
        raise WorkflowFormatError(f"{name}: the embedded metadata has no workflow")
    wf = json.loads(json.dumps(wf))
    for pname, value in (meta.get("parameters") or {}).items():
        param = wf.get("parameters", {}).get(pname)
        if isinstance(param, dict):
            param["default"] = value
    return wf
