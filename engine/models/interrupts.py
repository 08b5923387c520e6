"""Interrupt points inside long forward passes: a cancel lands between network blocks.

A UNet step on a large picture, or a VAE decode at 2048 px, can take many seconds on its own; checking the
job's cancel token only between sampler steps (or nodes) would leave a user waiting for all of it. Each
block of the UNet (down, mid, up) and of the VAE (encoder and decoder blocks) gets a forward pre-hook that
calls :func:`~atelier.engine.node.interrupt_point`: outside a job it does nothing, inside one it raises
``Interrupted`` when the job was cancelled. About twenty checks per forward pass, each a context-variable
read; hooks are installed once per module, whichever handle first wraps it. A compiled UNet (the fast
path's ``--compile``) traces past them: its cancel lands between steps.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from atelier.engine.node import interrupt_point

_INSTALLED = "_atelier_interrupt_point"


def _check(module: nn.Module, args: Any) -> None:
    if torch.compiler.is_compiling():  # a compiled UNet (fast path) is interrupted between steps instead
        return
    interrupt_point("between network blocks")


def install_interrupt_points(blocks: Iterable[nn.Module | None]) -> None:
    for block in blocks:
        if block is not None and not getattr(block, _INSTALLED, False):
            block.register_forward_pre_hook(_check)
            setattr(block, _INSTALLED, True)


def unet_blocks(unet: Any) -> Iterator[nn.Module | None]:
    yield from getattr(unet, "down_blocks", ())
    yield getattr(unet, "mid_block", None)
    yield from getattr(unet, "up_blocks", ())


def vae_blocks(vae: Any) -> Iterator[nn.Module | None]:
    for part in (getattr(vae, "encoder", None), getattr(vae, "decoder", None)):
        if part is None:
            continue
        yield from getattr(part, "down_blocks", ())
        yield getattr(part, "mid_block", None)
        yield from getattr(part, "up_blocks", ())
