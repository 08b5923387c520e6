"""Small helpers shared by the inpainting tests."""

from __future__ import annotations

import numpy as np
import torch


def grid(*rows: list[float]) -> torch.Tensor:
    """A one-item MASK [1, H, W] from rows of values."""
    return torch.tensor(rows, dtype=torch.float32)[None]


def random_mask(h: int, w: int, seed: int, soft: bool = True) -> torch.Tensor:
    """A [1, H, W] mask of random blobs (soft values when ``soft``)."""
    g = np.random.default_rng(seed)
    m = (g.random((h, w)) > 0.8).astype(np.float32)
    if soft:
        m *= g.random((h, w)).astype(np.float32)
    return torch.from_numpy(m)[None]
