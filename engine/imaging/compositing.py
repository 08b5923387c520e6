"""Compositing pictures: pasting through a mask, padding for outpainting, cropping, adding an alpha
channel. IMAGE tensors are ``[B, H, W, C]``; :func:`paste` works channels-first on images and latents."""

from __future__ import annotations

import torch
from torch import Tensor

from .batch import repeat_to_batch
from .resize import resize, resize_mask


def paste(
    destination: Tensor,
    source: Tensor,
    x: int,
    y: int,
    mask: Tensor | None = None,
    multiplier: int = 1,
    resize_source: bool = False,
) -> Tensor:
    """``source`` [B, C, h, w] pasted into ``destination`` [B, C, H, W] (channels-first) with its top-left
    corner at (``x``, ``y``) given in units of 1/``multiplier`` cell (8 for latents placed in pixels),
    blended through ``mask`` (any size, resized to the source; 1 = source) where given. The source is
    repeated to the destination's batch, or first resized to the destination with ``resize_source``; what
    falls outside the destination is dropped. ComfyUI's ``composite``. A new tensor."""
    out = destination.float().clone()
    src = source.float().to(out.device)
    if resize_source:
        src = resize(src, out.shape[-2], out.shape[-1])
    src = repeat_to_batch(src, out.shape[0])
    h, w = out.shape[-2:]
    left = min(max(x, 0), w * multiplier) // multiplier
    top = min(max(y, 0), h * multiplier) // multiplier
    vis_w, vis_h = min(src.shape[-1], w - left), min(src.shape[-2], h - top)
    if vis_w <= 0 or vis_h <= 0:
        return out
    if mask is None:
        m = torch.ones_like(src[:, :1])
    else:
        m = resize_mask(mask.reshape(-1, mask.shape[-2], mask.shape[-1]).to(out.device), *src.shape[-2:])
        m = repeat_to_batch(m[:, None], src.shape[0])
    m = m[..., :vis_h, :vis_w]
    region = out[..., top : top + vis_h, left : left + vis_w]
    out[..., top : top + vis_h, left : left + vis_w] = m * src[..., :vis_h, :vis_w] + (1.0 - m) * region
    return out


def match_channels(destination: Tensor, source: Tensor) -> Tensor:
    """``source`` [..., C] with ``destination``'s channel count: extra channels dropped, a missing alpha
    channel opaque (1)."""
    c, sc = destination.shape[-1], source.shape[-1]
    if sc > c:
        return source[..., :c]
    if sc < c:
        fill = torch.ones(*source.shape[:-1], c - sc, dtype=source.dtype, device=source.device)
        return torch.cat([source, fill], dim=-1)
    return source


def composite_images(
    destination: Tensor,
    source: Tensor,
    x: int,
    y: int,
    mask: Tensor | None = None,
    resize_source: bool = False,
) -> Tensor:
    """IMAGE ``source`` pasted into IMAGE ``destination`` at pixel (``x``, ``y``) through ``mask``
    (ComfyUI's ImageCompositeMasked)."""
    src = match_channels(destination, source.to(destination.device))
    out = paste(destination.movedim(-1, 1), src.movedim(-1, 1), x, y, mask, 1, resize_source)
    return out.movedim(1, -1)


def outpaint_feather(
    height: int, width: int, sides: tuple[bool, bool, bool, bool], feathering: int
) -> Tensor:
    """The mask over the original picture when padding for outpainting: at distance ``d`` < ``feathering``
    from a padded side (top, bottom, left, right) it is ``((feathering - d) / feathering) ** 2``, else 0;
    all 0 when the picture is not wider and taller than twice ``feathering``."""
    if feathering <= 0 or 2 * feathering >= height or 2 * feathering >= width:
        return torch.zeros(height, width)
    top, bottom, left, right = sides
    i = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
    j = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width)
    far_h, far_w = torch.full_like(i, float(height)), torch.full_like(j, float(width))
    d = torch.stack(
        [
            i if top else far_h,
            height - i if bottom else far_h,
            j if left else far_w,
            width - j if right else far_w,
        ]
    ).amin(dim=0)
    v = (feathering - d) / feathering
    return torch.where(d < feathering, v * v, torch.zeros_like(v))


def pad_for_outpaint(
    image: Tensor, left: int, top: int, right: int, bottom: int, feathering: int
) -> tuple[Tensor, Tensor]:
    """The picture on a bigger canvas of mid grey, and the mask of what to paint: 1 on the new border,
    a quadratic fade into the picture along the padded sides (see :func:`outpaint_feather`), 0 elsewhere.
    Returns (IMAGE [B, H', W', C], MASK [1, H', W']). ComfyUI's ImagePadForOutpaint."""
    b, h, w, c = image.shape
    new_h, new_w = h + top + bottom, w + left + right
    out = torch.full((b, new_h, new_w, c), 0.5, dtype=torch.float32, device=image.device)
    out[:, top : top + h, left : left + w] = image.float()
    mask = torch.ones((new_h, new_w), dtype=torch.float32, device=image.device)
    inner = outpaint_feather(h, w, (top != 0, bottom != 0, left != 0, right != 0), feathering)
    mask[top : top + h, left : left + w] = inner.to(image.device)
    return out, mask[None]


def crop(image: Tensor, width: int, height: int, x: int, y: int) -> Tensor:
    """The ``width`` x ``height`` region at (``x``, ``y``), cut at the picture's edges; the corner is kept
    inside the picture (ComfyUI's ImageCrop)."""
    x = min(max(x, 0), image.shape[2] - 1)
    y = min(max(y, 0), image.shape[1] - 1)
    return image[:, y : y + height, x : x + width]


def join_alpha(image: Tensor, alpha: Tensor) -> Tensor:
    """RGBA pictures from RGB ones and a MASK: alpha = 1 - mask (a MASK marks what is transparent, as
    LoadImage reads it), the mask resized to the picture; the batch is the shorter of the two."""
    n = min(image.shape[0], alpha.shape[0])
    a = 1.0 - resize_mask(alpha.to(image.device), image.shape[1], image.shape[2])
    return torch.cat([image[:n, ..., :3].float(), a[:n, ..., None]], dim=-1)
