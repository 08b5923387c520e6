"""RebatchLatents and RebatchImages: regroup batches into lists of batches of a given size (ComfyUI's
names, inputs and list semantics: they take every upstream batch at once and return a list, so the nodes
after them run once per new batch; see engine/node_lists.py)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from atelier.engine.models.sockets import IMAGE, LATENT
from atelier.engine.node import Context, Int, Node, Output, Socket

#: pixels per latent cell: ComfyUI keeps rebatched noise masks at the picture's size
SCALE = 8


def _items(latents: list[dict[str, Any]]) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    """Every sample of every latent batch, in order: (samples [1,C,h,w], noise mask [1,1,8h,8w] (ones where
    the latent has none), batch index (the latent's own, or its place in the whole sequence))."""
    out: list[tuple[torch.Tensor, torch.Tensor, int]] = []
    for latent in latents:
        samples = latent["samples"]
        b, _, h, w = samples.shape
        mask = latent.get("noise_mask")
        if mask is None:
            mask = torch.ones((b, 1, h * SCALE, w * SCALE))
        else:
            mask = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float().cpu()
            if mask.shape[-2:] != (h * SCALE, w * SCALE):
                mask = F.interpolate(mask, size=(h * SCALE, w * SCALE), mode="bilinear")
            if mask.shape[0] < b:
                mask = mask.repeat((b - 1) // mask.shape[0] + 1, 1, 1, 1)[:b]
        indices = latent.get("batch_index") or [len(out) + i for i in range(b)]
        out += [(samples[i : i + 1], mask[i : i + 1], int(indices[i])) for i in range(b)]
    return out


def _latent(group: list[tuple[torch.Tensor, torch.Tensor, int]]) -> dict[str, Any]:
    mask = torch.cat([m for _, m, _ in group])
    out: dict[str, Any] = {
        "samples": torch.cat([s for s, _, _ in group]),
        "batch_index": [i for _, _, i in group],
    }
    if bool((mask != 1).any()):  # a mask of ones masks nothing: left out, as ComfyUI does
        out["noise_mask"] = mask.to(out["samples"].device)
    return out


class RebatchLatents(Node):
    """Regroup latent batches into batches of ``batch_size``; a change of size starts a new batch. The
    nodes after it run once per batch."""

    category = "latent/batch"
    inputs = (Socket("latents", LATENT), Int("batch_size", 1, min=1, max=4096))
    outputs = (Output(LATENT),)
    input_is_list = True
    output_is_list = (True,)

    def run(self, ctx: Context, latents: list[dict[str, Any]], batch_size: list[int]) -> list[dict[str, Any]]:
        size = batch_size[0]
        batches: list[dict[str, Any]] = []
        group: list[tuple[torch.Tensor, torch.Tensor, int]] = []
        for item in _items(latents):
            if group and (item[0].shape[-2:] != group[0][0].shape[-2:] or len(group) == size):
                batches.append(_latent(group))
                group = []
            group.append(item)
        if group:
            batches.append(_latent(group))
        return batches


class RebatchImages(Node):
    """Regroup image batches into batches of ``batch_size``. The nodes after it run once per batch."""

    category = "image/batch"
    inputs = (Socket("images", IMAGE), Int("batch_size", 1, min=1, max=4096))
    outputs = (Output(IMAGE),)
    input_is_list = True
    output_is_list = (True,)

    def run(self, ctx: Context, images: list[torch.Tensor], batch_size: list[int]) -> list[torch.Tensor]:
        size = batch_size[0]
        singles = [image[i : i + 1] for image in images for i in range(image.shape[0])]
        groups = [singles[i : i + size] for i in range(0, len(singles), size)]
        mismatched = [g for g in groups if any(s.shape[1:] != g[0].shape[1:] for s in g)]
        if mismatched:
            shapes = sorted({tuple(s.shape[1:3]) for s in mismatched[0]})
            raise ValueError(f"a batch would mix images of different sizes {shapes}: resize them first")
        return [torch.cat(g) for g in groups]
