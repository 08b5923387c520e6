"""Bypassed Stable Diffusion nodes pass their inputs through (ComfyUI's Ctrl+B), muted ones do not run."""

from __future__ import annotations

import copy
from pathlib import Path

from tests.sd.test_sd_pipeline import _write_lora, pixels, portrait, run


def _with_lora_and_upscale(models_root: Path) -> dict:
    from atelier.engine.models.checkpoint import load_checkpoint

    lora = models_root / "loras" / "style.safetensors"
    if not lora.exists():
        loaded = load_checkpoint(models_root / "checkpoints" / "tiny15.safetensors")
        _write_lora(lora, loaded.unet, loaded.text_encoders[0])
    wf = portrait()
    nodes = wf["nodes"]
    nodes["lora"] = {
        "type": "LoraLoader",
        "inputs": {
            "model": {"node": "loader", "output": "MODEL"},
            "clip": {"node": "loader", "output": "CLIP"},
            "lora_name": "style.safetensors",
            "strength_model": 0.8,
            "strength_clip": 1.0,
        },
    }
    nodes["sampler"]["inputs"]["model"] = {"node": "lora", "output": "MODEL"}
    for n in ("positive", "negative"):
        nodes[n]["inputs"]["clip"] = {"node": "lora", "output": "CLIP"}
    nodes["upscale"] = {
        "type": "ImageScale",
        "inputs": {
            "image": {"node": "decode", "output": "IMAGE"},
            "upscale_method": "bilinear",
            "width": 96,
            "height": 80,
            "crop": "disabled",
        },
    }
    nodes["save"]["inputs"]["images"] = {"node": "upscale", "output": "IMAGE"}
    return wf


def test_bypassed_lora_and_upscale_pass_their_inputs_through(engine_env, models_root: Path) -> None:
    wf = _with_lora_and_upscale(models_root)
    full, _ = run(engine_env, wf, seed=3)
    bypassed = copy.deepcopy(wf)
    bypassed["nodes"]["lora"]["mode"] = "bypass"
    bypassed["nodes"]["upscale"]["mode"] = "bypass"
    through, _ = run(engine_env, bypassed, seed=3)
    base, _ = run(engine_env, portrait(), seed=3)
    assert full.ok and through.ok and base.ok, (full.failure, through.failure, base.errors)
    assert pixels(engine_env, full).shape == (80, 96, 3)
    # the bypassed graph is the plain portrait: same pixels, and its sampler came from the cache
    assert (pixels(engine_env, through) == pixels(engine_env, base)).all()
    assert "lora" not in through.executed and "upscale" not in through.executed
    assert "sampler" in base.cached
    # the LoRA is live: without the bypass the picture differs
    only_upscale = copy.deepcopy(wf)
    only_upscale["nodes"]["upscale"]["mode"] = "bypass"
    with_lora, _ = run(engine_env, only_upscale, seed=3)
    assert not (pixels(engine_env, with_lora) == pixels(engine_env, base)).all()
