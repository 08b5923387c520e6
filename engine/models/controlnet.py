"""ControlNet on the model call: the CONTROL_NET handle, the hints conditioning entries carry, and the
wrapper that turns them into the UNet's additional residuals.

As in ComfyUI a ControlNet attaches to CONDITIONING: ControlNetApply(Advanced) gives entries a
:class:`ControlHint` (network, hint image, strength, the part of the schedule it acts in) after the ones
they already carry, so that several ControlNets stack. Sampling is unchanged: every network call goes
through :func:`apply_control` (installed on every MODEL handle, outside the model's own wrappers such as an
inpainting UNet's concatenated input), which, for the cond/uncond batch of one forward, runs each hint's
ControlNet once on the rows of the entries carrying it, scales and sums the residuals per row and hands
them to diffusers' UNet as ``down_block_additional_residuals`` / ``mid_block_additional_residual``. A
call whose entries carry no active hint goes to the UNet untouched, so strength 0 or a step outside
``start_percent..end_percent`` is bit for bit the run without the ControlNet.

T2I-Adapters travel the same way (``t2i_adapter.py``): ControlNetLoader loads them, a hint carries one
like a ControlNet, and this wrapper computes its features once per call for the hint's rows and hands them
to the UNet as ``down_intrablock_additional_residuals``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from atelier.engine.model_loader import LoadOptions, ModelLoader
from atelier.engine.sampling.guidance import ApplyModel, ModelCall
from atelier.engine.sampling.model_sampling import ModelSampling

from .control_handle import LoadedControl
from .control_lora import (
    ControlLoraHandle,
    build_control_lora,
    control_lora_info,
    is_control_lora,
    load_control_lora_handle,
    read_control_lora,
)
from .controlnet_files import (
    ControlNetInfo,
    add_base_weights,
    build_controlnet,
    detect_controlnet,
    read_controlnet_state,
)
from .errors import CheckpointError
from .files import SAFETENSORS_SUFFIXES
from .t2i_adapter import T2IAdapterHandle, load_t2i_adapter_handle
from .t2i_adapter_files import is_t2i_adapter_file

#: how many pixels one latent cell covers (SD1/SD2/SDXL VAEs)
LATENT_FACTOR = 8
#: diffusers' UNet argument for T2I-Adapter features
INTRABLOCK = "down_intrablock_additional_residuals"
#: how far (in latent cells) a hint's aspect ratio may be off the latent's before it is refused
_ASPECT_SLACK = 1.0


class ControlError(ValueError):
    """A ControlNet that does not fit the model or the picture being sampled (the message names the node
    that applied it, the file and what does not match)."""


@dataclass(frozen=True, eq=False)
class ControlNetHandle(LoadedControl):
    """CONTROL_NET: a loaded diffusers ``ControlNetModel`` with what its file said about it."""

    net: Any  # diffusers ControlNetModel
    info: ControlNetInfo
    name: str = ""
    kind: str = "ControlNet"

    def mismatch(self, unet_config: Mapping[str, Any]) -> str | None:
        """What keeps this ControlNet's residuals from fitting a UNet of ``unet_config``, or None."""
        mine = self.net.config
        checks = (
            ("cross-attention width", mine.cross_attention_dim, unet_config.get("cross_attention_dim")),
            ("block widths", list(mine.block_out_channels), list(unet_config.get("block_out_channels", ()))),
            ("res blocks per level", mine.layers_per_block, unet_config.get("layers_per_block")),
            (
                "size conditioning (SDXL)",
                mine.addition_embed_type,
                unet_config.get("addition_embed_type"),
            ),
        )
        for what, have, want in checks:
            if have != want:
                return f"{what} {have} vs the model's {want}"
        pooled = getattr(mine, "projection_class_embeddings_input_dim", None)
        if mine.addition_embed_type and pooled != unet_config.get("projection_class_embeddings_input_dim"):
            return (
                f"size-embedding input {pooled} vs the model's "
                f"{unet_config.get('projection_class_embeddings_input_dim')} (an SDXL refiner?)"
            )
        return None


