"""HypernetworkLoader: apply an A1111 / ComfyUI hypernetwork (``models/hypernetworks/*.pt``) to a model's
attention keys and values (``engine/models/hypernetwork.py``). The input model stays unchanged."""

from __future__ import annotations

from atelier.engine.models.handles import ModelHandle
from atelier.engine.models.hypernetwork import load_hypernetwork
from atelier.engine.models.sockets import MODEL
from atelier.engine.node import Choice, Context, Float, Output, Socket, model_files
from atelier.nodes.loaders import _ModelFileNode


class HypernetworkLoader(_ModelFileNode):
    """A model whose attention keys and values go through a hypernetwork, scaled by ``strength``."""

    display_name = "Load Hypernetwork"
    category = "loaders"
    file_input = ("hypernetworks", "hypernetwork_name")
    inputs = (
        Socket("model", MODEL),
        Choice("hypernetwork_name", model_files("hypernetworks")),
        Float("strength", 1.0, min=-10.0, max=10.0, step=0.01),
    )
    outputs = (Output(MODEL),)

    def run(self, ctx: Context, model: ModelHandle, hypernetwork_name: str, strength: float) -> ModelHandle:
        path = ctx.files.find_model("hypernetworks", hypernetwork_name)
        return model.with_attention_patch(load_hypernetwork(path, strength))
