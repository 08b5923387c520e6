"""Image nodes: make, load, scale, blend, invert, save and preview images.

IMAGE is a float tensor ``[B, H, W, C]`` in 0..1 (C = 3); MASK is ``[B, H, W]`` in 0..1.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from atelier.engine import folders
from atelier.engine.hashing import file_fingerprint
from atelier.engine.models.sockets import IMAGE, MASK
from atelier.engine.node import (
    Choice,
    Context,
    Float,
    Int,
    Node,
    NodeResult,
    Output,
    Socket,
    String,
    input_files,
)
from atelier.engine.pnginfo import png_info

UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
MAX_SIZE = 16384


def to_pil(image: torch.Tensor) -> list[Image.Image]:
    """IMAGE batch -> PIL images (8-bit RGB)."""
    arr = (image.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
    return [Image.fromarray(a[..., :3] if a.shape[-1] >= 3 else a[..., 0]) for a in arr]


def from_pil(im: Image.Image) -> torch.Tensor:
    """PIL image -> IMAGE ``[1, H, W, 3]``."""
    arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.copy())[None]


def resize(image: torch.Tensor, width: int, height: int, method: str) -> torch.Tensor:
    """Resize an IMAGE batch ``[B,H,W,C]`` with one of UPSCALE_METHODS."""
    if method == "lanczos":  # PIL on 8-bit pictures, as ComfyUI does (same values); back on the device after
        out = [from_pil(im.resize((width, height), Image.LANCZOS)) for im in to_pil(image)]
        return torch.cat(out).to(image.device, image.dtype)
    x = image.movedim(-1, 1)
    kwargs: dict[str, Any] = {}
    if method in ("bilinear", "bicubic"):
        kwargs["align_corners"] = False
        kwargs["antialias"] = True
    x = F.interpolate(x.float(), size=(height, width), mode=method, **kwargs)
    return x.clamp(0, 1).movedim(1, -1).to(image.dtype)


def center_crop(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Crop ``image`` to the aspect ratio width:height around its centre."""
    _, h, w, _ = image.shape
    target = width / height
    if w / h > target:
        new_w = max(1, round(h * target))
        x0 = (w - new_w) // 2
        return image[:, :, x0 : x0 + new_w]
    new_h = max(1, round(w / target))
    y0 = (h - new_h) // 2
    return image[:, y0 : y0 + new_h]


class EmptyImage(Node):
    """A batch of images of one colour."""

    category = "image"
    inputs = (
        Int("width", 512, min=1, max=MAX_SIZE, step=8),
        Int("height", 512, min=1, max=MAX_SIZE, step=8),
        Int("batch_size", 1, min=1, max=4096),
        Int("color", 0, min=0, max=0xFFFFFF, description="RGB as an integer, 0xRRGGBB"),
    )
    outputs = (Output(IMAGE),)

    def run(self, ctx: Context, width: int, height: int, batch_size: int, color: int) -> torch.Tensor:
        rgb = (
            torch.tensor([(color >> 16) & 255, (color >> 8) & 255, color & 255], dtype=torch.float32) / 255.0
        )
        return rgb.to(ctx.device).expand(batch_size, height, width, 3).clone()


class ImageInvert(Node):
    category = "image"
    inputs = (Socket("image", IMAGE),)
    outputs = (Output(IMAGE),)

    def run(self, ctx: Context, image: torch.Tensor) -> torch.Tensor:
        return 1.0 - image