@dataclass(frozen=True, eq=False)
class ControlHint:
    """One ControlNet applied to a conditioning entry: the network, the hint image (IMAGE [B, H, W, C] in
    0..1), its strength and the part of the schedule it acts in (ComfyUI's percents: 0 = first step).
    ``origin`` names the node that applied it, for error messages. Compared by identity: entries that
    share a hint object (the positive and negative of one ControlNetApplyAdvanced) share its forward."""

    control: ControlNetHandle | T2IAdapterHandle | ControlLoraHandle
    image: Tensor
    strength: float = 1.0
    start_percent: float = 0.0
    end_percent: float = 1.0
    origin: str = ""

    @property
    def label(self) -> str:
        where = f"{self.origin}: " if self.origin else ""
        return f"{where}{self.control.kind} {self.control.name or self.control.info.path!r}"

    def sigma_range(self, sampling: ModelSampling) -> tuple[float, float]:
        """(highest, lowest) sigma the hint is active at, for a model's noise schedule."""
        return (sampling.percent_to_sigma(self.start_percent), sampling.percent_to_sigma(self.end_percent))

    def active(self, sigma: float, sampling: ModelSampling) -> bool:
        if self.strength == 0.0:
            return False
        high, low = self.sigma_range(sampling)
        return low <= sigma <= high


def load_controlnet_handle(
    models: ModelLoader, path: Path, name: str = ""
) -> ControlNetHandle | T2IAdapterHandle | ControlLoraHandle:
    """A ControlNet (or T2I-Adapter, or Control-LoRA) file loaded once per file version by ``models``
    (onto the engine's device; a Control-LoRA is built for the model it is sampled with)."""
    if is_t2i_adapter_file(path):
        return load_t2i_adapter_handle(models, path, name)
    if _is_control_lora(path):
        return load_control_lora_handle(models, path, name)
    net, info = models.load(path, _controlnet_loader)
    return ControlNetHandle(net, info, name=name or path.name)


def _controlnet_loader(path: Path, options: LoadOptions) -> tuple[Any, ControlNetInfo]:
    info = detect_controlnet(path)
    net = build_controlnet(
        info, read_controlnet_state(path, info), device=options.device, dtype=options.dtype
    )
    return net, info


def load_diff_controlnet(
    path: Path, unet: torch.nn.Module, name: str = "", models: ModelLoader | None = None
) -> ControlNetHandle | T2IAdapterHandle:
    """A ControlNet whose file may be a "diff" (weights stored relative to a base UNet): with the marker,
    the base weights of ``unet`` are added (ComfyUI's DiffControlNetLoader). Built for that model, not
    shared through the model loader; so is a Control-LoRA (built from ``unet``'s encoder). A T2I-Adapter
    loads as with :func:`load_controlnet_handle`."""
    if models is not None and is_t2i_adapter_file(path):
        return load_t2i_adapter_handle(models, path, name)
    if _is_control_lora(path):
        weights = read_control_lora(path)
        net = build_control_lora(weights, unet)
        return ControlNetHandle(net, control_lora_info(weights, net), name=name or path.name)
    info = detect_controlnet(path)
    state = read_controlnet_state(path, info)
    if info.difference:
        state = add_base_weights(state, unet)
    param = next(unet.parameters())
    net = build_controlnet(info, state, device=param.device, dtype=param.dtype)
    return ControlNetHandle(net, info, name=name or path.name)


