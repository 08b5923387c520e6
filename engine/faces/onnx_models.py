"""User-supplied face detector files: YOLO face models exported to ONNX (onnxruntime) and YuNet ONNX
(OpenCV's ``FaceDetectorYN``). Nothing is downloaded; files come from the ``face_detectors`` model folder
(also ComfyUI Impact Pack's ``ultralytics/bbox`` and A1111 ADetailer's ``adetailer`` folders).

YOLO outputs are read in the layouts ultralytics exports: ``[1, 4 + classes, N]`` (v8/v11 detect, box as
centre and size in input pixels, class probabilities), the same with ``1 + 3 * K`` keypoint channels for
pose models (a face model with K = 5 gives landmarks), and ``[1, N, 5 + classes]`` (v5, with objectness).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from atelier.engine.model_loader import LoadOptions
from atelier.engine.onnx_sessions import OnnxRuntimeMissing, cpu_session

from .boxes import nms
from .detector import DetectorUnavailable, RawFace, downscale_factor

NMS_IOU = 0.45
DEFAULT_SIZE = 640
YUNET_OUTPUT_PREFIXES = ("cls_", "obj_", "bbox_", "kps_")
YUNET_MAX_SIDE = 1280
PYTORCH_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin", ".ckpt")


def export_hint(name: str) -> str:
    return (
        f"{name} is a PyTorch file, which needs the ultralytics package to run; Atelier runs user face "
        f"detectors as ONNX: export it once with `yolo export model={name} format=onnx` and put the .onnx "
        "file in models/face_detectors"
    )


# -- YOLO ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the network's square input: scale, then padding."""

    scale: float
    pad_x: float
    pad_y: float

    def to_image(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return (x - self.pad_x) / self.scale, (y - self.pad_y) / self.scale


def letterbox(rgb: np.ndarray, height: int, width: int) -> tuple[np.ndarray, Letterbox]:
    """[H, W, 3] uint8 to the network input [1, 3, height, width] float32 in 0..1: scaled to fit, centred,
    padded with grey 114 (ultralytics' convention)."""
    import cv2

    h, w = rgb.shape[:2]
    scale = min(height / h, width / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA)
    canvas = np.full((height, width, 3), 114, dtype=np.uint8)
    top, left = (height - nh) // 2, (width - nw) // 2
    canvas[top : top + nh, left : left + nw] = resized
    x = canvas.astype(np.float32).transpose(2, 0, 1)[None] / 255.0
    return np.ascontiguousarray(x), Letterbox(scale, float(left), float(top))


@dataclass(frozen=True)
class YoloLayout:
    """How to read a YOLO output tensor."""

    channels_first: bool  # [1, C, N] (v8/v11) rather than [1, N, C] (v5)
    objectness: bool  # v5: a fifth channel multiplies the class probabilities
    classes: int
    keypoints: int  # K: keypoints of a pose model (3 channels each: x, y, visibility)


def yolo_layout(shape: tuple[int, ...], metadata: dict[str, str]) -> YoloLayout:
    """The layout of a YOLO output of ``shape`` given the model's metadata (ultralytics writes ``task``,
    ``kpt_shape``, ``names``)."""
    if len(shape) != 3 or shape[0] not in (1, -1):
        raise DetectorUnavailable(
            f"a YOLO detector has one output of shape [1, C, N] or [1, N, C], not {list(shape)}"
        )
    c_first = shape[1] < shape[2]
    channels = shape[1] if c_first else shape[2]
    kpts = 0
    kpt_shape = metadata.get("kpt_shape")
    if kpt_shape:
        k = ast.literal_eval(kpt_shape)
        kpts = int(k[0]) if k and int(k[1]) == 3 else 0
    elif "names" not in metadata and c_first and channels == 4 + 1 + 5 * 3:
        kpts = 5  # a face-landmark model exported without metadata (yolov8-face and friends)
    if kpts:
        pose_channels = 5 + 3 * kpts
        c_first = shape[1] == pose_channels or (shape[2] != pose_channels and c_first)
        return YoloLayout(c_first, False, 1, kpts)
    if c_first:
        return YoloLayout(True, False, channels - 4, 0)
    return YoloLayout(False, True, channels - 5, 0)


def decode_yolo(pred: Tensor, layout: YoloLayout) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One image's output (``[C, N]`` or ``[N, C]``) to boxes ``[N, 4]`` (x0, y0, x1, y1, input pixels),
    scores ``[N]``, class indices ``[N]`` and keypoints ``[N, K, 2]`` (K = 0 for plain detectors)."""
    p = pred if not layout.channels_first else pred.transpose(0, 1)  # [N, C]
    cx, cy, w, h = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
    if layout.keypoints:
        scores = p[:, 4]
        classes = torch.zeros_like(scores, dtype=torch.long)
        kp = p[:, 5 : 5 + 3 * layout.keypoints].reshape(-1, layout.keypoints, 3)[..., :2]
        return boxes, scores, classes, kp
    start = 5 if layout.objectness else 4
    cls = p[:, start : start + layout.classes]
    scores, classes = (
        cls.max(-1) if layout.classes > 0 else (torch.ones(len(p)), torch.zeros(len(p), dtype=torch.long))
    )
    if layout.objectness:
        scores = scores * p[:, 4]
    return boxes, scores, classes, torch.zeros(len(p), 0, 2)


class YoloOnnx:
    """A YOLO face detector exported to ONNX, on onnxruntime's CPU provider."""

    def __init__(self, session: Any, name: str) -> None:
        self.session = session
        self.name = name
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        dims = list(inp.shape)
        meta = dict(session.get_modelmeta().custom_metadata_map or {})
        size = DEFAULT_SIZE
        if "imgsz" in meta:
            sz = ast.literal_eval(meta["imgsz"])
            size = int(sz[0] if isinstance(sz, list | tuple) else sz)
        self.height = dims[2] if isinstance(dims[2], int) and dims[2] > 0 else size
        self.width = dims[3] if isinstance(dims[3], int) and dims[3] > 0 else size
        out = session.get_outputs()[0]
        shape = tuple(d if isinstance(d, int) else -1 for d in out.shape)
        self.metadata = meta
        names = meta.get("names")
        self.labels: dict[int, str] = ast.literal_eval(names) if names else {}
        self._layout: YoloLayout | None = yolo_layout(shape, meta) if -1 not in shape[1:] else None

    def detect(self, rgb: np.ndarray, threshold: float) -> list[RawFace]:
        x, fit = letterbox(rgb, self.height, self.width)
        pred = self.session.run(None, {self.input_name: x})[0]
        layout = self._layout or yolo_layout(tuple(pred.shape), self.metadata)
        boxes, scores, classes, kp = decode_yolo(
            torch.from_numpy(np.asarray(pred[0], dtype=np.float32)), layout
        )
        keep = scores >= threshold
        boxes, scores, classes, kp = boxes[keep], scores[keep], classes[keep], kp[keep]
        h, w = rgb.shape[:2]
        out = []
        for i in nms(boxes, scores, NMS_IOU).tolist():
            bx0, by0 = fit.to_image(boxes[i, 0], boxes[i, 1])
            bx1, by1 = fit.to_image(boxes[i, 2], boxes[i, 3])
            box = (
                max(0.0, float(bx0)),
                max(0.0, float(by0)),
                min(float(w), float(bx1)),
                min(float(h), float(by1)),
            )
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            marks: tuple[tuple[float, float], ...] = ()
            if kp.shape[1] == 5:
                px, py = fit.to_image(kp[i, :, 0], kp[i, :, 1])
                marks = tuple(zip(px.tolist(), py.tolist(), strict=True))
            label = self.labels.get(int(classes[i]), "face")
            out.append(RawFace(box, float(scores[i]), marks, label))
        return out


# -- YuNet -----------------------------------------------------------------------------------------


class YuNet:
    """OpenCV's YuNet face detector (``FaceDetectorYN``) over a user's YuNet ONNX file."""

    def __init__(self, model: Any, name: str) -> None:
        self.model = model
        self.name = name

    def detect(self, rgb: np.ndarray, threshold: float) -> list[RawFace]:
        import cv2

        h, w = rgb.shape[:2]
        f = downscale_factor(h, w, YUNET_MAX_SIDE)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if f < 1.0:
            bgr = cv2.resize(bgr, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        self.model.setInputSize((bgr.shape[1], bgr.shape[0]))
        self.model.setScoreThreshold(float(threshold))
        _, found = self.model.detect(bgr)
        out = []
        for row in np.asarray(found if found is not None else np.zeros((0, 15)), dtype=np.float64).reshape(
            -1, 15
        ):
            x, y, bw, bh = (row[:4] / f).tolist()
            box = (max(0.0, x), max(0.0, y), min(float(w), x + bw), min(float(h), y + bh))
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            pts = (row[4:14] / f).reshape(5, 2)
            out.append(RawFace(box, float(row[14]), tuple((float(a), float(b)) for a, b in pts)))
        out.sort(key=lambda r: -r.score)
        return out


# -- loading ---------------------------------------------------------------------------------------


def load(path: Path, options: LoadOptions) -> YoloOnnx | YuNet:
    """``ctx.models`` loader of a user's detector file: YuNet (by name or by its output names) through
    OpenCV, any other ONNX file as YOLO through onnxruntime. Clear errors for what cannot run."""
    name = path.name
    if path.suffix.lower() in PYTORCH_SUFFIXES:
        raise DetectorUnavailable(export_hint(name))
    if path.suffix.lower() != ".onnx":
        raise DetectorUnavailable(
            f"{name}: a face detector file must be ONNX (.onnx), not {path.suffix or 'no extension'}"
        )
    try:
        session = cpu_session(path)
    except OnnxRuntimeMissing as exc:
        raise DetectorUnavailable(
            f"ONNX face detectors need onnxruntime ({exc}): pip install onnxruntime"
        ) from exc
    except ValueError as exc:
        raise DetectorUnavailable(str(exc)) from exc
    outputs = [o.name for o in session.get_outputs()]
    if "yunet" in name.lower() or any(o.startswith(YUNET_OUTPUT_PREFIXES) for o in outputs):
        import cv2

        try:
            model = cv2.FaceDetectorYN.create(str(path), "", (320, 320), 0.5, 0.3, 5000)
        except cv2.error as exc:
            raise DetectorUnavailable(
                f"{name}: OpenCV could not load it as a YuNet face detector: {exc}"
            ) from exc
        return YuNet(model, name)
    shapes_of = [o.shape for o in session.get_outputs()]
    if len(shapes_of) == 2 and len(shapes_of[0]) == 3 and len(shapes_of[1]) == 4:
        raise DetectorUnavailable(
            f"{name} is a YOLO segmentation model (boxes plus mask prototypes); use a box (bbox) face model"
        )
    if len(outputs) >= 1 and len(shapes_of[0]) == 3:
        return YoloOnnx(session, name)
    shapes = ", ".join(f"{o.name} {o.shape}" for o in session.get_outputs())
    raise DetectorUnavailable(
        f"{name} is neither a YOLO detector (one output [1, 4 + classes, N]) nor YuNet (outputs cls_8, obj_8, "
        f"bbox_8, kps_8, ...); its outputs: {shapes}"
    )