class ImageBlend(Node):
    """Blend two images (the second is resized to the first when sizes differ)."""

    category = "image"
    inputs = (
        Socket("image1", IMAGE),
        Socket("image2", IMAGE),
        Float("blend_factor", 0.5, min=0.0, max=1.0, step=0.01),
        Choice("blend_mode", ["normal", "multiply", "screen", "overlay", "soft_light", "difference"]),
    )
    outputs = (Output(IMAGE),)

    def run(
        self, ctx: Context, image1: torch.Tensor, image2: torch.Tensor, blend_factor: float, blend_mode: str
    ):
        if image2.shape[1:3] != image1.shape[1:3]:
            image2 = resize(image2, image1.shape[2], image1.shape[1], "bicubic")
        a, b = image1, image2.to(image1.device, image1.dtype)
        if blend_mode == "normal":
            mixed = b
        elif blend_mode == "multiply":
            mixed = a * b
        elif blend_mode == "screen":
            mixed = 1 - (1 - a) * (1 - b)
        elif blend_mode == "overlay":
            mixed = torch.where(a <= 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b))
        elif blend_mode == "soft_light":
            g = torch.where(a <= 0.25, ((16 * a - 12) * a + 4) * a, torch.sqrt(a))
            mixed = torch.where(b <= 0.5, a - (1 - 2 * b) * a * (1 - a), a + (2 * b - 1) * (g - a))
        else:
            mixed = (a - b).abs()
        return (a * (1 - blend_factor) + mixed * blend_factor).clamp(0, 1)


class ImageScale(Node):
    """Resize images to a size; 0 for one side keeps the aspect ratio."""

    category = "image/upscaling"
    inputs = (
        Socket("image", IMAGE),
        Choice("upscale_method", UPSCALE_METHODS),
        Int("width", 512, min=0, max=MAX_SIZE, step=1),
        Int("height", 512, min=0, max=MAX_SIZE, step=1),
        Choice("crop", ["disabled", "center"]),
    )
    outputs = (Output(IMAGE),)

    def run(self, ctx: Context, image: torch.Tensor, upscale_method: str, width: int, height: int, crop: str):
        _, h, w, _ = image.shape
        if width == 0 and height == 0:
            return image
        if width == 0:
            width = max(1, round(w * height / h))
        elif height == 0:
            height = max(1, round(h * width / w))
        if crop == "center":
            image = center_crop(image, width, height)
        return resize(image, width, height, upscale_method)


class ImageScaleBy(Node):
    category = "image/upscaling"
    inputs = (
        Socket("image", IMAGE),
        Choice("upscale_method", UPSCALE_METHODS),
        Float("scale_by", 1.0, min=0.01, max=8.0, step=0.01),
    )
    outputs = (Output(IMAGE),)

    def run(self, ctx: Context, image: torch.Tensor, upscale_method: str, scale_by: float) -> torch.Tensor:
        _, h, w, _ = image.shape
        return resize(image, max(1, round(w * scale_by)), max(1, round(h * scale_by)), upscale_method)


class LoadImage(Node):
    """Load an image from the input folder; the MASK output comes from its alpha channel (1 = masked)."""

    category = "image"
    inputs = (Choice("image", input_files),)
    outputs = (Output(IMAGE), Output(MASK))

    @classmethod
    def fingerprint(cls, ctx: Context, image: str) -> str:
        return file_fingerprint(ctx.files.input_path(image))

    @classmethod
    def provenance(cls, ctx: Context, image: str) -> dict[str, Any]:
        return {"sha256": ctx.files.sha256(ctx.files.input_path(image))}

    def run(self, ctx: Context, image: str) -> tuple[torch.Tensor, torch.Tensor]:
        path = ctx.files.input_path(image)
        try:
            im = Image.open(path)
            im.load()
        except Exception as exc:
            raise ValueError(f"cannot read image {image!r}: {exc}") from exc
        frames_img, frames_mask = [], []
        size = None
        for frame_index in range(getattr(im, "n_frames", 1)):
            im.seek(frame_index)
            frame = ImageOps.exif_transpose(im) if frame_index == 0 else im.copy()
            if size is None:
                size = frame.size
            elif frame.size != size:
                continue
            if frame.mode == "I":
                frame = frame.point(lambda v: v * (1 / 255))
            frames_img.append(from_pil(frame))
            if "A" in frame.getbands():
                alpha = np.asarray(frame.getchannel("A"), dtype=np.float32) / 255.0
                frames_mask.append(1.0 - torch.from_numpy(alpha.copy())[None])
            else:
                frames_mask.append(torch.zeros((1, frame.size[1], frame.size[0]), dtype=torch.float32))
        # decoded on the host, then kept on the compute device like every intermediate tensor
        return torch.cat(frames_img).to(ctx.device), torch.cat(frames_mask).to(ctx.device)


