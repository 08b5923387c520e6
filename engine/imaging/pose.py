"""OpenPose-format pose pictures as pure functions of keypoints.

A pose is OpenPose's 18-keypoint COCO body (``BODY_PARTS`` order: nose, neck, right shoulder ... left ear) with
optional 21-keypoint hands, each keypoint ``(x, y)`` in 0..1 of the picture's width and height, NaN where
it was not found. :func:`draw_openpose` paints poses the way OpenPose ControlNets were trained to read them
(and as controlnet_aux's OpenposeDetector draws them): on black, each limb a filled ellipse 4 px wide in
its own colour at 60 %, each keypoint a disc of radius 4 in full colour; hand bones in colours around the
hue circle with blue joints. :func:`mediapipe_to_openpose` maps MediaPipe Pose's 33 landmarks onto the 18
(the neck is the shoulders' midpoint).
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

#: OpenPose's COCO body keypoints, in order ("right"/"left" are the person's own)
BODY_PARTS: tuple[str, ...] = (
    "nose",
    "neck",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_hip",
    "right_knee",
    "right_ankle",
    "left_hip",
    "left_knee",
    "left_ankle",
    "right_eye",
    "left_eye",
    "right_ear",
    "left_ear",
)
#: the 17 limbs OpenPose draws (pairs of BODY_PARTS indices); limb i is painted in BODY_COLOURS[i]
BODY_LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2),
    (1, 5),
    (2, 3),
    (3, 4),
    (5, 6),
    (6, 7),
    (1, 8),
    (8, 9),
    (9, 10),
    (1, 11),
    (11, 12),
    (12, 13),
    (1, 0),
    (0, 14),
    (14, 16),
    (0, 15),
    (15, 17),
)
#: OpenPose's 18 body colours (RGB): keypoint k and limb k take colour k
BODY_COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0),
    (255, 85, 0),
    (255, 170, 0),
    (255, 255, 0),
    (170, 255, 0),
    (85, 255, 0),
    (0, 255, 0),
    (0, 255, 85),
    (0, 255, 170),
    (0, 255, 255),
    (0, 170, 255),
    (0, 85, 255),
    (0, 0, 255),
    (85, 0, 255),
    (170, 0, 255),
    (255, 0, 255),
    (255, 0, 170),
    (255, 0, 85),
)
LIMB_WIDTH = 4  # half-width of a limb's ellipse, pixels
LIMB_SHADE = 0.6  # limbs are painted at 60 % of their colour
JOINT_RADIUS = 4
#: the 20 bones of a 21-keypoint hand (wrist 0, then four joints per finger, thumb first): OpenPose's and
#: MediaPipe Hands' common order
HAND_BONES: tuple[tuple[int, int], ...] = tuple(
    pair for f in range(5) for pair in ((0 if j == 0 else 4 * f + j, 4 * f + j + 1) for j in range(4))
)
HAND_JOINT_COLOUR = (0, 0, 255)
HAND_BONE_WIDTH = 2
HAND_JOINT_RADIUS = 4

#: MediaPipe Pose landmark index for each OpenPose body keypoint (the neck, None, is derived)
MEDIAPIPE_TO_OPENPOSE: tuple[int | None, ...] = (
    0,  # nose
    None,  # neck: midpoint of the shoulders (11, 12)
    12,  # right shoulder
    14,  # right elbow
    16,  # right wrist
    11,  # left shoulder
    13,  # left elbow
    15,  # left wrist
    24,  # right hip
    26,  # right knee
    28,  # right ankle
    23,  # left hip
    25,  # left knee
    27,  # left ankle
    5,  # right eye
    2,  # left eye
    8,  # right ear
    7,  # left ear
)
_MP_SHOULDERS = (11, 12)


@dataclass(frozen=True)
class Pose:
    """One person: ``body`` [18, 2] and optional ``hands`` [21, 2] arrays of (x, y) in 0..1, NaN where
    missing."""

    body: np.ndarray
    hands: tuple[np.ndarray, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.body.shape != (len(BODY_PARTS), 2):
            raise ValueError(f"a body pose is {len(BODY_PARTS)} (x, y) keypoints, got {self.body.shape}")
        for hand in self.hands:
            if hand.shape != (21, 2):
                raise ValueError(f"a hand pose is 21 (x, y) keypoints, got {hand.shape}")


def hand_bone_colour(i: int) -> tuple[int, int, int]:
    """Bone ``i`` of a hand: evenly spaced hues at full saturation and value (RGB)."""
    r, g, b = colorsys.hsv_to_rgb(i / len(HAND_BONES), 1.0, 1.0)
    return round(r * 255), round(g * 255), round(b * 255)


def mediapipe_to_openpose(landmarks: np.ndarray, min_visibility: float = 0.5) -> np.ndarray:
    """OpenPose's 18 body keypoints [18, 2] from MediaPipe Pose's 33 landmarks ``[33, 2|3|4]`` (x, y in
    0..1, then z, then visibility when given). A landmark less visible than ``min_visibility`` or outside
    the picture is missing (NaN); the neck is the shoulders' midpoint, missing unless both are found."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[0] != 33 or lm.shape[1] < 2:
        raise ValueError(f"MediaPipe Pose gives 33 landmarks of (x, y[, z, visibility]), got {lm.shape}")
    xy = lm[:, :2].copy()
    found = np.all((xy >= 0.0) & (xy <= 1.0), axis=1)
    if lm.shape[1] >= 4:
        found &= lm[:, 3] >= min_visibility
    xy[~found] = np.nan
    body = np.full((len(BODY_PARTS), 2), np.nan)
    for k, src in enumerate(MEDIAPIPE_TO_OPENPOSE):
        if src is not None:
            body[k] = xy[src]
    left, right = (xy[i] for i in _MP_SHOULDERS)
    body[1] = (left + right) / 2.0  # NaN unless both shoulders were found
    return body


