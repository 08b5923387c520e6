"""Model merging (ComfyUI's advanced/model_merging): blend, subtract and add models and text encoders, and
save a MODEL/CLIP/VAE as a checkpoint or a VAE alone.

Merges give new handles with merge patches (``engine/models/merge.py``): the loaded models are never
changed. Saved files are single-file ``.safetensors`` in the original layout that CheckpointLoaderSimple
and VAELoader read back, named like SaveImage's pictures (``{prefix}_{NNNNN}_.safetensors``, never
overwriting), with the workflow in their metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from atelier.engine.models.handles import ClipHandle, ModelHandle, VaeHandle
from atelier.engine.models.merge import block_ratio, merge_clips, merge_models
from atelier.engine.models.save import checkpoint_state_dict, vae_state_dict
from atelier.engine.models.sockets import CLIP, MODEL, VAE
from atelier.engine.node import Context, Float, Node, NodeResult, Output, Socket, String
from atelier.nodes.image import _metadata, write_output_file

CATEGORY = "advanced/model_merging"


def _ratio(name: str = "ratio") -> Any:
    return Float(name, 1.0, min=0.0, max=1.0, step=0.01)


class ModelMergeSimple(Node):
    """``model1 * ratio + model2 * (1 - ratio)``, weight by weight (1.0 gives model1)."""

    category = CATEGORY
    inputs = (Socket("model1", MODEL), Socket("model2", MODEL), _ratio())
    outputs = (Output(MODEL),)

    def run(self, ctx: Context, model1: ModelHandle, model2: ModelHandle, ratio: float) -> ModelHandle:
        return merge_models(model1, model2, lambda _: (ratio, 1.0 - ratio), "ModelMergeSimple")


class ModelMergeBlocks(Node):
    """A ratio per part of the UNet: input blocks, middle block, output blocks (the rest takes ``input``'s)."""

    category = CATEGORY
    inputs = (
        Socket("model1", MODEL),
        Socket("model2", MODEL),
        _ratio("input"),
        _ratio("middle"),
        _ratio("out"),
    )
    outputs = (Output(MODEL),)

    def run(
        self, ctx: Context, model1: ModelHandle, model2: ModelHandle, input: float, middle: float, out: float
    ) -> ModelHandle:
        scales = block_ratio(model1.unet.config, {"input": input, "middle": middle, "out": out})
        return merge_models(model1, model2, scales, "ModelMergeBlocks")


class ModelMergeSubtract(Node):
    """``(model1 - model2) * multiplier``: the difference a fine-tune made, to add to another model."""

    category = CATEGORY
    inputs = (
        Socket("model1", MODEL),
        Socket("model2", MODEL),
        Float("multiplier", 1.0, min=-10.0, max=10.0, step=0.01),
    )
    outputs = (Output(MODEL),)

    def run(self, ctx: Context, model1: ModelHandle, model2: ModelHandle, multiplier: float) -> ModelHandle:
        return merge_models(model1, model2, lambda _: (multiplier, -multiplier), "ModelMergeSubtract")


class ModelMergeAdd(Node):
    """``model1 + model2``, weight by weight."""

    category = CATEGORY
    inputs = (Socket("model1", MODEL), Socket("model2", MODEL))
    outputs = (Output(MODEL),)

    def run(self, ctx: Context, model1: ModelHandle, model2: ModelHandle) -> ModelHandle:
        return merge_models(model1, model2, lambda _: (1.0, 1.0), "ModelMergeAdd")


class CLIPMergeSimple(Node):
    """``clip1 * ratio + clip2 * (1 - ratio)``, text encoder by text encoder."""

    category = CATEGORY
    inputs = (Socket("clip1", CLIP), Socket("clip2", CLIP), _ratio())
    outputs = (Output(CLIP),)

    def run(self, ctx: Context, clip1: ClipHandle, clip2: ClipHandle, ratio: float) -> ClipHandle:
        return merge_clips(clip1, clip2, lambda _: (ratio, 1.0 - ratio))


def file_metadata(ctx: Context) -> dict[str, str]:
    """safetensors metadata of a saved model: the workflow that made it (``prompt``, as ComfyUI names
    it) and Atelier's full record (parameters, node versions, input files with their hashes)."""
    meta = _metadata(ctx)
    out = {"atelier": json.dumps(meta, ensure_ascii=False, separators=(",", ":"))}
    if "workflow" in meta:
        out["prompt"] = json.dumps(meta["workflow"], ensure_ascii=False, separators=(",", ":"))
    return out


def _modelspec(model: ModelHandle, title: str) -> dict[str, str]:
    """The model-spec keys ComfyUI writes (SDXL base and refiner only; the prediction for all)."""
    spec: dict[str, str] = {}
    architecture = {"sdxl": "base", "sdxl_refiner": "refiner"}.get(model.family)
    if architecture is not None:
        spec = {
            "modelspec.sai_model_spec": "1.0.0",
            "modelspec.architecture": f"stable-diffusion-xl-v1-{architecture}",
            "modelspec.implementation": "sgm",
            "modelspec.title": title,
        }
    spec["modelspec.predict_key"] = "v" if model.sampling.prediction == "v_prediction" else "epsilon"
    return spec


def save_safetensors(ctx: Context, state: dict[str, Any], prefix: str, metadata: dict[str, str]) -> str:
    """Write ``state`` as a new ``{prefix}_{NNNNN}_.safetensors`` in the output folder; its name there."""

    def write(path: Path) -> None:
        save_file(state, str(path), metadata=metadata)

    return write_output_file(ctx.files.output, prefix, ".safetensors", write)


def _saved(name: str) -> NodeResult:
    sub, _, fname = name.rpartition("/")
    return NodeResult(ui={"models": [{"filename": fname, "subfolder": sub, "type": "output"}]})


class CheckpointSave(Node):
    """Save a model, its text encoders and a VAE as one checkpoint (the weights as used: LoRAs and merges
    applied) in the output folder; CheckpointLoaderSimple loads it back."""

    display_name = "Save Checkpoint"
    category = CATEGORY
    output_node = True
    inputs = (
        Socket("model", MODEL),
        Socket("clip", CLIP),
        Socket("vae", VAE),
        String("filename_prefix", "checkpoints/ComfyUI"),
    )
    outputs = ()

    def run(
        self, ctx: Context, model: ModelHandle, clip: ClipHandle, vae: VaeHandle, filename_prefix: str
    ) -> NodeResult:
        state = checkpoint_state_dict(model, clip, vae)
        metadata = {**_modelspec(model, Path(filename_prefix).name), **file_metadata(ctx)}
        return _saved(save_safetensors(ctx, state, filename_prefix, metadata))


class VAESave(Node):
    """Save a VAE as a standalone file (original layout) in the output folder; VAELoader loads it back."""

    category = CATEGORY
    output_node = True
    inputs = (Socket("vae", VAE), String("filename_prefix", "vae/ComfyUI_vae"))
    outputs = ()

    def run(self, ctx: Context, vae: VaeHandle, filename_prefix: str) -> NodeResult:
        return _saved(save_safetensors(ctx, vae_state_dict(vae), filename_prefix, file_metadata(ctx)))