def _metadata(ctx: Context) -> dict[str, Any]:
    prov = ctx.job.provenance()
    meta: dict[str, Any] = {"generator": "atelier"}
    if prov.workflow is not None:
        meta["workflow"] = prov.workflow
    if prov.parameters:
        meta["parameters"] = prov.parameters
    if prov.node_versions:
        meta["node_versions"] = prov.node_versions
    if prov.files:  # the files the result depends on (checkpoints, LoRAs, input images) with content hashes
        meta["files"] = prov.files
    return meta


def save_images(
    images: torch.Tensor, folder: Path, prefix: str, metadata: dict[str, Any] | None
) -> list[str]:
    """Write PNGs as ``{prefix}_{NNNNN}_.png`` under ``folder`` without ever overwriting a file."""
    info = png_info(metadata) if metadata is not None else None
    names = []
    for im in to_pil(images):

        def write(path: Path, im: Image.Image = im) -> None:
            with open(path, "wb") as f:
                im.save(f, format="PNG", pnginfo=info, compress_level=4)
                f.flush()
                os.fsync(f.fileno())

        names.append(write_output_file(folder, prefix, ".png", write))
    return names


def write_output_file(folder: Path, prefix: str, suffix: str, write: Callable[[Path], None]) -> str:
    """Write a new file ``{prefix}_{NNNNN}_{suffix}`` under ``folder`` (``prefix`` may name subfolders
    inside it) with ``write(path)``, never overwriting one; returns its name relative to ``folder``."""
    target_dir = folders.resolve_inside(folder, prefix).parent if "/" in prefix else folder.resolve()
    target_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(prefix).name or "Atelier"
    existing = [
        int(p.name[len(stem) + 1 : len(stem) + 6])
        for p in target_dir.glob(f"{stem}_*_{suffix}")
        if p.name[len(stem) + 1 : len(stem) + 6].isdigit()
    ]
    counter = max(existing, default=0) + 1
    # the whole file goes to a hidden temporary file first, then takes its name in one step (a hard link,
    # which fails rather than replaces): a full disk or a crash never leaves a truncated file behind
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}_", suffix=f"{suffix}.part", dir=target_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        while True:
            path = target_dir / f"{stem}_{counter:05d}_{suffix}"
            counter += 1
            try:
                _claim(tmp, path)
            except FileExistsError:
                continue
            break
    finally:
        tmp.unlink(missing_ok=True)
    return path.relative_to(folder.resolve()).as_posix()


def _claim(tmp: Path, path: Path) -> None:
    """Give the finished file ``tmp`` the name ``path``, never replacing a file that is there
    (``FileExistsError``). A hard link where the file system has them; else the name is reserved with an
    exclusive create and the finished file moved over the empty reservation."""
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        raise
    except OSError:
        pass  # no hard links here (FAT, some network shares)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    os.replace(tmp, path)


def _image_refs(names: list[str], kind: str) -> list[dict[str, str]]:
    refs = []
    for n in names:
        sub, _, fname = n.rpartition("/")
        refs.append({"filename": fname, "subfolder": sub, "type": kind})
    return refs


class SaveImage(Node):
    """Save images as PNG in the output folder, with the workflow embedded so the PNG reproduces itself."""

    category = "image"
    output_node = True
    inputs = (Socket("images", IMAGE), String("filename_prefix", "Atelier"))
    outputs = ()

    def run(self, ctx: Context, images: torch.Tensor, filename_prefix: str) -> NodeResult:
        names = save_images(images, ctx.files.output, filename_prefix, _metadata(ctx))
        return NodeResult(ui={"images": _image_refs(names, "output")})


class PreviewImage(Node):
    """Show images without keeping them (written to the temp folder)."""

    category = "image"
    output_node = True
    inputs = (Socket("images", IMAGE),)
    outputs = ()

    def run(self, ctx: Context, images: torch.Tensor) -> NodeResult:
        prefix = "preview_" + hashlib.sha1(ctx.job_id.encode()).hexdigest()[:8]
        names = save_images(images, ctx.files.temp, prefix, _metadata(ctx))
        return NodeResult(ui={"images": _image_refs(names, "temp")})
