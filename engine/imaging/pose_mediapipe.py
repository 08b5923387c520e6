"""Pose estimation with MediaPipe (Apache-2.0), whose legacy ``solutions`` bundle their models in the wheel.

``pip install 'atelier[pose]'`` installs it. MediaPipe 0.10.21's wheel carries the pose detector and the
"full" pose landmark model (``model_complexity=1``; the lite and heavy ones would be downloaded, so they
are never asked for), the palm detector and the hand landmark models: nothing is fetched at run time.
MediaPipe Pose finds one person per picture; its 33 landmarks become OpenPose's 18 keypoints
(:func:`~.pose.mediapipe_to_openpose`), MediaPipe Hands' 21 landmarks are OpenPose's hand order already.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from .pose import Pose, mediapipe_to_openpose

INSTALL_HINT = (
    "pose estimation from a photo needs MediaPipe: pip install 'atelier[pose]' (or pip install "
    "mediapipe==0.10.21; later versions no longer ship the pose models), or use DWPreprocessor with your "
    "own DWPose ONNX files"
)
#: the only complexity whose landmark model ships inside the wheel
MODEL_COMPLEXITY = 1


class MediaPipeMissing(RuntimeError):
    pass


def _solutions() -> Any:
    try:
        from mediapipe.python import solutions  # type: ignore[import-not-found]
    except ImportError as exc:
        raise MediaPipeMissing(f"{INSTALL_HINT} ({exc})") from None
    return solutions


def mediapipe_available() -> bool:
    try:
        _solutions()
    except MediaPipeMissing:
        return False
    return True


@contextmanager
def _quiet() -> Iterator[None]:
    """MediaPipe 0.10.21 reads a protobuf field property that newer protobufs deprecate: not ours to fix."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _landmark_array(landmarks: Any, with_visibility: bool) -> np.ndarray:
    rows = [
        (lm.x, lm.y, lm.z, lm.visibility) if with_visibility else (lm.x, lm.y) for lm in landmarks.landmark
    ]
    return np.asarray(rows, dtype=np.float64)


def estimate_poses(frames: list[np.ndarray], *, hands: bool) -> list[list[Pose]]:
    """The poses found in each RGB uint8 picture ``[H, W, 3]``: at most one person each (an empty list
    where MediaPipe finds none), with up to two hands when ``hands``."""
    solutions = _solutions()
    found: list[list[Pose]] = []
    with _quiet():
        body_model = solutions.pose.Pose(
            static_image_mode=True, model_complexity=MODEL_COMPLEXITY, enable_segmentation=False
        )
        hand_model = (
            solutions.hands.Hands(static_image_mode=True, max_num_hands=2, model_complexity=1)
            if hands
            else None
        )
    with body_model:
        try:
            for frame in frames:
                result = body_model.process(np.ascontiguousarray(frame))
                if result.pose_landmarks is None:
                    found.append([])
                    continue
                body = mediapipe_to_openpose(_landmark_array(result.pose_landmarks, True))
                hand_points: list[np.ndarray] = []
                if hand_model is not None:
                    hand_result = hand_model.process(np.ascontiguousarray(frame))
                    for hand in hand_result.multi_hand_landmarks or ():
                        hand_points.append(_landmark_array(hand, False))
                found.append([Pose(body, tuple(hand_points))])
        finally:
            if hand_model is not None:
                hand_model.close()
    return found
