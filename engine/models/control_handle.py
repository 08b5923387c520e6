"""What the CONTROL_NET handles of a loaded network share (ControlNet, T2I-Adapter): the family their file
said, where the network's weights are, and its size for the caches."""

from __future__ import annotations

from typing import Any

import torch


class LoadedControl:
    """Mixin of a handle holding ``net`` (a torch module) and ``info`` (what its file said, with ``family``)."""

    net: Any
    info: Any

    @property
    def family(self) -> str:
        return self.info.family

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    def __atelier_nbytes__(self) -> int:
        from .handles import module_bytes  # handles imports the control modules

        return module_bytes(self.net)
