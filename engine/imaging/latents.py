"""LATENT dict operations: compositing, blending and batch selection, keeping the dict's other entries
(noise mask, batch index) consistent. LATENT is ``{"samples": [B, C, h, w], "noise_mask"?: [B, 1, H, W],
"batch_index"?: [int, ...]}``; positions are given in latent cells unless said otherwise."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .batch import repeat_to_batch
from .masks import edge_ramp
from .resize import resize


def composite_feathered(to: Tensor, source: Tensor, x: int, y: int, feather: int) -> Tensor:
    """``source`` placed into ``to`` at cell (``x``, ``y``), cut at the edges; with ``feather`` > 0 its
    sides that lie inside ``to`` fade in linearly over ``feather`` cells (the outermost cell at
    1/feather). ComfyUI's LatentComposite (positions already divided by 8). A new tensor."""
    out = to.float().clone()
    h, w = out.shape[-2:]
    if x >= w or y >= h:
        return out
    src = repeat_to_batch(source.float().to(out.device), out.shape[0])[..., : h - y, : w - x]
    sh, sw = src.shape[-2:]
    if feather > 0:
        ry = edge_ramp(sh, feather if y != 0 else 0, feather if y + sh < h else 0, divide_by_width=False)
        rx = edge_ramp(sw, feather if x != 0 else 0, feather if x + sw < w else 0, divide_by_width=False)
        m = (ry[:, None] * rx[None, :]).to(out.device)
        src = src * m + out[..., y : y + sh, x : x + sw] * (1.0 - m)
    out[..., y : y + sh, x : x + sw] = src
    return out


def blend(samples1: Tensor, samples2: Tensor, blend_factor: float) -> Tensor:
    """``samples1 * blend_factor + samples2 * (1 - blend_factor)``; ``samples2`` is first resized (bicubic,
    centre-cropped to the aspect ratio) and repeated to ``samples1``'s shape when they differ (LatentBlend)."""
    s1 = samples1.float()
    s2 = samples2.float().to(s1.device)
    if s2.shape[-2:] != s1.shape[-2:]:
        s2 = resize(s2, s1.shape[-2], s1.shape[-1], mode="bicubic", crop="center")
    s2 = repeat_to_batch(s2, s1.shape[0])
    return s1 * blend_factor + s2 * (1.0 - blend_factor)


def from_batch(latent: dict[str, Any], batch_index: int, length: int) -> dict[str, Any]:
    """``length`` items from ``batch_index`` on (negative counts from the end; both cut to the batch),
    with their noise masks and their ``batch_index`` (so sampling gives each the noise it had in the
    batch). ComfyUI's LatentFromBatch."""
    samples: Tensor = latent["samples"]
    n = samples.shape[0]
    if batch_index < 0:
        batch_index += n
    start = max(0, min(n - 1, batch_index))
    length = min(n - start, length)
    out = dict(latent)
    out["samples"] = samples[start : start + length].clone()
    masks = latent.get("noise_mask")
    if masks is not None:
        if masks.shape[0] == 1:
            out["noise_mask"] = masks.clone()
        else:
            out["noise_mask"] = repeat_to_batch(masks, n)[start : start + length].clone()
    index = latent.get("batch_index")
    out["batch_index"] = (
        list(index[start : start + length]) if index is not None else list(range(start, start + length))
    )
    return out


def repeat_batch(latent: dict[str, Any], amount: int) -> dict[str, Any]:
    """The batch repeated ``amount`` times, with per-item noise masks and batch indices following (each
    repeat's indices offset past the previous ones). ComfyUI's RepeatLatentBatch."""
    samples: Tensor = latent["samples"]
    out = dict(latent)
    out["samples"] = samples.repeat(amount, *([1] * (samples.dim() - 1)))
    masks = latent.get("noise_mask")
    if masks is not None and masks.shape[0] > 1:
        masks = repeat_to_batch(masks, samples.shape[0]) if masks.shape[0] < samples.shape[0] else masks
        out["noise_mask"] = masks.repeat(amount, *([1] * (masks.dim() - 1)))
    index = latent.get("batch_index")
    if index is not None:
        offset = max(index) - min(index) + 1
        out["batch_index"] = list(index) + [i + r * offset for r in range(1, amount) for i in index]
    return out
