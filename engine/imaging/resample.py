"""Lanczos resampling of image tensors, on whatever device they live.

Separable: one weight matrix per axis (Lanczos-3, widened when shrinking so it also low-passes, each
row normalised to sum 1, taps outside the image dropped), the same filter PIL's ``Image.LANCZOS`` uses;
the result is not clamped (Lanczos overshoots a little at edges: clamp where a range matters).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LANCZOS_A = 3


def _sinc(x: Tensor) -> Tensor:
    return torch.where(x == 0, torch.ones_like(x), torch.sin(math.pi * x) / (math.pi * x))


def lanczos_weights(
    in_size: int, out_size: int, *, a: int = LANCZOS_A, device: torch.device | str | None = None
) -> Tensor:
    """The ``[out_size, in_size]`` matrix that resamples one axis from ``in_size`` to ``out_size`` samples
    (pixel centres at ``i + 0.5``), in float64 for exact row sums."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"cannot resample {in_size} samples to {out_size}")
    scale = in_size / out_size
    support = max(scale, 1.0)  # shrinking widens the kernel: it then filters as well as interpolates
    centres = (torch.arange(out_size, dtype=torch.float64, device=device) + 0.5) * scale
    x = (torch.arange(in_size, dtype=torch.float64, device=device) + 0.5)[None, :] - centres[:, None]
    x = x / support
    w = torch.where(x.abs() < a, _sinc(x) * _sinc(x / a), torch.zeros_like(x))
    total = w.sum(dim=1, keepdim=True)
    return w / torch.where(total == 0, torch.ones_like(total), total)


def lanczos_resize(x: Tensor, height: int, width: int) -> Tensor:
    """Resize ``x`` ``[..., H, W]`` to ``[..., height, width]`` with a Lanczos-3 filter."""
    h, w = x.shape[-2:]
    if (h, w) == (height, width):
        return x
    dtype = x.dtype if x.dtype.is_floating_point else torch.float32
    out = x.to(dtype)
    if h != height:
        wy = lanczos_weights(h, height, device=x.device).to(dtype)
        out = torch.einsum("oh,...hw->...ow", wy, out)
    if w != width:
        wx = lanczos_weights(w, width, device=x.device).to(dtype)
        out = torch.einsum("ow,...hw->...ho", wx, out)
    return out


def lanczos_resize_image(image: Tensor, width: int, height: int) -> Tensor:
    """An IMAGE batch ``[B, H, W, C]`` resized to ``width`` x ``height`` (Lanczos), clamped to 0..1."""
    return lanczos_resize(image.movedim(-1, 1), height, width).clamp(0, 1).movedim(1, -1)
