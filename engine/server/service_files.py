"""The file service: serving output, input and temp files by name, and taking image uploads into the
input folder, never outside its folders.

Path resolution touches the file system and uploads decode images: call from a worker thread.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from atelier.engine import folders as F


@dataclass(frozen=True)
class Limits:
    """What an upload may weigh: bytes on the wire, pixels once decoded (a small PNG can hold a huge
    image: the pixel count is checked from the header before anything is decoded)."""

    max_upload_bytes: int
    max_image_pixels: int


@dataclass(frozen=True)
class FileRefused:
    """``bad``: the request names no valid file (unknown kind, a path that climbs out); ``missing``: a
    valid name with no file behind it."""

    reason: Literal["bad", "missing"]
    message: str


@dataclass(frozen=True)
class Uploaded:
    name: str
    subfolder: str
    width: int
    height: int


@dataclass(frozen=True)
class UploadRefused:
    """``too_large``: over the byte limit; ``bad``: no name, not an image, too many pixels, a bad path."""

    reason: Literal["too_large", "bad"]
    message: str


class FileService:
    def __init__(self, folders: F.Folders, limits: Limits) -> None:
        self.folders = folders
        self.limits = limits

    def find(self, kind: str, name: str, subfolder: str = "") -> Path | FileRefused:
        """The path of an output, input or temp file. Stricter than models: a file served over HTTP must
        really be inside its folder, so a link that leads out of it is refused too."""
        fol = self.folders
        base = {"output": fol.output, "input": fol.input, "temp": fol.temp}.get(kind)
        if base is None:
            return FileRefused("bad", f"unknown file type {kind!r}: output, input or temp")
        try:
            folder = F.resolve_inside(base, subfolder) if subfolder else base.resolve()
            path = F.resolve_inside(folder, name)
            if base.resolve() not in path.resolve().parents:
                raise F.UnsafePathError(f"{name!r} reaches outside the {kind} folder")
        except F.UnsafePathError as exc:
            return FileRefused("bad", str(exc))
        if not path.is_file():
            return FileRefused("missing", f"no {kind} file {name!r}")
        return path

    def upload(self, data: bytes, filename: str, subfolder: str, overwrite: bool) -> Uploaded | UploadRefused:
        """Check that ``data`` is an image within the limits and write it under the input folder; an
        existing file keeps its name unless ``overwrite`` (the upload gets ``name (1).png``)."""
        limits = self.limits
        if len(data) > limits.max_upload_bytes:
            return UploadRefused("too_large", f"upload is larger than {limits.max_upload_bytes} bytes")
        name = Path(filename or "").name
        if not name or name.startswith("."):
            return UploadRefused("bad", "the upload needs a file name")
        if not name.lower().endswith(F.IMAGE_EXTENSIONS):
            # an image polyglot saved as .html or .svg would be served back as a page on this origin
            return UploadRefused(
                "bad", f"{name!r}: uploads need an image file extension ({', '.join(F.IMAGE_EXTENSIONS)})"
            )
        size = image_size(data, limits.max_image_pixels)
        if isinstance(size, str):
            return UploadRefused("bad", f"{name!r} {size}")
        width, height = size
        input_dir = self.folders.input
        try:
            folder = F.resolve_inside(input_dir, subfolder) if subfolder else input_dir.resolve()
            target = F.resolve_inside(folder, name)
            if input_dir.resolve() not in target.resolve().parents:  # never written through a link out
                raise F.UnsafePathError(f"{name!r} reaches outside the input folder")
        except F.UnsafePathError as exc:
            return UploadRefused("bad", str(exc))
        folder.mkdir(parents=True, exist_ok=True)
        if target.exists() and not overwrite:
            stem, suffix = target.stem, target.suffix
            n = 1
            while target.exists():
                target = folder / f"{stem} ({n}){suffix}"
                n += 1
        target.write_bytes(data)
        rel = target.relative_to(input_dir.resolve()).as_posix()
        sub, _, fname = rel.rpartition("/")
        return Uploaded(fname, sub, width, height)


def image_size(data: bytes, max_pixels: int) -> tuple[int, int] | str:
    """(width, height) of an image that decodes completely and has at most ``max_pixels`` pixels, or why
    not (a phrase that follows the file's name).

    The pixel count comes from the header (``Image.open`` reads nothing more) and is checked before any
    decoding. PIL's process-wide ``Image.MAX_IMAGE_PIXELS`` is left alone: setting it per request would
    race with every other thread decoding images (nodes loading inputs, previews). PIL still raises its
    own ``DecompressionBombError`` for images over twice its global limit; that is reported the same way.
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if width * height > max_pixels:
                return f"is {width}x{height}: over {max_pixels} pixels"
            im.verify()
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Image.DecompressionBombError as exc:
        return f"is over {max_pixels} pixels: {exc}"
    except Exception as exc:
        return f"is not an image Atelier can read: {exc}"
    return width, height
