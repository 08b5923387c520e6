"""Control-hint preprocessors that need no weights: pure functions of IMAGE tensors ([B, H, W, C], 0..1).

``canny`` follows ComfyUI's Canny node (kornia's canny on the grey picture: 5x5 Gaussian blur, sigma 1,
unnormalised Sobel, L2 magnitude, hysteresis between the two thresholds) on OpenCV, whose pictures are
0..255 where kornia's are 0..1: its thresholds are ComfyUI's times 255.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

#: OpenCV's 0..255 gradient magnitudes over kornia's 0..1 ones
_CV_SCALE = 255.0


def _grey_u8(frame: Tensor) -> np.ndarray:
    rgb = frame[..., :3].clamp(0, 1).cpu().float().numpy()
    if rgb.shape[-1] == 1:
        grey = rgb[..., 0]
    else:
        grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.round(grey * 255.0).astype(np.uint8)


def canny(image: Tensor, low_threshold: float, high_threshold: float) -> Tensor:
    """White edges on black, [B, H, W, 3] in {0, 1}, for each picture of ``image``."""
    if not 0.0 < low_threshold <= high_threshold:
        raise ValueError(f"thresholds must satisfy 0 < low <= high, got {low_threshold} and {high_threshold}")
    frames = []
    for frame in image:
        blurred = cv2.GaussianBlur(_grey_u8(frame), (5, 5), 1.0)
        edges = cv2.Canny(blurred, low_threshold * _CV_SCALE, high_threshold * _CV_SCALE, L2gradient=True)
        frames.append(torch.from_numpy(edges.astype(np.float32) / 255.0))
    edges_t = torch.stack(frames).to(image.device)
    return edges_t[..., None].expand(-1, -1, -1, 3).contiguous()
