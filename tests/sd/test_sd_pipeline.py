"""End to end on tiny random checkpoints: portrait workflows, SDXL, LoRA, img2img, bad files."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from atelier.engine import events as E
from atelier.engine.models.handles import checkpoint_loader
from atelier.engine.node import JobContext
from atelier.engine.workflow import load_workflow

ROOT = Path(__file__).resolve().parents[2]


def portrait() -> dict:
    return json.loads((ROOT / "workflows" / "portrait.json").read_text())


def run(ex, wf, **overrides):
    base = {"checkpoint": "tiny15.safetensors", "steps": 3, "width": 64, "height": 64}
    base.update(overrides)
    events: list[E.Event] = []
    res = ex.run(copy.deepcopy(wf), overrides=base, on_event=events.append)
    return res, events


def pixels(ex, res, node: str = "save") -> np.ndarray:
    ref = res.outputs[node]["images"][0]
    return np.asarray(Image.open(ex.folders.output / ref["subfolder"] / ref["filename"]))


def test_portrait_runs_with_progress_and_previews(engine_env) -> None:
    res, events = run(engine_env, portrait())
    assert res.ok, res.failure
    img = pixels(engine_env, res)
    assert img.shape == (64, 64, 3)
    progress = [(e.value, e.max) for e in events if e.type == "progress" and e.node == "sampler"]
    assert progress == [(1, 3), (2, 3), (3, 3)]
    previews = [e for e in events if e.type == "preview"]
    assert previews and previews[-1].image[:2] == b"\xff\xd8"  # JPEG


def test_same_seed_same_pixels_other_seed_differs(engine_env) -> None:
    a, _ = run(engine_env, portrait(), seed=5)
    engine_env.cache.clear()
    b, _ = run(engine_env, portrait(), seed=5)
    c, _ = run(engine_env, portrait(), seed=6)
    assert (pixels(engine_env, a) == pixels(engine_env, b)).all()
    assert not (pixels(engine_env, a) == pixels(engine_env, c)).all()


def test_seed_change_reuses_loader_and_prompts(engine_env) -> None:
    run(engine_env, portrait(), seed=1)
    res, _ = run(engine_env, portrait(), seed=2)
    assert sorted(res.executed) == ["decode", "sampler", "save"]
    assert {"loader", "positive", "negative", "latent"} <= set(res.cached)


def test_png_reruns_its_workflow(engine_env, tmp_path: Path) -> None:
    res, _ = run(engine_env, portrait(), seed=11, prompt="a portrait (of an old man:1.2)")
    ref = res.outputs["save"]["images"][0]
    png = engine_env.folders.output / ref["filename"]
    wf = load_workflow(png)
    assert wf.parameters["seed"].default == 11 and "old man" in wf.parameters["prompt"].default
    engine_env.cache.clear()
    again = engine_env.run(wf)
    assert again.ok
    assert (pixels(engine_env, again) == pixels(engine_env, res)).all()


def test_hires_workflow_two_passes(engine_env) -> None:
    wf = json.loads((ROOT / "workflows" / "portrait_hires.json").read_text())
    res, events = run(engine_env, wf, hires_scale=1.5, hires_steps=2)
    assert res.ok, res.failure
    assert pixels(engine_env, res).shape == (96, 96, 3)
    assert {e.node for e in events if e.type == "progress"} == {"sampler", "refine"}


@pytest.fixture()
def sdxl_workflow() -> dict:
    return {
        "format": "atelier/workflow",
        "version": 1,
        "nodes": {
            "ckpt": {"type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tinyxl.safetensors"}},
            "pos": {
                "type": "CLIPTextEncodeSDXL",
                "inputs": {
                    "clip": {"node": "ckpt", "output": "CLIP"},
                    "width": 512,
                    "height": 512,
                    "crop_w": 0,
                    "crop_h": 0,
                    "target_width": 512,
                    "target_height": 512,
                    "text_g": "a portrait",
                    "text_l": "a portrait, film grain",
                },
            },
            "neg": {
                "type": "CLIPTextEncode",
                "inputs": {"clip": {"node": "ckpt", "output": "CLIP"}, "text": "blurry"},
            },
            "lat": {"type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
            "ks": {
                "type": "KSampler",
                "inputs": {
                    "model": {"node": "ckpt", "output": "MODEL"},
                    "seed": 3,
                    "steps": 2,
                    "cfg": 5.0,
                    "sampler_name": "euler_ancestral",
                    "scheduler": "normal",
                    "positive": {"node": "pos", "output": 0},
                    "negative": {"node": "neg", "output": 0},
                    "latent_image": {"node": "lat", "output": 0},
                    "denoise": 1.0,
                },
            },
            "dec": {
                "type": "VAEDecode",
                "inputs": {"samples": {"node": "ks", "output": 0}, "vae": {"node": "ckpt", "output": "VAE"}},
            },
            "save": {
                "type": "SaveImage",
                "inputs": {"images": {"node": "dec", "output": 0}, "filename_prefix": "xl"},
            },
        },
    }


def test_sdxl_path(engine_env, sdxl_workflow) -> None:
    res = engine_env.run(sdxl_workflow)
    assert res.ok, res.failure
    assert len(res.outputs["save"]["images"]) == 2


def _write_lora(path: Path, unet, te, rank: int = 2, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for name, mod in unet.named_modules():
        if name.endswith(("attn1.to_q", "attn2.to_v")) and isinstance(mod, torch.nn.Linear):
            key = "lora_unet_" + name.replace(".", "_")
            sd[key + ".lora_down.weight"] = torch.randn(rank, mod.in_features, generator=g)
            sd[key + ".lora_up.weight"] = torch.randn(mod.out_features, rank, generator=g)
            sd[key + ".alpha"] = torch.tensor(float(rank) / 2)
    for name, mod in te.named_modules():
        if name.endswith("self_attn.q_proj") and isinstance(mod, torch.nn.Linear):
            key = "lora_te_text_model_" + name.replace(".", "_")
            sd[key + ".lora_down.weight"] = torch.randn(rank, mod.in_features, generator=g)
            sd[key + ".lora_up.weight"] = torch.randn(mod.out_features, rank, generator=g)
    assert sd
    save_file(sd, str(path))


def test_lora_branches_are_both_right_in_either_order(engine_env, models_root: Path) -> None:
    from atelier.engine.models.checkpoint import load_checkpoint

    loaded = load_checkpoint(models_root / "checkpoints" / "tiny15.safetensors")
    lora = models_root / "loras" / "style.safetensors"
    if not lora.exists():
        _write_lora(lora, loaded.unet, loaded.text_encoders[0])
    wf = portrait()
    with_lora = copy.deepcopy(wf)
    with_lora["nodes"]["lora"] = {
        "type": "LoraLoader",
        "inputs": {
            "model": {"node": "loader", "output": "MODEL"},
            "clip": {"node": "loader", "output": "CLIP"},
            "lora_name": "style.safetensors",
            "strength_model": 0.8,
            "strength_clip": 1.0,
        },
    }
    with_lora["nodes"]["sampler"]["inputs"]["model"] = {"node": "lora", "output": "MODEL"}
    for n in ("positive", "negative"):
        with_lora["nodes"][n]["inputs"]["clip"] = {"node": "lora", "output": "CLIP"}
    unet = engine_env.models.load(models_root / "checkpoints" / "tiny15.safetensors", checkpoint_loader).unet
    before = {k: v.clone() for k, v in unet.state_dict().items()}

    base1, _ = run(engine_env, wf, seed=9)
    lora1, _ = run(engine_env, with_lora, seed=9)
    engine_env.cache.clear()
    lora2, _ = run(engine_env, with_lora, seed=9)
    base2, _ = run(engine_env, wf, seed=9)
    assert base1.ok and lora1.ok, (base1.failure, lora1.failure)
    assert (pixels(engine_env, base1) == pixels(engine_env, base2)).all()
    assert (pixels(engine_env, lora1) == pixels(engine_env, lora2)).all()
    assert not (pixels(engine_env, base1) == pixels(engine_env, lora1)).all()
    after = unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_img2img_at_denoise_zero_returns_its_input(engine_env) -> None:
    img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(engine_env.folders.input / "face.png")
    wf = {
        "format": "atelier/workflow",
        "version": 1,
        "nodes": {
            "ckpt": {"type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny15.safetensors"}},
            "img": {"type": "LoadImage", "inputs": {"image": "face.png"}},
            "enc": {
                "type": "VAEEncode",
                "inputs": {
                    "pixels": {"node": "img", "output": "IMAGE"},
                    "vae": {"node": "ckpt", "output": "VAE"},
                },
            },
            "pos": {
                "type": "CLIPTextEncode",
                "inputs": {"clip": {"node": "ckpt", "output": "CLIP"}, "text": "x"},
            },
            "ks": {
                "type": "KSampler",
                "inputs": {
                    "model": {"node": "ckpt", "output": "MODEL"},
                    "seed": 1,
                    "steps": 4,
                    "cfg": 7.0,
                    "sampler_name": "euler",
                    "scheduler": "normal",
                    "positive": {"node": "pos", "output": 0},
                    "negative": {"node": "pos", "output": 0},
                    "latent_image": {"node": "enc", "output": 0},
                    "denoise": 0.0,
                },
            },
            "out": {"type": "PreviewImage", "inputs": {"images": {"node": "dec", "output": 0}}},
            "dec": {
                "type": "VAEDecode",
                "inputs": {"samples": {"node": "ks", "output": 0}, "vae": {"node": "ckpt", "output": "VAE"}},
            },
            "dec0": {
                "type": "VAEDecode",
                "inputs": {"samples": {"node": "enc", "output": 0}, "vae": {"node": "ckpt", "output": "VAE"}},
            },
            "out0": {"type": "PreviewImage", "inputs": {"images": {"node": "dec0", "output": 0}}},
        },
    }
    res = engine_env.run(wf)
    assert res.ok, res.failure
    a = np.asarray(Image.open(engine_env.folders.temp / res.outputs["out"]["images"][0]["filename"]))
    b = np.asarray(Image.open(engine_env.folders.temp / res.outputs["out0"]["images"][0]["filename"]))
    assert (a == b).all()


@pytest.mark.parametrize("content", [b"", b"\x00" * 100, b"not a checkpoint at all" * 50])
def test_bad_checkpoint_fails_the_job_naming_the_file_and_engine_keeps_serving(
    engine_env, models_root: Path, content: bytes
) -> None:
    bad = models_root / "checkpoints" / "broken.safetensors"
    bad.write_bytes(content)
    try:
        res, events = run(engine_env, portrait(), checkpoint="broken.safetensors")
        assert res.status == "failed" and res.failure.node == "loader"
        assert "broken.safetensors" in res.failure.message
        assert "Traceback" not in res.failure.message
        ok, _ = run(engine_env, portrait())
        assert ok.ok
    finally:
        bad.unlink()


def test_comfyui_api_prompt_runs_unchanged(engine_env) -> None:
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny15.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "portrait photo", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "bad", "clip": ["4", 1]}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 8,
                "steps": 2,
                "cfg": 8,
                "sampler_name": "dpmpp_2m",
                "scheduler": "karras",
                "denoise": 1,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }
    res = engine_env.run(prompt)
    assert res.ok, res.failure
    assert res.outputs["9"]["images"][0]["filename"].startswith("ComfyUI_")


def test_interrupt_stops_the_sampler_between_steps(engine_env, models_root: Path) -> None:
    seen: list[str] = []
    unet = engine_env.models.load(models_root / "checkpoints" / "tiny15.safetensors", checkpoint_loader).unet
    before = {k: v.clone() for k, v in unet.state_dict().items()}

    def on_event(e: E.Event) -> None:
        seen.append(e.type)
        if e.type == "progress" and e.node == "sampler" and e.value == 2:
            engine_env.interrupt()

    res = engine_env.run(
        portrait(),
        overrides={"checkpoint": "tiny15.safetensors", "steps": 10, "width": 64, "height": 64},
        on_event=on_event,
    )
    assert res.status == "interrupted"
    assert seen.count("progress") == 2 and seen[-1] == "job_interrupted"
    assert "decode" not in res.executed
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())
    ok, _ = run(engine_env, portrait())
    assert ok.ok


def test_png_records_the_checkpoint_hash_and_node_versions(engine_env, models_root: Path) -> None:
    from atelier.engine.pnginfo import read_metadata

    res, _ = run(engine_env, portrait(), seed=21)
    ref = res.outputs["save"]["images"][0]
    meta = read_metadata(engine_env.folders.output / ref["filename"])
    files = meta["files"]
    assert files["loader"]["type"] == "CheckpointLoaderSimple"
    assert files["loader"]["inputs"]["ckpt_name"] == "tiny15.safetensors"
    # the signature uses the file's identity; the PNG records its content hash, taken once per file version
    path = models_root / "checkpoints" / "tiny15.safetensors"
    assert files["loader"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert files["loader"]["fingerprint"].endswith(f":{path.stat().st_size}:{path.stat().st_mtime_ns}")
    assert engine_env.folders.hashes.cached(path) == files["loader"]["sha256"]
    from atelier.engine import hashing

    read: list[Path] = []
    real = hashing.sha256_of_file
    hashing.sha256_of_file = lambda p: read.append(p) or real(p)  # type: ignore[assignment]
    try:
        run(engine_env, portrait(), seed=22)
    finally:
        hashing.sha256_of_file = real  # type: ignore[assignment]
    assert read == []  # the second image records the hash without reading the file again
    assert meta["node_versions"]["KSampler"] == "1.0.0"
    assert meta["parameters"]["seed"] == 21


def test_tiled_vae_matches_whole_when_one_tile_covers_it_and_keeps_shapes(
    engine_env, models_root: Path
) -> None:
    from atelier.engine.models.handles import handles_from_checkpoint

    loaded = engine_env.models.load(models_root / "checkpoints" / "tiny15.safetensors", checkpoint_loader)
    _, _, vae = handles_from_checkpoint(loaded)
    latent = torch.randn(1, 4, 12, 16, generator=torch.Generator().manual_seed(0))
    whole = vae.decode(latent)
    assert torch.allclose(vae.decode_tiled(latent, tile=16, overlap=4), whole, atol=1e-5)
    tiled = vae.decode_tiled(latent, tile=8, overlap=2)
    assert tiled.shape == whole.shape == (1, 96, 128, 3) and torch.isfinite(tiled).all()
    image = whole
    enc_whole = vae.encode(image)
    assert torch.allclose(vae.encode_tiled(image, tile=128, overlap=16), enc_whole, atol=1e-5)
    assert vae.encode_tiled(image, tile=64, overlap=16).shape == enc_whole.shape == (1, 4, 12, 16)


def test_load_image_gives_mask_from_alpha(engine_env) -> None:
    from atelier.nodes.image import LoadImage

    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 255
    rgba[:, :3, 3] = 0  # left half transparent
    Image.fromarray(rgba, "RGBA").save(engine_env.folders.input / "alpha.png")
    ctx = engine_env.make_context(JobContext("j"), "n", "LoadImage")
    image, mask = LoadImage().run(ctx, image="alpha.png")
    assert image.shape == (1, 4, 6, 3) and torch.allclose(image[..., 0], torch.ones(1, 4, 6))
    assert mask.shape == (1, 4, 6)
    assert torch.equal(mask[0, :, :3], torch.ones(4, 3)) and torch.equal(mask[0, :, 3:], torch.zeros(4, 3))


def test_cached_handles_count_their_weights_so_unused_models_can_be_evicted(
    engine_env, models_root: Path
) -> None:
    from atelier.engine.cache import OutputCache, measure
    from atelier.engine.models.handles import handles_from_checkpoint

    loaded = engine_env.models.load(models_root / "checkpoints" / "tiny15.safetensors", checkpoint_loader)
    model, clip, vae = handles_from_checkpoint(loaded)
    unet_bytes = sum(p.numel() * p.element_size() for p in loaded.unet.parameters())
    total, _ = measure((model, clip, vae))
    assert total >= unet_bytes > 0
    cache = OutputCache(max_bytes=total + 1000)
    cache.put("a", (model, clip, vae))
    cache.put("b", (model, clip, vae))
    assert len(cache) == 1 and cache.stats().evictions == 1


def test_sd2_v_prediction_checkpoint_end_to_end(engine_env, models_root: Path) -> None:
    from atelier.engine.models.tiny import write_tiny_checkpoint

    path = models_root / "checkpoints" / "tiny2v.safetensors"
    if not path.exists():
        write_tiny_checkpoint("sd2", path, seed=0, v_prediction=True)
    loaded = engine_env.models.load(path, checkpoint_loader)
    assert loaded.info.family == "sd2" and loaded.info.prediction == "v"
    from atelier.engine.models.handles import handles_from_checkpoint

    assert handles_from_checkpoint(loaded)[0].sampling.prediction == "v_prediction"
    res, events = run(engine_env, portrait(), checkpoint="tiny2v.safetensors", seed=4)
    assert res.ok, res.failure
    img = pixels(engine_env, res)
    assert img.shape == (64, 64, 3) and img.std() > 0