def _is_control_lora(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in SAFETENSORS_SUFFIXES and is_control_lora(path)


# -- on the model call ----------------------------------------------------------------------------------


def control_wrapper(
    unet_config: Mapping[str, Any],
    family: str,
    sampling: ModelSampling,
    unet: torch.nn.Module | None = None,
    patches: Any = None,
) -> Callable[[ApplyModel, ModelCall], Tensor]:
    """The wrapper that applies the hints of a call's entries, for a model of ``unet_config`` (``unet``
    and its weight ``patches``: what a Control-LoRA is built from)."""

    def wrapper(call_next: ApplyModel, call: ModelCall) -> Tensor:
        return apply_control(call_next, call, unet_config, family, sampling, unet, patches)

    return wrapper


def apply_control(
    call_next: ApplyModel,
    call: ModelCall,
    unet_config: Mapping[str, Any],
    family: str,
    sampling: ModelSampling,
    unet: torch.nn.Module | None = None,
    patches: Any = None,
) -> Tensor:
    """Run the call with the ControlNet residuals of its entries' active hints (or untouched if none)."""
    if not any(entry.control for entry in call.entries):
        return call_next(call)
    sigma = float(call.sigma[0])
    rows: dict[int, tuple[ControlHint, list[int]]] = {}
    for n, entry in enumerate(call.entries):
        for hint in entry.control:
            if hint.active(sigma, sampling):
                rows.setdefault(id(hint), (hint, []))[1].append(n)
    if not rows:
        return call_next(call)
    down: list[Tensor] | None = None
    mid: Tensor | None = None
    intra: list[Tensor] | None = None
    b = call.batch
    total = call.x.shape[0]
    for hint, chunks in rows.values():
        problem = hint.control.mismatch(unet_config)
        if problem is not None:
            raise ControlError(
                f"{hint.label} ({hint.control.family}) does not fit the {family} model being sampled: {problem}"
            )
        index = torch.cat([torch.arange(c * b, (c + 1) * b) for c in chunks]).to(call.x.device)
        if isinstance(hint.control, T2IAdapterHandle):
            features = [f.repeat(len(chunks), 1, 1, 1) for f in _run_adapter(hint, call)]
            if intra is None:
                intra = [torch.zeros((total, *f.shape[1:]), dtype=f.dtype, device=f.device) for f in features]
            for acc, f in zip(intra, features, strict=True):
                acc.index_add_(0, index, f)
            continue
        res_down, res_mid = _run_controlnet(hint, call, index, _network(hint, unet, patches))
        if down is None:
            down = [torch.zeros((total, *r.shape[1:]), dtype=r.dtype, device=r.device) for r in res_down]
            mid = torch.zeros((total, *res_mid.shape[1:]), dtype=res_mid.dtype, device=res_mid.device)
        for acc, r in zip(down, res_down, strict=True):
            acc.index_add_(0, index, r)
        assert mid is not None
        mid.index_add_(0, index, res_mid)
    kwargs = dict(call.unet_kwargs)
    if down is not None and mid is not None:
        previous = kwargs.get("down_block_additional_residuals")
        if previous is not None:
            down = [a + p for a, p in zip(down, previous, strict=True)]
            mid = mid + kwargs["mid_block_additional_residual"]
        kwargs["down_block_additional_residuals"] = tuple(down)
        kwargs["mid_block_additional_residual"] = mid
    if intra is not None:
        before = kwargs.get(INTRABLOCK)
        if before is not None:
            intra = [a + p for a, p in zip(intra, before, strict=True)]
        kwargs[INTRABLOCK] = tuple(intra)  # the UNet's forward takes a list it consumes: see handles.py
    return call_next(call.replace(unet_kwargs=kwargs))


def _run_adapter(hint: ControlHint, call: ModelCall) -> list[Tensor]:
    """A T2I-Adapter's features for one chunk of the call (``batch`` rows), scaled by the strength."""
    adapter = hint.control
    assert isinstance(adapter, T2IAdapterHandle)
    pixels = hint_for_call(hint, call)
    h, w = pixels.shape[-2:]
    step = adapter.unshuffle
    if h % step or w % step:
        raise ControlError(
            f"{hint.label} ({adapter.family}) needs a picture whose sides are multiples of {step} pixels; "
            f"the part being sampled is {w}x{h}"
        )
    return [f.to(call.x.device) for f in adapter.features(pixels, hint.strength)]


def _network(hint: ControlHint, unet: torch.nn.Module | None, patches: Any) -> Any:
    """The ControlNet module of a hint: its own, or a Control-LoRA's built for the sampled model."""
    control = hint.control
    if not isinstance(control, ControlLoraHandle):
        return control.net
    if unet is None:
        raise ControlError(f"{hint.label}: a Control-LoRA needs the model it is sampled with")
    try:
        return control.net_for(unet, patches)
    except CheckpointError as exc:
        raise ControlError(f"{hint.label} does not fit the model being sampled: {exc.problem}") from None


def _run_controlnet(
    hint: ControlHint, call: ModelCall, index: Tensor, net: Any
) -> tuple[list[Tensor], Tensor]:
    """One ControlNet forward on the rows ``index`` of the call; residuals scaled by the strength."""
    param = next(net.parameters())
    device, dtype = param.device, param.dtype
    image = hint_for_call(hint, call).to(device, dtype)
    cond_rows = image.repeat(len(index) // call.batch, 1, 1, 1)
    added = None
    if call.added is not None:
        added = {k: v[index].to(device, dtype) for k, v in call.added.items()}
    with torch.inference_mode():
        res_down, res_mid = net(
            call.x[index].to(device, dtype),
            call.timestep[index].to(device),
            encoder_hidden_states=call.context[index].to(device, dtype),
            controlnet_cond=cond_rows,
            conditioning_scale=float(hint.strength),
            added_cond_kwargs=added,
            return_dict=False,
        )
    return [r.to(call.x.device) for r in res_down], res_mid.to(call.x.device)


def hint_for_call(hint: ControlHint, call: ModelCall) -> Tensor:
    """The hint image for one chunk of the call: [batch, C, 8*ah, 8*aw], resized to the whole latent's
    pixel size when it has the latent's aspect ratio, cropped to the call's area and batched like the
    latent. A hint of another aspect ratio or a batch that does not divide the latent's is refused."""
    ah, aw, y, x = call.area
    if call.sampling is not None:
        full_h, full_w = call.sampling.latent_image.shape[-2:]
    else:
        full_h, full_w = ah, aw
    image = hint.image
    if image.dim() == 3:
        image = image[None]
    _, ih, iw, _ = image.shape
    if abs(iw / ih * full_h - full_w) > _ASPECT_SLACK:
        raise ControlError(
            f"{hint.label}: the hint image is {iw}x{ih} pixels, the latent being sampled is "
            f"{full_w * LATENT_FACTOR}x{full_h * LATENT_FACTOR}; their aspect ratios differ "
            "(scale or crop the hint to the picture's size)"
        )
    pixels = image[..., :3].movedim(-1, 1).float()
    size = (full_h * LATENT_FACTOR, full_w * LATENT_FACTOR)
    if tuple(pixels.shape[-2:]) != size:
        pixels = torch.nn.functional.interpolate(pixels, size=size, mode="nearest-exact")
    f = LATENT_FACTOR
    pixels = pixels[:, :, y * f : (y + ah) * f, x * f : (x + aw) * f]
    return _batched(pixels, call.batch, hint.label)


def _batched(pixels: Tensor, batch: int, label: str) -> Tensor:
    n = pixels.shape[0]
    if n == batch:
        return pixels
    if batch % n:
        raise ControlError(f"{label}: {n} hint images for a latent batch of {batch} (give 1, or {batch})")
    return pixels.repeat(batch // n, 1, 1, 1)


def with_hint(entries: Sequence[Any], hint: ControlHint) -> list[Any]:
    """A conditioning whose entries carry ``hint`` after the hints they already carry."""
    return [e.replace(control=(*e.control, hint)) for e in entries]
