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
from atelier.engine import image_probe
from atelier.engine.limits import Limits as JobLimits


@dataclass(frozen=True)
class Limits:
    """What an upload may weigh: bytes on the wire, pixels once decoded (a small PNG can hold a huge
    image: the pixel count is checked from the header before anything is decoded), and for animations
    and multi-page files the frames and the bytes all of them take decoded as a job holds them."""

    max_upload_bytes: int
    max_image_pixels: int
    max_frames: int = JobLimits().max_frames
    max_decoded_bytes: int = JobLimits().max_decoded_bytes


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
    """``too_large``: over the byte limit, too many frames or too many bytes once decoded; ``bad``: no
    name, not an image, too many pixels in a frame, a bad path; ``missing``: the image a mask is for is
    not there."""

    reason: Literal["too_large", "bad", "missing"]
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
            path = F.resolve_contained(base, f"{subfolder}/{name}" if subfolder else name)
        except F.UnsafePathError as exc:
            return FileRefused("bad", str(exc))
        if not path.is_file():
            return FileRefused("missing", f"no {kind} file {name!r}")
        return path

    def upload(self, data: bytes, filename: str, subfolder: str, overwrite: bool) -> Uploaded | UploadRefused:
        """Check that ``data`` is an image within the limits and write it under the input folder; an
        existing file keeps its name unless ``overwrite`` (the upload gets ``name (1).png``)."""
        checked = self.check_upload(data, filename)
        if isinstance(checked, UploadRefused):
            return checked
        name, (width, height) = checked
        return self.store(data, name, subfolder, overwrite, width, height)

    def check_upload(self, data: bytes, filename: str) -> tuple[str, tuple[int, int]] | UploadRefused:
        """The file name an upload is stored under (its last part) and the image's (width, height), if
        ``data`` is an image within the limits with an image file name."""
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
        size = image_size(
            data,
            limits.max_image_pixels,
            max_frames=limits.max_frames,
            max_decoded_bytes=limits.max_decoded_bytes,
        )
        if isinstance(size, TooLarge):
            return UploadRefused("too_large", f"{name!r} {size.message}")
        if isinstance(size, str):
            return UploadRefused("bad", f"{name!r} {size}")
        return name, size

    def store(
        self, data: bytes, name: str, subfolder: str, overwrite: bool, width: int, height: int
    ) -> Uploaded | UploadRefused:
        """Write checked image bytes as ``subfolder/name`` under the input folder (never outside it)."""
        input_dir = self.folders.input
        try:
            folder = F.resolve_inside(input_dir, subfolder) if subfolder else input_dir.resolve()
            target = F.resolve_contained(input_dir, f"{subfolder}/{name}" if subfolder else name)
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


@dataclass(frozen=True)
class TooLarge:
    """An image with more frames, or more bytes once decoded, than the limits allow."""

    message: str


def image_size(
    data: bytes, max_pixels: int, *, max_frames: int | None = None, max_decoded_bytes: int | None = None
) -> tuple[int, int] | str | TooLarge:
    """(width, height) of an image whose first frame decodes completely, every frame of which has at most
    ``max_pixels`` pixels, with at most ``max_frames`` frames that take at most ``max_decoded_bytes``
    decoded (as a job holds them, ``image_probe.DECODED_BYTES_PER_PIXEL``); else why not (a phrase that
    follows the file's name).

    The pixel counts and frames come from the headers (``Image.open`` and the frame count read nothing
    more) and are checked before any decoding; only the first frame is decoded. PIL's process-wide
    ``Image.MAX_IMAGE_PIXELS`` is left alone: setting it per request would race with every other thread
    decoding images (nodes loading inputs, previews). PIL still raises its own ``DecompressionBombError``
    for images over twice its global limit; that is reported the same way.
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            p = image_probe.probe(im)
            big = max(p.frame_sizes, key=lambda s: s[0] * s[1])
            if big[0] * big[1] > max_pixels:
                which = "" if p.frames == 1 else f"has a frame of {p.frames} that "
                return f"{which}is {big[0]}x{big[1]}: over {max_pixels} pixels"
            if max_frames is not None and p.frames > max_frames:
                return TooLarge(f"has {p.frames} frames: over the limit max_frames={max_frames}")
            decoded = p.decoded_bytes(image_probe.DECODED_BYTES_PER_PIXEL)
            if max_decoded_bytes is not None and decoded > max_decoded_bytes:
                return TooLarge(
                    f"has {p.frames} frame{'s' if p.frames != 1 else ''} of {width}x{height} that would need "
                    f"{decoded / 1e9:.1f} GB decoded: over the limit max_decoded_bytes={max_decoded_bytes}"
                )
            im.verify()
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Image.DecompressionBombError as exc:
        return f"is over {max_pixels} pixels: {exc}"
    except Exception as exc:
        return f"is not an image Atelier can read: {exc}"
    return width, height
