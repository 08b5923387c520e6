"""Masks painted in the canvas's mask editor (or ComfyUI's): the mask arrives as an image whose alpha
channel is the mask, and is stored as a copy of the image it was painted on with that alpha, in the input
folder. ``LoadImage`` reads the alpha back as its MASK output (transparent = masked), so a masked copy
feeds inpainting as it is.

The copy is made here rather than in the browser: a canvas keeps colours premultiplied by alpha, so the
colours under a mask (transparent pixels) would come back black; here they are the original's.

Decodes images and writes files: call from a worker thread.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .service_files import FileRefused, FileService, Uploaded, UploadRefused, image_size

#: ComfyUI's annotated names: "photo.png [output]" names an output file
ANNOTATED = re.compile(r"^(?P<name>.*) \[(?P<type>input|output|temp)\]$")


class OriginalRef(BaseModel):
    """The image the mask was painted on, as ComfyUI's ``original_ref`` form field names it (JSON)."""

    model_config = ConfigDict(extra="ignore")

    filename: str = Field(min_length=1)
    subfolder: str = ""
    type: Literal["input", "output", "temp"] = "output"

    @model_validator(mode="before")
    @classmethod
    def _annotated(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("filename"), str):
            m = ANNOTATED.match(data["filename"])
            if m:
                data = {**data, "filename": m["name"], "type": m["type"]}
        return data


def parse_original_ref(text: str) -> OriginalRef | UploadRefused:
    """``original_ref`` read from its JSON text, or why it cannot be."""
    try:
        return OriginalRef.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
        )
        return UploadRefused(
            "bad", f"original_ref must be JSON {{filename, subfolder, type}} naming the image: {problems}"
        )


def upload_mask(
    files: FileService, data: bytes, filename: str, subfolder: str, overwrite: bool, original: OriginalRef
) -> Uploaded | UploadRefused:
    """Store a copy of ``original`` whose alpha is the alpha of the mask image ``data``, as a PNG named
    after ``filename`` (its extension made ``.png``) under ``subfolder`` of the input folder. The mask must
    be the size of the image as it is shown (EXIF orientation applied); the copy is stored upright. Text
    chunks of the original (a workflow it carries) are kept."""
    checked = files.check_upload(data, filename)
    if isinstance(checked, UploadRefused):
        return checked
    name, (width, height) = checked
    name = f"{Path(name).stem}.png"
    found = files.find(original.type, original.filename, original.subfolder)
    if isinstance(found, FileRefused):
        reason: Literal["bad", "missing"] = found.reason
        return UploadRefused(reason, f"original_ref: {found.message}")
    composed = _compose(files, found, data, (width, height))
    if isinstance(composed, UploadRefused):
        return composed
    return files.store(composed, name, subfolder, overwrite, width, height)


def _compose(files: FileService, path: Path, mask: bytes, size: tuple[int, int]) -> bytes | UploadRefused:
    from PIL import Image, ImageOps
    from PIL.PngImagePlugin import PngInfo

    source = path.read_bytes()
    checked = image_size(source, files.limits.max_image_pixels)
    if isinstance(checked, str):
        return UploadRefused("bad", f"original_ref: {path.name!r} {checked}")
    with Image.open(io.BytesIO(source)) as im:
        info = PngInfo()
        for key, value in (getattr(im, "text", None) or {}).items():
            if isinstance(value, str):
                info.add_text(key, value)
        upright = ImageOps.exif_transpose(im)
        if upright.size != size:
            w, h = upright.size
            return UploadRefused(
                "bad",
                f"the mask is {size[0]}x{size[1]} but the image {path.name!r} is {w}x{h}: "
                "a mask must be the size of the image it was painted on",
            )
        out = upright.convert("RGBA")
    with Image.open(io.BytesIO(mask)) as m:
        alpha = m.convert("RGBA").getchannel("A")
    out.putalpha(alpha)
    buf = io.BytesIO()
    out.save(buf, "PNG", pnginfo=info, compress_level=4)
    return buf.getvalue()
