"""Upscale models (ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT, Compact, ... every architecture spandrel knows):
reading the file, loading it through spandrel, and running it over an image in overlapping tiles.

Files are ``.safetensors`` or PyTorch pickles read only through ``torch.load(weights_only=True)``;
spandrel detects the architecture and its hyperparameters from the tensor names and shapes. What comes
out is an :class:`UpscaleModelHandle`, the carrier of the UPSCALE_MODEL socket. :func:`upscale_image`
runs it in 512 px tiles overlapping by 32 px (ComfyUI's numbers), halving the tile on out-of-memory
down to 128 px, so a 4x upscale of a 1024 px image needs memory for one tile, not the whole image.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch
from torch import Tensor

from atelier.engine.imaging.tiles import TileCallback, count_tiles, shrinking_tiles, tiled_apply
from atelier.engine.model_loader import LoadOptions

from .errors import CheckpointError
from .files import (
    SAFETENSORS_SUFFIXES,
    TORCH_SUFFIXES,
    read_safetensors_header,
    read_torch_file,
    sniff_format,
)
from .handles import module_bytes
from .spandrel_compat import spandrel

TILE: Final = 512
OVERLAP: Final = 32
MIN_TILE: Final = 128
_LUMA: Final = (0.299, 0.587, 0.114)


@dataclass(frozen=True, eq=False)
class UpscaleModelHandle:
    """UPSCALE_MODEL: a loaded image-to-image model and what it does to an image."""

    #: spandrel's ImageModelDescriptor: called with ``[1, input_channels, h, w]`` in 0..1 on the model's
    #: device and dtype, returns ``[1, output_channels, h * scale, w * scale]``
    model: Any
    scale: int
    input_channels: int
    output_channels: int
    name: str = ""
    architecture: str = ""
    #: "supported", "discouraged" or "internal" (the model tiles by itself: it gets the whole image)
    tiling: str = "supported"

    def __atelier_modules__(self) -> Iterator[tuple[str, Any]]:
        """The network to hold on the device while a node uses it (engine/memory.py)."""
        yield "", self.model.model

    @property
    def device(self) -> torch.device:
        return torch.device(self.model.device)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def __atelier_nbytes__(self) -> int:
        return module_bytes(getattr(self.model, "model", None))

    def __repr__(self) -> str:
        return (
            f"UpscaleModelHandle({self.name!r}, {self.architecture}, {self.scale}x, "
            f"{self.input_channels}->{self.output_channels} channels)"
        )


# -- reading and loading --------------------------------------------------------------------------------


def read_upscaler_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of an upscale model file, unwrapped from the containers trainers save them in
    (``params_ema``, ``state_dict``, ``model``, a ``module.`` prefix, ...)."""
    if not path.exists():
        raise CheckpointError(path, "file not found")
    if path.is_dir():
        raise CheckpointError(path, "is a folder, not an upscale model file")
    suffix = path.suffix.lower()
    if suffix not in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
        allowed = ", ".join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)
        raise CheckpointError(path, f"unsupported file extension {suffix or '(none)'!r} ({allowed})")
    kind = sniff_format(path)
    if kind == "empty":
        raise CheckpointError(path, "file is empty (0 bytes)")
    if kind == "safetensors" or (suffix in SAFETENSORS_SUFFIXES and kind not in ("zip", "pickle")):
        read_safetensors_header(path)  # a clear error for a garbage or truncated file
        from safetensors.torch import load_file

        try:
            data: Any = load_file(str(path), device="cpu")
        except Exception as exc:
            raise CheckpointError(path, f"cannot read as safetensors: {exc}") from None
    elif kind in ("zip", "pickle"):
        data = read_torch_file(path)
    else:
        raise CheckpointError(path, "neither a safetensors file nor a PyTorch file (garbage or truncated)")
    if not isinstance(data, dict):
        raise CheckpointError(path, f"holds a {type(data).__name__}, not a state dict")
    data = spandrel().canonicalize_state_dict(data)
    tensors = {str(k): v for k, v in data.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(path, "holds no tensors: not a model's weights")
    return tensors


def upscaler_from_state_dict(state_dict: dict[str, Tensor], path: Path, name: str = "") -> UpscaleModelHandle:
    """Detect the architecture with spandrel and build the model (on the CPU, in float32)."""
    sp = spandrel()
    try:
        descriptor = sp.MAIN_REGISTRY.load(state_dict)
    except sp.UnsupportedModelError:
        sample = ", ".join(list(state_dict)[:4])
        raise CheckpointError(
            path,
            f"not an upscale model of any architecture spandrel {sp.__version__} knows "
            f"({len(state_dict)} tensors: {sample}, ...)",
        ) from None
    except Exception as exc:  # an architecture matched the names but its shapes do not add up
        text = " ".join(str(exc).split())
        text = text if len(text) <= 300 else text[:300] + " ..."
        raise CheckpointError(
            path, f"looks like an upscale model but does not load ({type(exc).__name__}: {text})"
        ) from None
    if not isinstance(descriptor, sp.ImageModelDescriptor):
        raise CheckpointError(
            path,
            f"is a {descriptor.architecture.name} model ({descriptor.purpose}), which needs a mask: "
            "not an image upscaler",
        )
    return UpscaleModelHandle(
        model=descriptor.eval(),
        scale=int(descriptor.scale),
        input_channels=int(descriptor.input_channels),
        output_channels=int(descriptor.output_channels),
        name=name or path.name,
        architecture=str(descriptor.architecture.name),
        tiling=descriptor.tiling.name.lower(),
    )


def _dtype_for(descriptor: Any, wanted: torch.dtype | None) -> torch.dtype:
    """The engine's dtype where the architecture supports it, float32 otherwise (and by default)."""
    if wanted == torch.float16 and descriptor.supports_half:
        return torch.float16
    if wanted == torch.bfloat16 and descriptor.supports_bfloat16:
        return torch.bfloat16
    return torch.float32


def upscale_model_loader(path: Path, options: LoadOptions) -> UpscaleModelHandle:
    """``ctx.models`` loader: an upscale model file onto the engine's device (once per file version)."""
    handle = upscaler_from_state_dict(read_upscaler_state_dict(path), path)
    handle.model.to(torch.device(options.device), _dtype_for(handle.model, options.dtype))
    return handle


def load_upscale_model(
    path: str | Path, *, device: str = "cpu", dtype: torch.dtype | None = None
) -> UpscaleModelHandle:
    """An upscale model file, outside an engine (scripts and tests)."""
    return upscale_model_loader(Path(path), LoadOptions(device, dtype))


# -- running ----------------------------------------------------------------------------------------------


def _to_model_channels(x: Tensor, channels: int) -> Tensor:
    """``[B, 3, H, W]`` RGB to what the model takes: grey (1), RGB (3) or RGBA (4, opaque)."""
    if channels == x.shape[1]:
        return x
    if channels == 1:
        luma = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x[:, :3] * luma).sum(dim=1, keepdim=True)
    if channels == 4 and x.shape[1] == 3:
        return torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
    raise ValueError(
        f"the upscale model takes {channels}-channel images; cannot feed it {x.shape[1]} channels"
    )


