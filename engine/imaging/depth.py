"""Depth maps from the user's ONNX depth estimator (Depth Anything v1/v2, MiDaS/DPT exports), in
``models/depth``. Atelier ships and downloads none; a missing file, or a PyTorch file that would need its
architecture's code, is named with what to do.

The model takes an RGB picture ``[1, 3, H, W]`` normalised with ImageNet's mean and deviation (fixed sizes
are read from the model; free ones are the picture scaled so its shorter side is ``resolution``, each side
a multiple of 14, Depth Anything's patch) and gives relative inverse depth ``[1, H, W]`` or ``[1, 1, H, W]``
(bigger is nearer). The map is resized to the output picture and stretched to 0..1: near white, far black,
as depth ControlNets take it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from atelier.engine.folders import Folders
from atelier.engine.model_loader import LoadOptions, ModelLoader
from atelier.engine.onnx_sessions import cpu_session

MODEL_KIND = "depth"
DEFAULT_MODEL = "depth_anything_v2_vits.onnx"
PATCH = 14
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")
#: names people's files and ComfyUI workflows use (controlnet_aux's PyTorch ones included), offered even
#: when absent so that validation can say what is missing or what to do with it
KNOWN_NAMES = (
    DEFAULT_MODEL,
    "depth_anything_v2_vitb.onnx",
    "depth_anything_v2_vitl.onnx",
    "depth_anything_vits14.onnx",
    "depth_anything_vitb14.onnx",
    "depth_anything_vitl14.onnx",
    "depth_anything_v2_vitl.pth",
    "depth_anything_vitl14.pth",
    "dpt_hybrid-midas-501f0c75.pt",
)


class DepthModelMissing(FileNotFoundError):
    pass


def depth_model_choices(files: Folders) -> list[str]:
    """The depth model files of the ``depth`` folders (ONNX, and PyTorch ones so validation can say what
    to do with them), then the usual names (``KNOWN_NAMES``) that are not there."""
    names: list[str] = []
    for folder in files.models.get(MODEL_KIND, []):
        names += [n for n in files.list_files(folder, (".onnx", *TORCH_SUFFIXES)) if n not in names]
    return names + [n for n in KNOWN_NAMES if n not in names]


def check_depth_model(files: Folders, name: str) -> str | None:
    """What keeps ``name`` from running (None: nothing)."""
    if Path(name).suffix.lower() in TORCH_SUFFIXES:
        return (
            f"{name} is a PyTorch file: Atelier runs depth estimators as ONNX (export it, e.g. with Depth "
            "Anything's ONNX export, and put the .onnx file in the depth folder)"
        )
    try:
        files.find_model(MODEL_KIND, name)
    except (FileNotFoundError, ValueError):
        where = ", ".join(str(p) for p in files.models.get(MODEL_KIND, [])) or "(no depth folder configured)"
        return (
            f"{name} not found in {where}: depth maps need your own ONNX depth estimator (Depth Anything or "
            "MiDaS exported to ONNX); Atelier ships and downloads none"
        )
    return None


def _session(path: Path, options: LoadOptions) -> Any:
    return cpu_session(path)


def load_depth_model(files: Folders, models: ModelLoader, name: str) -> Any:
    problem = check_depth_model(files, name)
    if problem:
        raise DepthModelMissing(problem)
    return models.load(files.find_model(MODEL_KIND, name), _session, key="onnx-session")


def model_input_size(session: Any, width: int, height: int, resolution: int) -> tuple[int, int]:
    """(width, height) the model takes: its fixed size, else the picture at ``resolution`` (shorter
    side) in multiples of PATCH."""
    shape = session.get_inputs()[0].shape
    if len(shape) == 4 and isinstance(shape[2], int) and isinstance(shape[3], int):
        return int(shape[3]), int(shape[2])
    scale = resolution / min(width, height)
    return (
        max(PATCH, round(width * scale / PATCH) * PATCH),
        max(PATCH, round(height * scale / PATCH) * PATCH),
    )


def estimate_depth(session: Any, rgb: np.ndarray, out_size: tuple[int, int], resolution: int) -> np.ndarray:
    """Depth [H, W] in 0..1 (near 1) of an RGB uint8 picture, at ``out_size`` (width, height)."""
    h, w = rgb.shape[:2]
    mw, mh = model_input_size(session, w, h, resolution)
    x = cv2.resize(rgb, (mw, mh), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    x = ((x - MEAN) / STD).transpose(2, 0, 1)[None]
    out = np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0], dtype=np.float32)
    if out.ndim < 2 or out.shape[0] != 1 or (out.ndim == 4 and out.shape[1] != 1) or out.ndim > 4:
        raise ValueError(f"a depth estimator gives [1, H, W] or [1, 1, H, W], this one {list(out.shape)}")
    depth = out.reshape(out.shape[-2:])
    depth = cv2.resize(depth, out_size, interpolation=cv2.INTER_LINEAR)
    lo, hi = float(depth.min()), float(depth.max())
    if hi - lo < 1e-12:
        return np.zeros_like(depth)
    return (depth - lo) / (hi - lo)
