"""OpenCV's Haar cascade for frontal faces: the fallback that needs nothing but opencv-python-headless 4.x.

A cascade gives no probability. Its score here is ``n / (n + MIN_NEIGHBORS)``, ``n`` being how many raw
detections (at nearby positions and scales) merged into the face: 0.5 for the weakest face it reports,
approaching 1 for strong ones (the astronaut's face: 44 detections, 0.9). It finds no landmarks, and on busy
pictures it finds faces that are not there: raise the threshold (0.8 or so) when it does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from atelier.engine.model_loader import LoadOptions

from .detector import DetectorUnavailable, RawFace, downscale_factor

CASCADE = "haarcascade_frontalface_default.xml"
SCALE_FACTOR = 1.1
MIN_NEIGHBORS = 5
MIN_SIZE = 24
MAX_SIDE = 1280


class HaarFaces:
    name = "haar"

    def __init__(self, cascade: Any) -> None:
        self.cascade = cascade

    def detect(self, rgb: np.ndarray, threshold: float) -> list[RawFace]:
        import cv2

        h, w = rgb.shape[:2]
        f = downscale_factor(h, w, MAX_SIDE)
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        if f < 1.0:
            gray = cv2.resize(
                gray, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA
            )
        gray = cv2.equalizeHist(gray)
        rects, counts = self.cascade.detectMultiScale2(
            gray, scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBORS, minSize=(MIN_SIZE, MIN_SIZE)
        )
        out = []
        for (x, y, bw, bh), n in zip(
            np.asarray(rects).reshape(-1, 4), np.asarray(counts).reshape(-1), strict=True
        ):
            score = float(n) / (float(n) + MIN_NEIGHBORS)
            if score >= threshold:
                box = (x / f, y / f, (x + bw) / f, (y + bh) / f)
                out.append(RawFace(tuple(float(v) for v in box), score))  # type: ignore[arg-type]
        out.sort(key=lambda r: -r.score)
        return out


def cascade_path() -> Path:
    try:
        import cv2
    except ImportError as exc:
        raise DetectorUnavailable(
            f"the 'haar' detector needs OpenCV ({exc}): pip install 'opencv-python-headless<5'"
        ) from exc
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    path = Path(folder or "") / CASCADE
    if not folder or not path.is_file():
        raise DetectorUnavailable(
            f"OpenCV {cv2.__version__} ships no Haar cascades ({CASCADE} not found); "
            "install opencv-python-headless 4.x (5.x dropped them)"
        )
    return path


def load(path: Path, options: LoadOptions) -> HaarFaces:
    """``ctx.models`` loader of the cascade file (runs on the CPU, in OpenCV)."""
    import cv2

    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise DetectorUnavailable(f"OpenCV could not read the Haar cascade {path}")
    return HaarFaces(cascade)
