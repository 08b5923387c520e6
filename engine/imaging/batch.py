"""Fitting batches to each other, ComfyUI's two ways: repeating (a mask of one picture applied to a
batch) and picking evenly spaced items (conditioning images resized to a sampling batch)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def repeat_to_batch(t: Tensor, size: int) -> Tensor:
    """``t`` with its batch cut to ``size`` or repeated (whole batches) up to it."""
    n = t.shape[0]
    if n == size:
        return t
    if n > size:
        return t[:size]
    return t.repeat(math.ceil(size / n), *([1] * (t.dim() - 1)))[:size]


def resize_batch(t: Tensor, size: int) -> Tensor:
    """``t`` resampled to a batch of ``size`` by picking items at evenly spaced positions (a batch of one
    is repeated; shrinking keeps the first and the last)."""
    n = t.shape[0]
    if n == size:
        return t
    if size <= 1:
        return t[:size]
    if size < n:
        scale = (n - 1) / (size - 1)
        index = [min(round(i * scale), n - 1) for i in range(size)]
    else:
        scale = n / size
        index = [min(math.floor((i + 0.5) * scale), n - 1) for i in range(size)]
    return t[torch.tensor(index, device=t.device)]
