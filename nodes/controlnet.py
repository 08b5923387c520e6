"""ControlNet nodes (ComfyUI's names and inputs): load a ControlNet and attach it, with a hint image, to
conditioning. The sampler's model call applies it (``engine/models/controlnet.py``); several stack."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from atelier.engine.folders import Folders
from atelier.engine.models.control_lora import ControlLoraHandle
from atelier.engine.models.controlnet import (
    ControlHint,
    ControlNetHandle,
    load_controlnet_handle,
    load_diff_controlnet,
    with_hint,
)
from atelier.engine.models.family_traits import controlnet_family, needs_controlnet_family
from atelier.engine.models.handles import ModelHandle, VaeHandle
from atelier.engine.models.sockets import CONDITIONING, CONTROL_NET, IMAGE, MODEL, VAE
from atelier.engine.models.t2i_adapter import T2IAdapterHandle
from atelier.engine.node import Choice, Context, Float, Node, Output, Socket, model_files
from atelier.engine.sampling.conditioning import Conditioning
from atelier.engine.traits import Declared, Traits, pass_through
from atelier.nodes.loaders import _ModelFileNode

_STRENGTH = Float("strength", 1.0, min=0.0, max=10.0, step=0.01)


def _origin(ctx: Context) -> str:
    return f"node {ctx.node_id} ({ctx.node_type})"


def _needs_family(upstream: Mapping[str, Traits], *conditionings: str) -> set[Any]:
    """A conditioning with a ControlNet attached needs the ControlNet's family (validation's check)."""
    return pass_through(upstream, *conditionings) | needs_controlnet_family(upstream.get("control_net", ()))


class _ControlNetFileNode(_ModelFileNode, abstract=True):
    file_input = ("controlnet", "control_net_name")

    @classmethod
    def traits(
        cls, files: Folders, upstream: Mapping[str, Traits], node_id: str, **literals: Any
    ) -> Declared:
        name = literals["control_net_name"]
        return {0: controlnet_family(files, node_id, name, "control_net_name")}


def _check_image(image: Any, ctx: Context) -> None:
    if image.dim() != 4 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"{_origin(ctx)}: the hint image must be an IMAGE [B, H, W, C], got {tuple(image.shape)}"
        )


class ControlNetLoader(_ControlNetFileNode):
    """Load a ControlNet (SD1.x, SD2.x, SDXL; original single-file or diffusers layout, safetensors or
    weights-only .pth), a T2I-Adapter (TencentARC's .pth or diffusers' layout, SD1.x and SDXL) or a
    Control-LoRA (built from the sampled model's UNet) from models/controlnet."""

    display_name = "Load ControlNet Model"
    category = "loaders"
    file_input = ("controlnet", "control_net_name")
    inputs = (Choice("control_net_name", model_files("controlnet")),)
    outputs = (Output(CONTROL_NET),)

    def run(
        self, ctx: Context, control_net_name: str
    ) -> ControlNetHandle | T2IAdapterHandle | ControlLoraHandle:
        path = ctx.files.find_model("controlnet", control_net_name)
        return load_controlnet_handle(ctx.models, path, control_net_name)


class DiffControlNetLoader(_ControlNetFileNode):
    """Load a ControlNet for a model: a "diff" ControlNet (stored as a difference to its base model) gets
    the model's weights added, a Control-LoRA is built from the model's UNet; any other ControlNet loads as
    with ControlNetLoader."""

    display_name = "Load ControlNet Model (diff)"
    category = "loaders"
    file_input = ("controlnet", "control_net_name")
    inputs = (Socket("model", MODEL), Choice("control_net_name", model_files("controlnet")))
    outputs = (Output(CONTROL_NET),)

    def run(
        self, ctx: Context, model: ModelHandle, control_net_name: str
    ) -> ControlNetHandle | T2IAdapterHandle:
        path = ctx.files.find_model("controlnet", control_net_name)
        with model.session():  # the weights as the model uses them (with its LoRAs)
            return load_diff_controlnet(path, model.unet, control_net_name, ctx.models)


class ControlNetApply(Node):
    """Attach a ControlNet and its hint image to a conditioning (the positive prompt), for the whole
    schedule. Prefer ControlNetApplyAdvanced, which also conditions the negative."""

    display_name = "Apply ControlNet (OLD)"
    category = "conditioning/controlnet"
    deprecated = True
    inputs = (
        Socket("conditioning", CONDITIONING),
        Socket("control_net", CONTROL_NET),
        Socket("image", IMAGE),
        _STRENGTH,
    )
    outputs = (Output(CONDITIONING),)

    @classmethod
    def traits(
        cls, files: Folders, upstream: Mapping[str, Traits], node_id: str, **literals: Any
    ) -> Declared:
        return {0: _needs_family(upstream, "conditioning")}

    def run(
        self,
        ctx: Context,
        conditioning: Conditioning,
        control_net: ControlNetHandle | T2IAdapterHandle | ControlLoraHandle,
        image: Any,
        strength: float,
    ) -> Conditioning:
        _check_image(image, ctx)
        if strength == 0.0:
            return conditioning
        hint = ControlHint(control_net, image, float(strength), origin=_origin(ctx))
        return with_hint(conditioning, hint)


class ControlNetApplyAdvanced(Node):
    """Attach a ControlNet and its hint image to the positive and negative conditioning, acting from
    ``start_percent`` to ``end_percent`` of the schedule. Applied again with another ControlNet, both act
    (their residuals add up)."""

    display_name = "Apply ControlNet"
    category = "conditioning/controlnet"
    inputs = (
        Socket("positive", CONDITIONING),
        Socket("negative", CONDITIONING),
        Socket("control_net", CONTROL_NET),
        Socket("image", IMAGE),
        _STRENGTH,
        Float("start_percent", 0.0, min=0.0, max=1.0, step=0.001),
        Float("end_percent", 1.0, min=0.0, max=1.0, step=0.001),
        Socket(
            "vae", VAE, optional=True, description="unused by SD1.x/SD2.x/SDXL ControlNets (ComfyUI's input)"
        ),
    )
    outputs = (Output(CONDITIONING, "positive"), Output(CONDITIONING, "negative"))

    @classmethod
    def traits(
        cls, files: Folders, upstream: Mapping[str, Traits], node_id: str, **literals: Any
    ) -> Declared:
        return {0: _needs_family(upstream, "positive"), 1: _needs_family(upstream, "negative")}

    def run(
        self,
        ctx: Context,
        positive: Conditioning,
        negative: Conditioning,
        control_net: ControlNetHandle | T2IAdapterHandle | ControlLoraHandle,
        image: Any,
        strength: float,
        start_percent: float,
        end_percent: float,
        vae: VaeHandle | None = None,
    ) -> tuple[Conditioning, Conditioning]:
        _check_image(image, ctx)
        if start_percent > end_percent:
            raise ValueError(
                f"{_origin(ctx)}: start_percent {start_percent} is after end_percent {end_percent}"
            )
        if strength == 0.0:
            return positive, negative
        hint = ControlHint(
            control_net, image, float(strength), start_percent, end_percent, origin=_origin(ctx)
        )
        return with_hint(positive, hint), with_hint(negative, hint)
