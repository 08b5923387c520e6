"""Latent nodes: empty latents, upscaling, noise masks.

LATENT is ``{"samples": [B, 4, H/8, W/8], "noise_mask"?: [B, 1, h, w]}`` holding raw VAE latents.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from atelier.engine import folders as _folders
from atelier.engine.limits import Estimate, Extent
from atelier.engine.models import estimates as X
from atelier.engine.models.sockets import LATENT, MASK
from atelier.engine.node import Choice, Context, Float, Int, Node, Output, Socket

MAX_RESOLUTION = 16384
LATENT_UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp")


class EmptyLatentImage(Node):
    """A batch of empty latents to start sampling from."""

    category = "latent"
    inputs = (
        Int("width", 512, min=16, max=MAX_RESOLUTION, step=8),
        Int("height", 512, min=16, max=MAX_RESOLUTION, step=8),
        Int("batch_size", 1, min=1, max=4096),
    )
    outputs = (Output(LATENT),)

    @classmethod
    def estimate(
        cls, files: _folders.Folders, upstream: Mapping[str, Extent], width: int, height: int, batch_size: int
    ) -> Estimate:
        return Estimate(
            X.picture(width, height, batch_size, X.larger_side(width, height), "latent", "batch_size"),
            {0: X.latent_extent(width, height, batch_size)},
        )

    def run(self, ctx: Context, width: int, height: int, batch_size: int) -> dict[str, Any]:
        return {"samples": torch.zeros(batch_size, 4, height // 8, width // 8, device=ctx.device)}


def upscale_latent(samples: torch.Tensor, width: int, height: int, method: str) -> torch.Tensor:
    if method == "bislerp":
        method = "bicubic"  # spherical interpolation is approximated by bicubic here
    kwargs: dict[str, Any] = {"align_corners": False} if method in ("bilinear", "bicubic") else {}
    return F.interpolate(samples.float(), size=(height, width), mode=method, **kwargs)


def _with_samples(latent: dict[str, Any], samples: torch.Tensor) -> dict[str, Any]:
    out = {k: v for k, v in latent.items() if k != "noise_mask"}
    out["samples"] = samples
    return out


class LatentUpscale(Node):
    """Resize latents to a pixel size (0 keeps the aspect ratio from the other side)."""

    category = "latent"
    inputs = (
        Socket("samples", LATENT),
        Choice("upscale_method", LATENT_UPSCALE_METHODS),
        Int("width", 512, min=0, max=MAX_RESOLUTION, step=8),
        Int("height", 512, min=0, max=MAX_RESOLUTION, step=8),
        Choice("crop", ["disabled", "center"]),
    )
    outputs = (Output(LATENT),)

    @classmethod
    def estimate(
        cls, files: _folders.Folders, upstream: Mapping[str, Extent], width: int, height: int, **_: Any
    ) -> Estimate | None:
        src = upstream.get("samples")
        if src is None and (width == 0 or height == 0):
            return None
        sw, sh = X.latent_pixels(src) if src is not None else (width, height)
        w, h = X.scaled(sw, sh, width, height)
        batch = src.batch if src is not None else 1
        return Estimate(
            X.picture(w, h, batch, X.larger_side(width, height), "latent"), {0: X.latent_extent(w, h, batch)}
        )

    def run(
        self, ctx: Context, samples: dict, upscale_method: str, width: int, height: int, crop: str
    ) -> dict:
        s = samples["samples"]
        h, w = s.shape[-2:]
        if width == 0 and height == 0:
            return samples
        tw = width // 8 if width else max(1, round(w * (height // 8) / h))
        th = height // 8 if height else max(1, round(h * (width // 8) / w))
        if crop == "center":
            target = tw / th
            if w / h > target:
                nw = max(1, round(h * target))
                s = s[..., (w - nw) // 2 : (w - nw) // 2 + nw]
            else:
                nh = max(1, round(w / target))
                s = s[..., (h - nh) // 2 : (h - nh) // 2 + nh, :]
        return _with_samples(samples, upscale_latent(s, tw, th, upscale_method))


class LatentUpscaleBy(Node):
    category = "latent"
    inputs = (
        Socket("samples", LATENT),
        Choice("upscale_method", LATENT_UPSCALE_METHODS),
        Float("scale_by", 1.5, min=0.01, max=8.0, step=0.01),
    )
    outputs = (Output(LATENT),)

    @classmethod
    def estimate(
        cls, files: _folders.Folders, upstream: Mapping[str, Extent], scale_by: float, **_: Any
    ) -> Estimate | None:
        src = upstream.get("samples")
        if src is None:
            return None
        w, h = max(1, round(src.width * scale_by)), max(1, round(src.height * scale_by))
        out = Extent(w, h, src.batch, src.channels)
        pw, ph = X.latent_pixels(out)
        return Estimate(X.picture(pw, ph, src.batch, "scale_by", "latent"), {0: out})

    def run(self, ctx: Context, samples: dict, upscale_method: str, scale_by: float) -> dict:
        s = samples["samples"]
        h, w = s.shape[-2:]
        return _with_samples(
            samples,
            upscale_latent(s, max(1, round(w * scale_by)), max(1, round(h * scale_by)), upscale_method),
        )


class SetLatentNoiseMask(Node):
    """Only the masked part (1) of the latent is denoised; the rest is kept."""

    category = "latent/inpaint"
    inputs = (Socket("samples", LATENT), Socket("mask", MASK))
    outputs = (Output(LATENT),)

    @classmethod
    def estimate(cls, files: _folders.Folders, upstream: Mapping[str, Extent]) -> Estimate | None:
        return X.passthrough(upstream, "samples")

    def run(self, ctx: Context, samples: dict, mask: torch.Tensor) -> dict:
        out = dict(samples)
        out["noise_mask"] = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float()
        return out
