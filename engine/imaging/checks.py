"""Input checks for image, mask and latent inputs: a clear error naming the node and the input instead of
a torch shape error deep inside. Each returns the value in its canonical layout."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class InputError(ValueError):
    """A node input that cannot be used: the message names the node and the input."""

    def __init__(self, node: str, name: str, message: str) -> None:
        super().__init__(f"{node}: input {name!r} {message}")
        self.node = node
        self.input = name


def _size(t: Tensor) -> str:
    return f"{t.shape[-1]}x{t.shape[-2]}"


def image(value: Any, node: str, name: str, *, channels: tuple[int, ...] = (3, 4)) -> Tensor:
    """An IMAGE ``[B, H, W, C]`` (a single ``[H, W, C]`` picture gets a batch of one)."""
    if not isinstance(value, Tensor):
        raise InputError(node, name, f"must be an IMAGE tensor, got {type(value).__name__}")
    t = value[None] if value.dim() == 3 else value
    if t.dim() != 4 or t.shape[1] == 0 or t.shape[2] == 0:
        raise InputError(node, name, f"must be an IMAGE [B, H, W, C], got shape {list(value.shape)}")
    if t.shape[-1] not in channels:
        wanted = " or ".join(str(c) for c in channels)
        raise InputError(node, name, f"has {t.shape[-1]} channels; {wanted} expected (RGB, RGBA)")
    return t


def mask(value: Any, node: str, name: str) -> Tensor:
    """A MASK as ``[B, H, W]``: ``[H, W]`` and ``[B, 1, H, W]`` (a latent's noise mask) are accepted."""
    if not isinstance(value, Tensor):
        raise InputError(node, name, f"must be a MASK tensor, got {type(value).__name__}")
    t = value
    if t.dim() == 2:
        t = t[None]
    elif t.dim() == 4 and t.shape[1] == 1:
        t = t[:, 0]
    if t.dim() != 3 or t.shape[1] == 0 or t.shape[2] == 0:
        raise InputError(node, name, f"must be a MASK [B, H, W], got shape {list(value.shape)}")
    return t


def latent(value: Any, node: str, name: str) -> Tensor:
    """The samples ``[B, C, h, w]`` of a LATENT dict."""
    samples = value.get("samples") if isinstance(value, dict) else None
    if not isinstance(samples, Tensor) or samples.dim() != 4:
        got = list(samples.shape) if isinstance(samples, Tensor) else type(samples).__name__
        raise InputError(node, name, f"must be a LATENT with samples [B, C, h, w], got {got}")
    return samples


def batch_fits(count: int, target: int, node: str, name: str, other: str) -> None:
    """A batch of ``count`` (a mask's) applies to one of ``target`` (an image's): 1 or the same size."""
    if count not in (1, target):
        raise InputError(
            node, name, f"has a batch of {count} but {other!r} has {target}: give one mask or one per item"
        )


def mask_for_image(
    value: Any, picture: Tensor, node: str, name: str = "mask", other: str = "pixels"
) -> Tensor:
    """A MASK that belongs to ``picture`` [B, H, W, C]: the same size, or a scaled copy of it (same aspect
    ratio within a pixel, resized by the caller as ComfyUI does); a batch of 1 or of the picture's size.
    A mask of another shape is a wiring mistake and an error naming both inputs."""
    m = mask(value, node, name)
    ph, pw = picture.shape[1], picture.shape[2]
    mh, mw = m.shape[-2:]
    if (mh, mw) != (ph, pw):
        # same aspect ratio when scaling one side to the other lands within a pixel
        same_aspect = abs(mw * ph / mh - pw) <= 1.0 and abs(mh * pw / mw - ph) <= 1.0
        if not same_aspect:
            raise InputError(
                node,
                name,
                f"is {mw}x{mh} but {other!r} is {pw}x{ph}: a mask must cover its picture "
                "(same size or the same aspect ratio)",
            )
    batch_fits(m.shape[0], picture.shape[0], node, name, other)
    return m


def to_device(t: Tensor, like: Tensor) -> Tensor:
    """``t`` as float32 on ``like``'s device."""
    return t.to(device=like.device, dtype=torch.float32)
