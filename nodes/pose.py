"""Pose preprocessors: a photo to an OpenPose-format skeleton picture for OpenPose ControlNets.

Names and inputs of ComfyUI's controlnet_aux nodes (ComfyUI core has none). ``OpenposePreprocessor`` runs
MediaPipe, whose models ship inside its wheel (``pip install 'atelier[pose]'``); ``DWPreprocessor`` runs
the user's DWPose ONNX files (``models/pose``). The skeleton is drawn by ``engine/imaging/pose.py``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from atelier.engine.faces.detect import to_host_rgb
from atelier.engine.folders import Folders
from atelier.engine.imaging.pose import Pose, draw_openpose, output_size
from atelier.engine.imaging.pose_dwpose import (
    DETECTOR_DEFAULT,
    ESTIMATOR_DEFAULT,
    MODEL_KIND,
    check_pose_files,
    load_dwpose,
)
from atelier.engine.imaging.pose_mediapipe import estimate_poses
from atelier.engine.models.sockets import IMAGE
from atelier.engine.node import Choice, Context, Int, Node, NodeResult, Output, Socket

_SWITCH = ("enable", "disable")


def _switch(name: str) -> Any:
    return Choice(name, _SWITCH, "enable")


def _resolution() -> Any:
    return Int(
        "resolution",
        512,
        min=64,
        max=16384,
        step=64,
        description="the pose picture's shorter side, pixels (its aspect ratio is the photo's)",
    )


def _render(
    image: Tensor, found: list[list[Pose]], resolution: int, body: bool, hands: bool
) -> tuple[Tensor, list[str]]:
    _, h, w, _ = image.shape
    out_w, out_h = output_size(w, h, resolution)
    pictures, notes = [], []
    for i, poses in enumerate(found):
        if not poses:
            notes.append(f"no person found in picture {i + 1} of {len(found)}: its pose picture is black")
        pictures.append(torch.from_numpy(draw_openpose(poses, out_w, out_h, body=body, hands=hands)))
    return torch.stack(pictures).float().div(255.0).to(image.device), notes


#: the inputs both pose estimators take, as controlnet_aux's nodes name them
_POSE_INPUTS = (
    Socket("image", IMAGE),
    _switch("detect_hand"),
    _switch("detect_body"),
    _switch("detect_face"),
    _resolution(),
)


class OpenposePreprocessor(Node):
    """The pose of the person in each picture as an OpenPose skeleton on black (body and hands), found
    by MediaPipe Pose and Hands (models inside the MediaPipe wheel; nothing is downloaded). MediaPipe finds
    one person per picture and no OpenPose face keypoints."""

    display_name = "OpenPose Pose"
    category = "ControlNet Preprocessors/Faces and Poses Estimators"
    inputs = _POSE_INPUTS
    outputs = (Output(IMAGE),)

    def run(
        self,
        ctx: Context,
        image: Tensor,
        detect_hand: str,
        detect_body: str,
        detect_face: str,
        resolution: int,
    ) -> NodeResult:
        hands = detect_hand == "enable"
        try:
            found = estimate_poses(to_host_rgb(image), hands=hands)
        except Exception as exc:
            raise RuntimeError(f"node {ctx.node_id} (OpenposePreprocessor): {exc}") from exc
        pictures, notes = _render(image, found, resolution, detect_body == "enable", hands)
        if detect_face == "enable":
            notes.append("face keypoints are not drawn: MediaPipe gives no OpenPose face keypoints")
        return NodeResult(outputs=(pictures,), ui={"text": notes} if notes else None)


def _pose_files(files: Folders) -> list[str]:
    names: list[str] = []
    for folder in files.models.get(MODEL_KIND, []):
        names += [n for n in files.list_files(folder, (".onnx",)) if n not in names]
    for default in (DETECTOR_DEFAULT, ESTIMATOR_DEFAULT):  # offered even when absent: validation names it
        if default not in names:
            names.append(default)
    return names


class DWPreprocessor(Node):
    """The poses of the people in each picture as OpenPose skeletons on black, found by DWPose: the
    user's YOLOX person detector and DWPose whole-body estimator ONNX files from models/pose (as
    ComfyUI's controlnet_aux names them: yolox_l.onnx, dw-ll_ucoco_384.onnx)."""

    display_name = "DWPose Estimator"
    category = "ControlNet Preprocessors/Faces and Poses Estimators"
    inputs = (
        *_POSE_INPUTS,
        Choice("bbox_detector", _pose_files, DETECTOR_DEFAULT),
        Choice("pose_estimator", _pose_files, ESTIMATOR_DEFAULT),
    )
    outputs = (Output(IMAGE),)

    @classmethod
    def check_inputs(cls, files: Folders, **literals: Any) -> list[tuple[str | None, str]]:
        names = {k: literals[k] for k in ("bbox_detector", "pose_estimator") if k in literals}
        return check_pose_files(files, names)

    def run(
        self,
        ctx: Context,
        image: Tensor,
        detect_hand: str,
        detect_body: str,
        detect_face: str,
        resolution: int,
        bbox_detector: str,
        pose_estimator: str,
    ) -> NodeResult:
        try:
            model = load_dwpose(ctx.files, ctx.models, bbox_detector, pose_estimator)
            found = [model.poses(frame) for frame in to_host_rgb(image)]
        except Exception as exc:
            raise RuntimeError(f"node {ctx.node_id} (DWPreprocessor): {exc}") from exc
        hands = detect_hand == "enable"
        pictures, notes = _render(image, found, resolution, detect_body == "enable", hands)
        if detect_face == "enable":
            notes.append("face keypoints are not drawn (Atelier draws the body and hands)")
        return NodeResult(outputs=(pictures,), ui={"text": notes} if notes else None)