def _to_pixels(points: np.ndarray, width: int, height: int) -> np.ndarray:
    return points * np.array([width, height], dtype=np.float64)


def _found(p: np.ndarray) -> bool:
    return bool(np.isfinite(p).all())


def _draw_body(canvas: np.ndarray, body: np.ndarray) -> None:
    h, w = canvas.shape[:2]
    pts = _to_pixels(body, w, h)
    for i, (a, b) in enumerate(BODY_LIMBS):
        if not (_found(pts[a]) and _found(pts[b])):
            continue
        (xa, ya), (xb, yb) = pts[a], pts[b]
        centre = (round((xa + xb) / 2), round((ya + yb) / 2))
        half_length = round(math.hypot(xb - xa, yb - ya) / 2)
        angle = round(math.degrees(math.atan2(yb - ya, xb - xa)))
        polygon = cv2.ellipse2Poly(centre, (half_length, LIMB_WIDTH), angle, 0, 360, 1)
        colour = tuple(int(c * LIMB_SHADE) for c in BODY_COLOURS[i])
        cv2.fillConvexPoly(canvas, polygon, colour)
    for k, p in enumerate(pts):
        if _found(p):
            cv2.circle(canvas, (round(p[0]), round(p[1])), JOINT_RADIUS, BODY_COLOURS[k], thickness=-1)


def _draw_hand(canvas: np.ndarray, hand: np.ndarray) -> None:
    h, w = canvas.shape[:2]
    pts = _to_pixels(hand, w, h)
    for i, (a, b) in enumerate(HAND_BONES):
        if _found(pts[a]) and _found(pts[b]):
            pa = (round(pts[a][0]), round(pts[a][1]))
            pb = (round(pts[b][0]), round(pts[b][1]))
            cv2.line(canvas, pa, pb, hand_bone_colour(i), thickness=HAND_BONE_WIDTH)
    for p in pts:
        if _found(p):
            cv2.circle(canvas, (round(p[0]), round(p[1])), HAND_JOINT_RADIUS, HAND_JOINT_COLOUR, thickness=-1)


def draw_openpose(
    poses: Sequence[Pose], width: int, height: int, *, body: bool = True, hands: bool = True
) -> np.ndarray:
    """An OpenPose-format picture ``[height, width, 3]`` uint8 RGB of ``poses`` on black."""
    if width < 1 or height < 1:
        raise ValueError(f"the picture must be at least 1x1 pixels, got {width}x{height}")
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for pose in poses:
        if body:
            _draw_body(canvas, pose.body)
        if hands:
            for hand in pose.hands:
                _draw_hand(canvas, hand)
    return canvas


def output_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """(width, height) of a pose picture whose shorter side is ``resolution``, in the picture's aspect
    ratio."""
    if resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    scale = resolution / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))
