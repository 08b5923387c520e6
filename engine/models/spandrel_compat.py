"""Importing spandrel (MIT) where torchvision is missing.

spandrel 0.4.2 declares torchvision, but only two of its 42 architectures use it, at call time: RestoreFormer
(``normalize``) and LaMa (``rotate``, an inpainting model). There is no CPU build of torchvision for our
torch, so ``./dev setup`` installs spandrel with ``--no-deps``; spandrel's package import would still fail on
those two modules' ``from torchvision... import``. When torchvision cannot be imported, :func:`spandrel`
imports the package with a stand-in ``torchvision.transforms.functional`` in ``sys.modules`` for the
duration of that import only: ``normalize`` is implemented (it is one line), ``rotate`` raises an error that
says torchvision is needed. With a real torchvision (``pip install spandrel`` next to a CUDA torch) none
of this happens.
"""

from __future__ import annotations

import enum
import importlib.util
import sys
import threading
import types
from collections.abc import Sequence
from typing import Any

import torch

_lock = threading.Lock()
_STAND_IN = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")


class SpandrelMissingError(ImportError):
    """spandrel is not installed."""


class _InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


def _normalize(
    tensor: torch.Tensor, mean: Sequence[float], std: Sequence[float], inplace: bool = False
) -> torch.Tensor:
    m = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
    return tensor.sub_(m).div_(s) if inplace else (tensor - m) / s


def _rotate(*args: Any, **kwargs: Any) -> Any:
    raise ImportError(
        "this model (LaMa) needs torchvision, which is not installed: install a torchvision matching your torch"
    )


def _stand_in() -> dict[str, types.ModuleType]:
    root = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.InterpolationMode = _InterpolationMode  # type: ignore[attr-defined]
    functional.normalize = _normalize  # type: ignore[attr-defined]
    functional.rotate = _rotate  # type: ignore[attr-defined]
    root.transforms = transforms  # type: ignore[attr-defined]
    transforms.functional = functional  # type: ignore[attr-defined]
    return dict(zip(_STAND_IN, (root, transforms, functional), strict=True))


def spandrel() -> types.ModuleType:
    """The spandrel package, imported once (with the stand-in when torchvision is missing)."""
    with _lock:
        if "spandrel" in sys.modules:
            return sys.modules["spandrel"]
        if importlib.util.find_spec("spandrel") is None:
            raise SpandrelMissingError(
                "upscale models need the spandrel package, which is not installed: run ./dev setup, or "
                "pip install --no-deps spandrel==0.4.2 einops (with a CUDA torch: pip install spandrel)"
            )
        if _has_torchvision():
            import spandrel as module

            return module
        saved = {name: sys.modules.get(name) for name in _STAND_IN}
        sys.modules.update(_stand_in())
        try:
            import spandrel as module
        finally:
            for name, previous in saved.items():
                if previous is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = previous
        return module


def _has_torchvision() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # missing, or a build for another torch (``operator torchvision::nms does not exist``)
        return False
    return True
