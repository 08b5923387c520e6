"""DWPose from the user's ONNX files: a YOLOX person detector and the DWPose whole-body estimator.

The files are the ones ComfyUI's controlnet_aux uses (``yolox_l.onnx`` and ``dw-ll_ucoco_384.onnx``), put in
``models/pose`` (or a folder configured for the ``pose`` kind); Atelier ships and downloads none, and names
the missing file. Both run on onnxruntime's CPU provider.

- YOLOX: the picture letterboxed into the model's square input (top-left, grey 114 padding, BGR 0..255),
  output ``[1, N, 5 + classes]`` rows of grid-relative (cx, cy, log w, log h), objectness and class scores
  over strides 8, 16, 32; people (class 0) kept above a score, then non-maximum suppression.
- DWPose (RTMPose with SimCC heads): each person's box grown by 1.25 and fitted to the model's aspect
  ratio, warped to its input (BGR normalised by ImageNet's mean and deviation on 0..255), outputs
  ``simcc_x [1, K, 2*W]`` and ``simcc_y [1, K, 2*H]``: each keypoint's position is the argmax over its row
  (halved), its score the smaller of the two maxima. Of COCO-WholeBody's 133 keypoints the 17 body ones map
  to OpenPose's 18 (neck: the shoulders' midpoint) and 91..132 are the two hands.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from atelier.engine.folders import Folders
from atelier.engine.model_loader import LoadOptions, ModelLoader
from atelier.engine.onnx_sessions import OnnxRuntimeMissing, cpu_session

from .pose import BODY_PARTS, Pose

MODEL_KIND = "pose"
DETECTOR_DEFAULT = "yolox_l.onnx"
ESTIMATOR_DEFAULT = "dw-ll_ucoco_384.onnx"
STRIDES = (8, 16, 32)
PAD_VALUE = 114
PERSON_SCORE = 0.3
NMS_IOU = 0.45
BOX_PADDING = 1.25
KEYPOINT_SCORE = 0.3
SIMCC_SPLIT = 2.0
MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)
#: COCO body keypoint index for each OpenPose keypoint (the neck, None, is the shoulders' midpoint)
COCO_TO_OPENPOSE: tuple[int | None, ...] = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
LEFT_HAND = slice(91, 112)
RIGHT_HAND = slice(112, 133)


class PoseModelMissing(FileNotFoundError):
    pass


def _where(files: Folders) -> str:
    return ", ".join(str(p) for p in files.models.get(MODEL_KIND, [])) or "(no pose folder configured)"


def check_pose_files(files: Folders, names: dict[str, str]) -> list[tuple[str | None, str]]:
    """For each input naming a pose model file: a message when it is not an ONNX file that exists."""
    problems: list[tuple[str | None, str]] = []
    for input_name, name in names.items():
        if not name.lower().endswith(".onnx"):
            problems.append((input_name, f"{name!r} is not an ONNX file (DWPose runs .onnx models)"))
            continue
        try:
            files.find_model(MODEL_KIND, name)
        except (FileNotFoundError, ValueError):
            problems.append(
                (
                    input_name,
                    f"{name} not found in {_where(files)}: DWPose needs your own {name} (Atelier ships and "
                    "downloads none); put it there, or use OpenposePreprocessor (MediaPipe)",
                )
            )
    return problems


def coco_wholebody_to_openpose(
    keypoints: np.ndarray, scores: np.ndarray, threshold: float = KEYPOINT_SCORE
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """OpenPose's 18 body keypoints and the two 21-point hands (left, right) from COCO-WholeBody's 133
    keypoints ``[133, 2]`` (any unit) and their ``scores`` [133]; those scoring under ``threshold`` are NaN."""
    if keypoints.shape != (133, 2) or scores.shape != (133,):
        raise ValueError(f"COCO-WholeBody has 133 keypoints, got {keypoints.shape} and {scores.shape}")
    pts = keypoints.astype(np.float64).copy()
    pts[scores < threshold] = np.nan
    body = np.full((len(BODY_PARTS), 2), np.nan)
    for k, src in enumerate(COCO_TO_OPENPOSE):
        if src is not None:
            body[k] = pts[src]
    body[1] = (pts[5] + pts[6]) / 2.0
    return body, (pts[LEFT_HAND], pts[RIGHT_HAND])


def yolox_people(
    output: np.ndarray, input_size: tuple[int, int], ratio: float, score: float = PERSON_SCORE
) -> np.ndarray:
    """People's boxes ``[n, 4]`` (x0, y0, x1, y1 in the original picture's pixels) from a YOLOX output
    ``[1, N, 5 + classes]`` for an input of ``input_size`` (height, width) letterboxed at ``ratio``."""
    rows = np.asarray(output, dtype=np.float32).reshape(-1, output.shape[-1])
    grids, strides = [], []
    h, w = input_size
    for s in STRIDES:
        gy, gx = np.meshgrid(np.arange(h // s), np.arange(w // s), indexing="ij")
        grids.append(np.stack([gx.ravel(), gy.ravel()], axis=1))
        strides.append(np.full((gx.size, 1), s))
    grid, stride = np.concatenate(grids), np.concatenate(strides)
    if grid.shape[0] != rows.shape[0]:
        raise ValueError(f"a YOLOX output of {rows.shape[0]} rows does not fit an input of {w}x{h}")
    centre = (rows[:, :2] + grid) * stride
    size = np.exp(rows[:, 2:4]) * stride
    person = rows[:, 4] * rows[:, 5]
    keep = person >= score
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)[keep] / ratio
    person = person[keep]
    if not len(boxes):
        return np.zeros((0, 4), dtype=np.float32)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    chosen = cv2.dnn.NMSBoxes(xywh.tolist(), person.tolist(), score, NMS_IOU)
    return boxes[np.asarray(chosen, dtype=np.int64).ravel()]


def box_transform(box: np.ndarray, model_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(centre, scale) of the crop a person's box becomes: grown by BOX_PADDING, fitted to the model's
    width/height ratio (``model_size`` is width, height)."""
    x0, y0, x1, y1 = box
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2], dtype=np.float32)
    w, h = (x1 - x0) * BOX_PADDING, (y1 - y0) * BOX_PADDING
    aspect = model_size[0] / model_size[1]
    if w > h * aspect:
        h = w / aspect
    else:
        w = h * aspect
    return centre, np.array([w, h], dtype=np.float32)


