"""Building diffusers / transformers modules without random initialisation, and giving them their weights.

Modules are constructed on the meta device from a config (no memory, no init), then receive the file's
tensors directly, cast and moved one by one: a 7 GB checkpoint never exists twice in memory and no time is
spent initialising weights that are overwritten anyway. Assignment is strict, so a wrong mapping fails
loudly instead of leaving random weights behind.
"""

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from atelier.engine.models.errors import CheckpointError
from atelier.engine.models.files import TensorIndex
from atelier.engine.models.info import TextEncoderInfo
from atelier.engine.models.libraries import (
    AutoencoderKL,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    UNet2DConditionModel,
    init_empty_weights,
)

TextEncoder = CLIPTextModel | CLIPTextModelWithProjection
M = TypeVar("M", bound=torch.nn.Module)
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def resolve_dtype(device: str | torch.device, dtype: torch.dtype | None) -> torch.dtype:
    """Check the device is usable and pick the dtype: float32 on CPU, float16 elsewhere by default.
    Raises ValueError (a caller mistake, not a file problem)."""
    kind = torch.device(device).type
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} requested but MPS is not available")
    if dtype is None:
        return torch.float32 if kind == "cpu" else torch.float16
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of float16, bfloat16, float32, got {dtype}")
    return dtype


def build_empty(factory: Callable[[], M]) -> M:
    """Construct a module with its parameters on the meta device (no memory, no init)."""
    with init_empty_weights(include_buffers=False):
        return factory()


def empty_unet(config: Mapping[str, Any]) -> UNet2DConditionModel:
    return build_empty(lambda: UNet2DConditionModel.from_config(dict(config)))


def empty_vae(config: Mapping[str, Any]) -> AutoencoderKL:
    return build_empty(lambda: AutoencoderKL.from_config(dict(config)))


def empty_text_encoder(te: TextEncoderInfo) -> TextEncoder:
    config = CLIPTextConfig(**te.config)
    cls = CLIPTextModelWithProjection if te.model_class == "CLIPTextModelWithProjection" else CLIPTextModel
    return build_empty(lambda: cls(config))


def _move(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    if not tensor.is_floating_point():
        return tensor.to(device)
    if tensor.element_size() > torch.empty((), dtype=dtype).element_size():
        return tensor.to(dtype=dtype).to(device)  # shrink first, then transfer fewer bytes
    return tensor.to(device).to(dtype=dtype)


class LazyTensors(Mapping[str, torch.Tensor]):
    """Module tensor name -> tensor of a single file, read only when accessed (one at a time), with
    shapes known from the file's header."""

    def __init__(self, index: TensorIndex, names: Mapping[str, str]) -> None:
        self._index = index
        self._names = dict(names)

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._index.read(self._names[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, key: object) -> bool:
        return key in self._names

    def shape(self, key: str) -> tuple[int, ...]:
        return self._index.shape(self._names[key])

    def ready(self, key: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The tensor on ``device`` in ``dtype`` (floating point) or as stored: read straight onto the
        device when the file's values are not wider than the target (nothing to shrink before the transfer),
        else read on the host, shrunk, then moved."""
        name = self._names[key]
        stored = getattr(torch, self._index.dtype(name), None)
        if device.type != "cpu" and self._index.reads_on_device and isinstance(stored, torch.dtype):
            if not stored.is_floating_point or stored.itemsize <= dtype.itemsize:
                tensor = self._index.read_on(name, device)
                return tensor.to(dtype=dtype) if tensor.is_floating_point() else tensor
        return _move(self._index.read(name), device, dtype)


def _shape(state_dict: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if isinstance(state_dict, LazyTensors):
        return state_dict.shape(key)
    return tuple(state_dict[key].shape)


def assign_weights(
    module: M,
    state_dict: Mapping[str, torch.Tensor],
    *,
    device: str | torch.device,
    dtype: torch.dtype,
    path: str | Path,
    component: str,
) -> M:
    """Give a meta-device module its tensors (cast and moved one by one), strictly: every tensor the
    module needs must be present with the right shape. Extra tensors are ignored. Returns the module in
    eval mode with gradients off."""
    device = torch.device(device)
    expected = module.state_dict(keep_vars=True)
    missing = [k for k in expected if k not in state_dict]
    if missing:
        shown = ", ".join(missing[:5])
        raise CheckpointError(path, f"{component}: {len(missing)} tensors missing, e.g. {shown}")
    wrong = [
        f"{k} {_shape(state_dict, k)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if _shape(state_dict, k) != tuple(v.shape)
    ]
    if wrong:
        raise CheckpointError(
            path, f"{component}: {len(wrong)} tensors with the wrong shape, e.g. {wrong[0]}"
        )
    if isinstance(state_dict, LazyTensors):
        ready = {k: state_dict.ready(k, device, dtype) for k in expected}
    else:
        ready = {k: _move(state_dict[k], device, dtype) for k in expected}
    module.load_state_dict(ready, strict=True, assign=True)
    module.to(device)  # non-persistent buffers (e.g. CLIP position ids)
    module.requires_grad_(False)
    module.eval()
    return module


def guard(path: str | Path, component: str, fn: Callable[[], M]) -> M:
    """Run one loading step; library errors become CheckpointError (out-of-memory is not a file problem)."""
    try:
        return fn()
    except CheckpointError:
        raise
    except torch.OutOfMemoryError:
        raise
    except Exception as exc:
        raise CheckpointError(path, f"{component}: {type(exc).__name__}: {exc}") from exc
