"""Model patches: nodes that give a MODEL handle with something attached to its call (never editing it)."""

from __future__ import annotations

from atelier.engine.models.handles import ModelHandle
from atelier.engine.models.sockets import MODEL
from atelier.engine.node import Boolean, Choice, Context, Float, Node, Output, Socket
from atelier.engine.sampling.cfg import rescale_cfg
from atelier.engine.sampling.model_sampling import PREDICTIONS, ModelSampling


class RescaleCFG(Node):
    """Rescale the guided prediction to the conditional one's spread (fixes over-exposure at high CFG,
    and v-prediction models' washed-out look). 0 leaves CFG as it is."""

    display_name = "RescaleCFG"
    category = "advanced/model"
    inputs = (Socket("model", MODEL), Float("multiplier", 0.7, min=0.0, max=1.0, step=0.01))
    outputs = (Output(MODEL),)

    def run(self, ctx: Context, model: ModelHandle, multiplier: float) -> ModelHandle:
        return model.with_cfg_function(rescale_cfg(multiplier))


class ModelSamplingDiscrete(Node):
    """Say what the network predicts (noise, v, an LCM's consistency output, or the clean latent) and
    optionally rescale the schedule to zero terminal SNR, for checkpoints whose file does not tell."""

    display_name = "ModelSamplingDiscrete"
    category = "advanced/model"
    inputs = (
        Socket("model", MODEL),
        Choice("sampling", list(PREDICTIONS)),
        Boolean("zsnr", False),
    )
    outputs = (Output(MODEL),)

    def run(self, ctx: Context, model: ModelHandle, sampling: str, zsnr: bool) -> ModelHandle:
        return model.with_sampling(ModelSampling.discrete(sampling, zsnr=zsnr))  # type: ignore[arg-type]
