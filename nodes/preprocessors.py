"""Control-hint preprocessors (``engine/imaging/preprocess.py``, ``depth.py``): edges, line art and normal
maps need no weights; depth maps come from the user's ONNX depth estimator. Pose pictures: ``nodes/pose.py``.
OpenPose-format pose pictures, depth and normal maps the user already has need no node: LoadImage gives
them to ControlNetApplyAdvanced as they are."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from atelier.engine.faces.detect import to_host_rgb
from atelier.engine.folders import Folders
from atelier.engine.imaging.depth import (
    DEFAULT_MODEL,
    check_depth_model,
    depth_model_choices,
    estimate_depth,
    load_depth_model,
)
from atelier.engine.imaging.pose import output_size
from atelier.engine.imaging.preprocess import canny, lineart_standard, normal_from_depth
from atelier.engine.models.sockets import IMAGE
from atelier.engine.node import Choice, Context, Float, Int, Node, Output, Socket


class Canny(Node):
    """Edges of a picture (white on black), for canny and lineart ControlNets; ComfyUI's thresholds."""

    display_name = "Canny"
    category = "image/preprocessors"
    inputs = (
        Socket("image", IMAGE),
        Float("low_threshold", 0.4, min=0.01, max=0.99, step=0.01),
        Float("high_threshold", 0.8, min=0.01, max=0.99, step=0.01),
    )
    outputs = (Output(IMAGE),)

    def run(self, ctx: Context, image: Tensor, low_threshold: float, high_threshold: float) -> Tensor:
        if low_threshold > high_threshold:
            raise ValueError(
                f"node {ctx.node_id} (Canny): low_threshold {low_threshold} is above high_threshold {high_threshold}"
            )
        return canny(image, low_threshold, high_threshold)


class LineartStandardPreprocessor(Node):
    """Line art without weights (controlnet_aux's "Standard Lineart"): how much darker each pixel is
    than its blurred surroundings, white lines on black, for lineart ControlNets."""

    display_name = "Standard Lineart"
    category = "ControlNet Preprocessors/Line Extractors"
    inputs = (
        Socket("image", IMAGE),
        Float("guassian_sigma", 6.0, min=0.01, max=100.0, step=0.01, description="blur radius, pixels"),
        Int("intensity_threshold", 8, min=0, max=16),
        Int("resolution", 512, min=64, max=16384, step=64, description="the result's shorter side, pixels"),
    )
    outputs = (Output(IMAGE),)

    def run(
        self,
        ctx: Context,
        image: Tensor,
        guassian_sigma: float,
        intensity_threshold: int,
        resolution: int,
    ) -> Tensor:
        return lineart_standard(_at_resolution(image, resolution), guassian_sigma, intensity_threshold)


def _at_resolution(image: Tensor, resolution: int) -> Tensor:
    """The picture scaled (bilinear, antialiased) so its shorter side is ``resolution``."""
    w, h = output_size(image.shape[2], image.shape[1], resolution)
    if (h, w) == tuple(image.shape[1:3]):
        return image
    pixels = image.movedim(-1, 1).float()
    scaled = torch.nn.functional.interpolate(pixels, size=(h, w), mode="bilinear", antialias=True)
    return scaled.clamp(0, 1).movedim(1, -1)


class DepthMapPreprocessor(Node):
    """A depth map (near white, far black) from your ONNX depth estimator in models/depth (Depth
    Anything or MiDaS exported to ONNX; Atelier ships none), for depth ControlNets."""

    display_name = "Depth Map (ONNX model)"
    category = "ControlNet Preprocessors/Normal and Depth Estimators"
    inputs = (
        Socket("image", IMAGE),
        Choice("model_name", depth_model_choices, DEFAULT_MODEL),
        Int("resolution", 518, min=14, max=16384, step=14, description="the model's shorter side, pixels"),
    )
    outputs = (Output(IMAGE),)

    @classmethod
    def check_inputs(cls, files: Folders, **literals: Any) -> list[tuple[str | None, str]]:
        if "model_name" not in literals:  # an invalid value, reported already
            return []
        problem = check_depth_model(files, literals["model_name"])
        return [("model_name", problem)] if problem else []

    def run(self, ctx: Context, image: Tensor, model_name: str, resolution: int) -> Tensor:
        try:
            session = load_depth_model(ctx.files, ctx.models, model_name)
            _, h, w, _ = image.shape
            maps = [estimate_depth(session, rgb, (w, h), resolution) for rgb in to_host_rgb(image)]
        except Exception as exc:
            raise RuntimeError(f"node {ctx.node_id} (DepthMapPreprocessor): {exc}") from exc
        depth = torch.from_numpy(np.stack(maps)).float().to(image.device)
        return depth[..., None].expand(-1, -1, -1, 3).contiguous()


class NormalMapFromDepth(Node):
    """A normal map (OpenGL colours: red right, green up, blue toward you) from a depth map (near white),
    for normal ControlNets; from DepthMapPreprocessor or a depth picture you have."""

    display_name = "Normal Map from Depth"
    category = "ControlNet Preprocessors/Normal and Depth Estimators"
    inputs = (
        Socket("depth", IMAGE),
        Float("strength", 6.0, min=0.0, max=1000.0, step=0.1, description="how steep a depth step looks"),
        Float("bg_threshold", 0.1, min=0.0, max=1.0, step=0.01, description="depth below it faces you"),
    )
    outputs = (Output(IMAGE),)

    def run(self, ctx: Context, depth: Tensor, strength: float, bg_threshold: float) -> Tensor:
        return normal_from_depth(depth, strength, bg_threshold)
