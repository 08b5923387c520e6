"""Two checkpoints and an upscaler in one workflow (what a device budget must juggle): an SDXL base
samples, its refiner finishes the latent, the refiner's VAE decodes, an upscale model doubles the picture,
and the base redraws it lightly (a hires pass that needs the base UNet and VAE again). Used by
tests/sd/test_sd_vram.py and bench/memory.py, with the tiny random checkpoints or real files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

BASE = "base.safetensors"
REFINER = "refiner.safetensors"
UPSCALER = "compact_x2.pth"


def write_models(root: Path, seed: int = 3, base: Path | None = None) -> Path:
    """The tiny SDXL base and refiner and a tiny 2x upscaler, in their real layouts under ``root`` (``base``:
    a tiny SDXL file already written, linked instead)."""
    from atelier.engine.models.tiny import write_tiny_checkpoint
    from tests.upscale import tiny_upscalers as tiny

    if base is not None:
        (root / "checkpoints").mkdir(parents=True, exist_ok=True)
        (root / "checkpoints" / BASE).symlink_to(base)
    else:
        write_tiny_checkpoint("sdxl", root / "checkpoints" / BASE, seed=seed)
    write_tiny_checkpoint("sdxl_refiner", root / "checkpoints" / REFINER, seed=seed)
    tiny.write_pth(tiny.compact(2, seed=seed), root / "upscale_models" / UPSCALER)
    return root


def two_checkpoints_and_upscaler(
    size: int = 64,
    steps: int = 2,
    seed: int = 5,
    base: str = BASE,
    refiner: str = REFINER,
    upscaler: str = UPSCALER,
) -> dict[str, Any]:
    """The workflow in ComfyUI's API format; node "final" decodes the picture, "save" saves it."""

    def sampler(model: str, pos: str, neg: str, latent: str, denoise: float, seed: int) -> dict[str, Any]:
        return {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed,
                "steps": steps,
                "cfg": 5.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": denoise,
                "model": [model, 0],
                "positive": [pos, 0],
                "negative": [neg, 0],
                "latent_image": [latent, 0],
            },
        }

    def refine(text: str, score: float) -> dict[str, Any]:
        return {
            "class_type": "CLIPTextEncodeSDXLRefiner",
            "inputs": {"ascore": score, "width": size, "height": size, "text": text, "clip": ["refiner", 1]},
        }

    return {
        "base": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": base}},
        "refiner": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": refiner}},
        "up_model": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": upscaler}},
        "pos": {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": "a portrait, soft light", "clip": ["base", 1]},
        },
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["base", 1]}},
        "empty": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": size, "height": size, "batch_size": 1},
        },
        "sample": sampler("base", "pos", "neg", "empty", 1.0, seed),
        "rpos": refine("a portrait, soft light", 6.0),
        "rneg": refine("blurry", 2.5),
        "refine": sampler("refiner", "rpos", "rneg", "sample", 0.4, seed + 1),
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["refine", 0], "vae": ["refiner", 2]}},
        "upscale": {
            "class_type": "ImageUpscaleWithModel",
            "inputs": {"upscale_model": ["up_model", 0], "image": ["decode", 0]},
        },
        "encode": {"class_type": "VAEEncode", "inputs": {"pixels": ["upscale", 0], "vae": ["base", 2]}},
        "hires": sampler("base", "pos", "neg", "encode", 0.3, seed + 2),
        "final": {"class_type": "VAEDecode", "inputs": {"samples": ["hires", 0], "vae": ["base", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"filename_prefix": "vram", "images": ["final", 0]}},
    }