def _to_rgb(y: Tensor) -> Tensor:
    if y.shape[1] == 3:
        return y
    if y.shape[1] == 1:
        return y.expand(-1, 3, -1, -1)
    if y.shape[1] == 4:
        return y[:, :3]
    raise ValueError(f"the upscale model returned {y.shape[1]} channels; expected 1, 3 or 4")


def _offset(on_tile: TileCallback | None, start: int, total: int) -> TileCallback | None:
    """A tile callback for one image of a batch, reporting to ``on_tile`` in counts over the batch."""
    if on_tile is None:
        return None

    def report(done: int, _: int) -> None:
        on_tile(start + done, total)

    return report


def upscale_image(
    handle: UpscaleModelHandle,
    image: Tensor,
    *,
    tile: int = TILE,
    overlap: int = OVERLAP,
    min_tile: int = MIN_TILE,
    on_tile: TileCallback | None = None,
) -> Tensor:
    """IMAGE ``[B, H, W, C]`` -> ``[B, H * scale, W * scale, 3]`` in 0..1, run tile by tile on the model's
    device (the result stays there). ``on_tile(done, total)`` follows every tile of the batch and may raise
    to stop (an interrupt); out-of-memory halves the tile and starts again."""
    if image.dim() != 4 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an IMAGE [B, H, W, C], got shape {tuple(image.shape)}")
    b, h, w, _ = image.shape
    device, dtype = handle.device, handle.dtype
    x = image.movedim(-1, 1)[:, :3].float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = _to_model_channels(x, handle.input_channels)

    def model(t: Tensor) -> Tensor:
        return _to_rgb(handle.model(t.to(device, dtype)).float())

    def run(size: int) -> Tensor:
        whole = handle.tiling == "internal"
        per_image = 1 if whole else count_tiles(h, w, size, overlap)
        outs = []
        for i in range(b):
            progress = _offset(on_tile, i * per_image, b * per_image)
            xi = x[i : i + 1]
            if whole:
                out = model(xi)
                if progress is not None:
                    progress(1, 1)
            else:
                out = tiled_apply(xi, model, scale=handle.scale, tile=size, overlap=overlap, on_tile=progress)
            outs.append(out)
        return torch.cat(outs)

    with torch.no_grad():
        result = shrinking_tiles(run, tile, min_tile=min_tile)
    return result.clamp_(0, 1).movedim(1, -1)
