"""Workflows embedded in images: written by SaveImage, read back by ``atelier run IMAGE.png``.

Atelier writes a PNG text chunk ``atelier`` holding ``{"workflow": ..., "parameters": {...}, ...}``.
ComfyUI writes its API-format ``prompt`` and its UI-format ``workflow`` as PNG text chunks, and in WEBP
files as EXIF strings of the first IFD (``"prompt:{json}"`` in tag 0x0110, then each extra item such as
``"workflow:{json}"`` from tag 0x010F downwards); both load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from .workflow import WorkflowFormatError

CHUNK = "atelier"

#: The EXIF tags ComfyUI writes its "key:json" strings into (0x0110 for the prompt, downwards for the rest).
_EXIF_TAGS = range(0x0100, 0x0111)


def png_info(metadata: dict[str, Any]) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_itxt(CHUNK, json.dumps(metadata, ensure_ascii=False, separators=(",", ":")), zip=True)
    return info


def embedded_texts(path: str | Path) -> dict[str, str]:
    """The text an image carries by key: a PNG's text chunks, or the ``key:value`` EXIF strings ComfyUI
    writes into WEBP (and other EXIF-carrying) files."""
    path = Path(path)
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


def _json(path: Path, texts: dict[str, str], key: str, what: str) -> Any:
    try:
        return json.loads(texts[key])
    except json.JSONDecodeError as exc:
        raise WorkflowFormatError(f"{path}: the embedded {what} is not valid JSON") from exc


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The Atelier metadata of an image, or ``{"comfyui_prompt": ..., "comfyui_workflow": ...}`` (either
    may be missing) for a ComfyUI image."""
    path = Path(path)
    texts = embedded_texts(path)
    if CHUNK in texts:
        return _json(path, texts, CHUNK, "Atelier workflow")
    out: dict[str, Any] = {}
    if "prompt" in texts:
        out["comfyui_prompt"] = _json(path, texts, "prompt", "ComfyUI prompt")
    if "workflow" in texts:
        out["comfyui_workflow"] = _json(path, texts, "workflow", "ComfyUI workflow")
    if not out:
        raise WorkflowFormatError(
            f"{path}: this image carries no workflow (no 'atelier', 'prompt' or 'workflow' metadata)"
        )
    return out


def workflow_from_image(path: str | Path) -> dict[str, Any]:
    """The workflow an image was made with: Atelier's, its exposed parameters defaulting to the values
    used then; ComfyUI's API-format prompt (what ComfyUI ran), or else its UI-format workflow."""
    meta = read_metadata(path)
    if "comfyui_prompt" in meta or "comfyui_workflow" in meta:
        found = meta.get("comfyui_prompt", meta.get("comfyui_workflow"))
        if not isinstance(found, dict):
            raise WorkflowFormatError(f"{path}: the embedded ComfyUI workflow is not a JSON object")
        return found
    wf = meta.get("workflow")
    if not isinstance(wf, dict):
        raise WorkflowFormatError(f"{path}: the embedded metadata has no workflow")
    wf = json.loads(json.dumps(wf))
    for name, value in (meta.get("parameters") or {}).items():
        param = wf.get("parameters", {}).get(name)
        if isinstance(param, dict):
            param["default"] = value
    return wf
