"""What every face detector gives: raw faces found in one host image.

Detectors run on the host: RetinaFace and user ONNX files on onnxruntime's CPU provider, Haar cascades
and YuNet in OpenCV. They take one ``[H, W, 3]`` uint8 RGB array and return :class:`RawFace` values in
that image's pixels; :mod:`.detect` turns them into FACES on the compute device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .detections import Box, Point


@dataclass(frozen=True)
class RawFace:
    """A face as a detector reports it: box (x0, y0, x1, y1), score in 0..1, landmarks if any."""

    box: Box
    score: float
    landmarks: tuple[Point, ...] = ()
    label: str = "face"


class FaceDetector(Protocol):
    """A loaded face detector."""

    name: str

    def detect(self, rgb: np.ndarray, threshold: float) -> list[RawFace]:
        """The faces scoring at least ``threshold`` in ``rgb`` ([H, W, 3] uint8), best first."""
        ...


class DetectorUnavailable(RuntimeError):
    """A detector that cannot run here: a missing package or a file in a format Atelier cannot run."""


def downscale_factor(height: int, width: int, max_side: int) -> float:
    """The factor (at most 1) that brings the longer side of an image to ``max_side``."""
    return min(1.0, max_side / max(height, width))
