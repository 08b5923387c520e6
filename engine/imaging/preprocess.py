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


def lineart_standard(image: Tensor, gaussian_sigma: float = 6.0, intensity_threshold: int = 8) -> Tensor:
    """Line art without weights (controlnet_aux's "standard lineart" idea): where a pixel is darker than
    its blurred surroundings, by how much, [B, H, W, 3] in 0..1 (white lines on black).

    Per picture (0..255 RGB): the darkening is the smallest, over the channels, of ``blur - pixel``
    (Gaussian of ``gaussian_sigma`` pixels), clipped at 0; it is divided by the median darkening of the
    pixels darker than ``intensity_threshold`` (at least 16), so a line of typical contrast comes out at
    about half grey (127 of 255), stronger lines brighter."""
    if gaussian_sigma <= 0:
        raise ValueError(f"gaussian_sigma must be positive, got {gaussian_sigma}")
    frames = []
    for frame in image:
        rgb = frame[..., :3].clamp(0, 1).cpu().float().numpy() * 255.0
        if rgb.shape[-1] == 1:
            rgb = np.repeat(rgb, 3, axis=-1)
        blurred = cv2.GaussianBlur(rgb, (0, 0), gaussian_sigma)
        darker = np.clip(np.min(blurred - rgb, axis=2), 0.0, None)
        strong = darker[darker > intensity_threshold]
        scale = max(16.0, float(np.median(strong))) if strong.size else 16.0
        lines = np.clip(darker / scale * 127.0, 0.0, 255.0)
        frames.append(torch.from_numpy(np.floor(lines).astype(np.float32) / 255.0))
    lines_t = torch.stack(frames).to(image.device)
    return lines_t[..., None].expand(-1, -1, -1, 3).contiguous()


def normal_from_depth(depth: Tensor, strength: float = 6.0, background_threshold: float = 0.1) -> Tensor:
    """A normal map [B, H, W, 3] in 0..1 from a depth picture [B, H, W, C] (near bright, as depth
    ControlNets take it; the first channel is read), OpenGL-style: red is the normal's rightward part,
    green its upward part, blue its part toward the viewer, each mapped from -1..1 to 0..1 (a flat wall
    facing the camera is (0.5, 0.5, 1)).

    The slope is the depth's Sobel gradient (per pixel, of depth in 0..1) times ``strength``; a surface
    getting nearer to the right faces left, one getting nearer downward faces up. Where the depth is
    below ``background_threshold`` (far background) the normal faces the viewer."""
    if depth.dim() != 4:
        raise ValueError(f"a depth picture is an IMAGE [B, H, W, C], got {tuple(depth.shape)}")
    frames = []
    for frame in depth:
        d = frame[..., 0].clamp(0, 1).cpu().double().numpy()
        dx = cv2.Sobel(d, cv2.CV_64F, 1, 0, ksize=3, borderType=cv2.BORDER_REPLICATE) / 8.0
        dy = cv2.Sobel(d, cv2.CV_64F, 0, 1, ksize=3, borderType=cv2.BORDER_REPLICATE) / 8.0
        nx, ny = -dx * strength, dy * strength
        far = d < background_threshold
        nx[far], ny[far] = 0.0, 0.0
        n = np.stack([nx, ny, np.ones_like(d)], axis=-1)
        n /= np.linalg.norm(n, axis=-1, keepdims=True)
        frames.append(torch.from_numpy((n * 0.5 + 0.5).astype(np.float32)))
    return torch.stack(frames).to(depth.device)