def simcc_decode(
    simcc_x: np.ndarray,
    simcc_y: np.ndarray,
    centre: np.ndarray,
    scale: np.ndarray,
    model_size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints ``[K, 2]`` in the picture's pixels and scores [K] from one person's SimCC rows."""
    x = np.argmax(simcc_x, axis=-1).astype(np.float32) / SIMCC_SPLIT
    y = np.argmax(simcc_y, axis=-1).astype(np.float32) / SIMCC_SPLIT
    scores = np.minimum(simcc_x.max(axis=-1), simcc_y.max(axis=-1))
    in_model = np.stack([x, y], axis=-1)
    size = np.array(model_size, dtype=np.float32)
    return in_model / size * scale + centre - scale / 2, scores


@dataclass(frozen=True)
class DWPose:
    """The two sessions, ready to find poses."""

    detector: Any
    estimator: Any

    def _people(self, bgr: np.ndarray) -> np.ndarray:
        inp = self.detector.get_inputs()[0]
        h, w = (int(d) if isinstance(d, int) else 640 for d in inp.shape[2:4])
        ratio = min(h / bgr.shape[0], w / bgr.shape[1])
        resized = cv2.resize(bgr, (max(1, round(bgr.shape[1] * ratio)), max(1, round(bgr.shape[0] * ratio))))
        padded = np.full((h, w, 3), PAD_VALUE, dtype=np.float32)
        padded[: resized.shape[0], : resized.shape[1]] = resized
        out = self.detector.run(None, {inp.name: padded.transpose(2, 0, 1)[None]})[0]
        return yolox_people(out, (h, w), ratio)

    def poses(self, rgb: np.ndarray) -> list[Pose]:
        """The poses of the people in an RGB uint8 picture, keypoints in 0..1."""
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        inp = self.estimator.get_inputs()[0]
        mh, mw = (int(d) for d in inp.shape[2:4])
        found: list[Pose] = []
        for box in self._people(bgr):
            centre, scale = box_transform(box, (mw, mh))
            src = np.array(
                [
                    centre - scale / 2,
                    [centre[0] + scale[0] / 2, centre[1] - scale[1] / 2],
                    centre + scale / 2,
                ],
                dtype=np.float32,
            )
            dst = np.array([[0, 0], [mw, 0], [mw, mh]], dtype=np.float32)
            crop = cv2.warpAffine(bgr, cv2.getAffineTransform(src, dst), (mw, mh), flags=cv2.INTER_LINEAR)
            x = ((crop.astype(np.float32) - MEAN) / STD).transpose(2, 0, 1)[None]
            simcc_x, simcc_y = self.estimator.run(None, {inp.name: x})[:2]
            kps, scores = simcc_decode(simcc_x[0], simcc_y[0], centre, scale, (mw, mh))
            if kps.shape[0] != 133:
                raise ValueError(
                    f"the pose estimator gives {kps.shape[0]} keypoints; DWPose's whole-body model gives 133"
                )
            norm = np.array([rgb.shape[1], rgb.shape[0]], dtype=np.float64)
            body, hands = coco_wholebody_to_openpose(kps / norm, scores)
            found.append(Pose(body, hands))
        return found


def _session(path: Path, options: LoadOptions) -> Any:
    try:
        return cpu_session(path)
    except OnnxRuntimeMissing as exc:
        raise PoseModelMissing(f"DWPose runs on onnxruntime ({exc}): pip install onnxruntime") from None


def load_dwpose(files: Folders, models: ModelLoader, detector: str, estimator: str) -> DWPose:
    """The DWPose pair, each session loaded once per file version; a missing file is named."""
    problems = check_pose_files(files, {"bbox_detector": detector, "pose_estimator": estimator})
    if problems:
        raise PoseModelMissing("; ".join(message for _, message in problems))
    det = models.load(files.find_model(MODEL_KIND, detector), _session, key="onnx-session")
    est = models.load(files.find_model(MODEL_KIND, estimator), _session, key="onnx-session")
    return DWPose(det, est)
