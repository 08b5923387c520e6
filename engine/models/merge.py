"""Model merging as weight patches, as ComfyUI merges: nothing loaded is ever changed.

Merging model 2 into model 1 gives model 1's handle with a :class:`MergePatch` per shared weight,
``W1 * self_scale + W2 * other_scale``, where ``W2`` is model 2's parameter read by reference (with the
patches model 2 carries, a LoRA say) when the merged handle is used. Loaded modules stay as they are and
cached handles of either model stay valid; the merged handle's cache signature is its node's, which
covers both inputs and the ratios.

Weights only one model has, or of different shapes (an inpainting UNet's first conv), are left as model
1's; models of different families (SD1 and SDXL), or that share no weight at all, are refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import torch

from .handles import ClipHandle, ModelHandle
from .layout import unet_key_map
from .patches import MergePatch, PatchSet

__all__ = ["block_ratio", "merge_clips", "merge_models", "merge_patch_set"]

#: ``(self_scale, other_scale)`` for a parameter name
Scales = Callable[[str], tuple[float, float]]

#: Tensors ComfyUI leaves out of CLIP merges (not weights of the model)
_CLIP_SKIP = (".position_ids", ".logit_scale")


def merge_patch_set(
    module: torch.nn.Module,
    other: torch.nn.Module,
    other_patches: PatchSet,
    scales: Scales,
    *,
    skip: Sequence[str] = (),
) -> tuple[dict[str, tuple[MergePatch, ...]], list[str]]:
    """Merge patches for every parameter of ``module`` that ``other`` has with the same shape, and the
    names of ``other``'s parameters left out (absent from ``module`` or of another shape)."""
    own = dict(module.named_parameters())
    patches: dict[str, tuple[MergePatch, ...]] = {}
    left_out: list[str] = []
    for name, weight in other.named_parameters():
        if name.endswith(tuple(skip)):
            continue
        target = own.get(name)
        if target is None or target.shape != weight.shape:
            left_out.append(name)
            continue
        self_scale, other_scale = scales(name)
        patch = MergePatch(weight, self_scale, other_scale, tuple(other_patches.get(name, ())))
        patches[name] = (patch,)
    return patches, left_out


def block_ratio(unet_config: Mapping[str, object], ratios: Mapping[str, float]) -> Scales:
    """ComfyUI's ModelMergeBlocks rule: a weight takes the ratio of the longest of ``ratios``' names that
    its original (LDM) name starts with (``input`` -> ``input_blocks``, ``middle`` -> ``middle_block``,
    ``out`` -> ``output_blocks`` and ``out``), else the first ratio; scales ``(ratio, 1 - ratio)``."""
    default = next(iter(ratios.values()))
    cache: dict[str, str] = {}

    def scales(name: str) -> tuple[float, float]:
        original = cache.get(name)
        if original is None:
            original = unet_key_map([name], unet_config)[name]
            cache[name] = original
        ratio, best = default, 0
        for prefix, value in ratios.items():
            if original.startswith(prefix) and len(prefix) > best:
                ratio, best = value, len(prefix)
        return ratio, 1.0 - ratio

    return scales


def merge_models(model1: ModelHandle, model2: ModelHandle, scales: Scales, label: str) -> ModelHandle:
    """``model1`` with ``model2``'s UNet weights blended in by ``scales``; model 1's patches, wrappers and
    sampling are kept (its own patches apply first, as in ComfyUI)."""
    if model1.family != model2.family:
        raise ValueError(
            f"model1 is a {model1.family} model, model2 a {model2.family} one: cannot merge them"
        )
    patches, _ = merge_patch_set(model1.unet, model2.unet, model2.patches, scales)
    if not patches:
        raise ValueError(
            f"model2 ({model2.family}) shares no weight with model1 ({model1.family}): cannot merge them"
        )
    merged = model1.with_patches(patches)
    return replace(merged, name=f"{label}({model1.name}, {model2.name})")


def merge_clips(clip1: ClipHandle, clip2: ClipHandle, scales: Scales) -> ClipHandle:
    """``clip1`` with ``clip2``'s text encoder weights blended in, encoder by encoder."""
    if clip1.family != clip2.family:
        raise ValueError(f"clip1 is a {clip1.family} CLIP, clip2 a {clip2.family} one: cannot merge them")
    if len(clip1.encoders) != len(clip2.encoders):
        raise ValueError(
            f"clip1 ({clip1.family}) has {len(clip1.encoders)} text encoder(s), clip2 ({clip2.family}) "
            f"{len(clip2.encoders)}: cannot merge them"
        )
    per_encoder = []
    for n, (a, b) in enumerate(zip(clip1.encoders, clip2.encoders, strict=True)):
        other_patches = clip2.patches[n] if n < len(clip2.patches) else {}
        patches, _ = merge_patch_set(a.model, b.model, other_patches, scales, skip=_CLIP_SKIP)
        if not patches:
            raise ValueError(
                f"text encoder {n + 1} of clip2 shares no weight with clip1's: cannot merge them"
            )
        per_encoder.append(patches)
    return clip1.with_patches(tuple(per_encoder))
