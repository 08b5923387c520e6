"""Classifier-free guidance over conditioning lists: the denoiser the samplers call.

A CONDITIONING is a list of ``(embedding [1, T, C], extras)``; extras may hold ``pooled_output``,
``strength``, ``area`` = (height, width, y, x) in latent cells, ``mask`` [h, w] in latent cells, and SDXL's
size conditioning (``width``, ``height``, ``crop_w``, ``crop_h``, ``target_width``, ``target_height``).

Each entry's denoised prediction is weighted by its strength over its area; the positive and negative
predictions are the weighted averages; the result is ``uncond + cfg * (cond - uncond)``. Every entry that
can share a forward pass does (same area; token counts brought to a common length by repeating the
context, which leaves cross-attention unchanged): for a plain prompt pair that is one batched forward of
cond and uncond. At cfg 1 the negative is skipped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from .model_sampling import ModelSampling

Conditioning = list[tuple[Tensor, dict[str, Any]]]


class DiffusionModel(Protocol):
    """What guidance needs from a MODEL handle."""

    sampling: ModelSampling

    def timestep(self, sigma: Tensor) -> Tensor:  # the network's time input for sigma
        ...

    def apply_model(
        self, x: Tensor, timestep: Tensor, context: Tensor, added: dict[str, Tensor] | None
    ) -> Tensor:  # the network's raw output (eps or v) for an already-scaled input
        ...

    @property
    def needs_pooled(self) -> bool:  # SDXL: pooled text embedding and size conditioning
        ...


@dataclass
class _Entry:
    context: Tensor
    extras: dict[str, Any]
    negative: bool


def _area(extras: dict[str, Any], h: int, w: int) -> tuple[int, int, int, int]:
    area = extras.get("area")
    if area is None:
        return (h, w, 0, 0)
    ah, aw, y, x = (int(v) for v in area)
    y, x = min(max(y, 0), h - 1), min(max(x, 0), w - 1)
    return (max(1, min(ah, h - y)), max(1, min(aw, w - x)), y, x)


def sdxl_time_ids(extras: dict[str, Any], latent_h: int, latent_w: int) -> list[float]:
    """SDXL's size conditioning: original size, crop offset, target size (pixels)."""
    width = extras.get("width", latent_w * 8)
    height = extras.get("height", latent_h * 8)
    return [
        float(height),
        float(width),
        float(extras.get("crop_h", 0)),
        float(extras.get("crop_w", 0)),
        float(extras.get("target_height", latent_h * 8)),
        float(extras.get("target_width", latent_w * 8)),
    ]


class CFGDenoiser:
    """``denoiser(x, sigma) -> x0`` for the samplers, guided by positive/negative conditioning."""

    def __init__(
        self,
        model: DiffusionModel,
        positive: Conditioning,
        negative: Conditioning,
        cfg: float,
        *,
        max_batch: int | None = None,
    ) -> None:
        if not positive:
            raise ValueError("positive conditioning is empty")
        self.model = model
        self.cfg = float(cfg)
        self.entries = [_Entry(c, dict(e), False) for c, e in positive]
        if self.cfg != 1.0:
            if not negative:
                raise ValueError(
                    "negative conditioning is empty (connect a CLIPTextEncode or ConditioningZeroOut)"
                )
            self.entries += [_Entry(c, dict(e), True) for c, e in negative]
        self.max_batch = max_batch
        self.model_calls = 0

    def __call__(self, x: Tensor, sigma: Tensor, **_: Any) -> Tensor:
        model = self.model
        ms = model.sampling
        b, _, h, w = x.shape
        x_in = ms.calculate_input(sigma, x)
        t = model.timestep(sigma).to(x.device)
        sums = {False: torch.zeros_like(x), True: torch.zeros_like(x)}
        weights = {False: torch.full_like(x[:, :1], 1e-37), True: torch.full_like(x[:, :1], 1e-37)}

        groups: dict[tuple[int, int, int, int], list[_Entry]] = {}
        for e in self.entries:
            groups.setdefault(_area(e.extras, h, w), []).append(e)
        for area, entries in groups.items():
            ah, aw, y, x0 = area
            for chunk in _chunks(entries, self.max_batch):
                self._run_group(chunk, x, x_in, sigma, t, (ah, aw, y, x0), sums, weights)
        cond = sums[False] / weights[False]
        if self.cfg == 1.0:
            return cond
        uncond = sums[True] / weights[True]
        return uncond + (cond - uncond) * self.cfg

    def _run_group(
        self,
        entries: Sequence[_Entry],
        x: Tensor,
        x_in: Tensor,
        sigma: Tensor,
        t: Tensor,
        area: tuple[int, int, int, int],
        sums: dict[bool, Tensor],
        weights: dict[bool, Tensor],
    ) -> None:
        ah, aw, y, x0 = area
        b, _, h, w = x.shape
        k = len(entries)
        xs = x_in[:, :, y : y + ah, x0 : x0 + aw]
        x_raw = x[:, :, y : y + ah, x0 : x0 + aw]
        length = math.lcm(*(e.context.shape[1] for e in entries))
        contexts = []
        for e in entries:
            c = e.context.to(x.device)
            if c.shape[1] != length:
                c = c.repeat(1, length // c.shape[1], 1)
            contexts.append(c.expand(b, -1, -1) if c.shape[0] == 1 else c)
        context = torch.cat(contexts)
        added = None
        if self.model.needs_pooled:
            pooled, time_ids = [], []
            for e in entries:
                p = e.extras.get("pooled_output")
                if p is None:
                    raise ValueError("this model (SDXL) needs a pooled text embedding: encode with its CLIP")
                p = p.to(x.device)
                pooled.append(p.expand(b, -1) if p.shape[0] == 1 else p)
                ids = torch.tensor(sdxl_time_ids(e.extras, h, w), device=x.device)
                time_ids.append(ids.expand(b, -1))
            added = {"text_embeds": torch.cat(pooled), "time_ids": torch.cat(time_ids)}
        out = self.model.apply_model(xs.repeat(k, 1, 1, 1), t.repeat(k), context, added)
        self.model_calls += 1
        sig = sigma.repeat(k)
        denoised = self.model.sampling.calculate_denoised(sig, out.float(), x_raw.repeat(k, 1, 1, 1))
        for n, e in enumerate(entries):
            d = denoised[n * b : (n + 1) * b]
            wgt = torch.full_like(d[:, :1], float(e.extras.get("strength", 1.0)))
            mask = e.extras.get("mask")
            if mask is not None:
                m = mask.to(x.device, torch.float32)
                if m.dim() == 2:
                    m = m[None, None]
                elif m.dim() == 3:
                    m = m[:, None]
                m = torch.nn.functional.interpolate(m, size=(h, w), mode="bilinear")[
                    :, :, y : y + ah, x0 : x0 + aw
                ]
                wgt = wgt * m
            sums[e.negative][:, :, y : y + ah, x0 : x0 + aw] += d * wgt
            weights[e.negative][:, :, y : y + ah, x0 : x0 + aw] += wgt


def _chunks(entries: list[_Entry], size: int | None) -> list[list[_Entry]]:
    if not size or size >= len(entries):
        return [entries]
    return [entries[i : i + size] for i in range(0, len(entries), size)]
