"""Control-hint preprocessors that run offline without weights (``engine/imaging/preprocess.py``).

OpenPose-format pose pictures, depth and normal maps the user already has need no node: LoadImage gives
them to ControlNetApplyAdvanced as they are."""

from __future__ import annotations

from torch import Tensor

from atelier.engine.imaging.preprocess import canny
from atelier.engine.models.sockets import IMAGE
from atelier.engine.node import Context, Float, Node, Output, Socket


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
