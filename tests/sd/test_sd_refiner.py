"""SDXL refiner checkpoints: detected from shapes (OpenCLIP-G alone, 5 size embeddings), loaded by
CheckpointLoaderSimple, prompts encoded with CLIPTextEncodeSDXLRefiner, sampled, saved and reloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from atelier.engine.model_loader import ModelLoader
from atelier.engine.node import JobContext
from atelier.engine.runtime import Engine
from atelier.engine.sampling.conditioning import CondEntry, SizeCond
from tests.engines import make_engine


@pytest.fixture(scope="module")
def refiner_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from atelier.engine.models.tiny import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("refiner_models")
    write_tiny_checkpoint("sdxl_refiner", root / "checkpoints" / "refiner.safetensors", seed=3)
    write_tiny_checkpoint("sdxl", root / "checkpoints" / "base.safetensors", seed=3)
    return root


@pytest.fixture()
def engine(refiner_root: Path, tmp_path: Path, shared_models: ModelLoader) -> Engine:
    return make_engine(refiner_root, tmp_path, shared_models)


def test_refiner_is_detected_from_its_shapes_and_loads_the_weights_written(refiner_root: Path) -> None:
    from atelier.engine.models import detect_checkpoint, load_checkpoint
    from atelier.engine.models.tiny import build_tiny_models

    path = refiner_root / "checkpoints" / "refiner.safetensors"
    info = detect_checkpoint(path)
    assert info.family == "sdxl_refiner" and info.components == ["unet", "vae", "text_encoder_2"]
    assert [te.key_prefix for te in info.text_encoders] == ["conditioner.embedders.0.model."]
    assert info.text_encoders[0].model_class == "CLIPTextModelWithProjection"
    assert info.unet_config["projection_class_embeddings_input_dim"] == 72  # pooled 32 + 5 x 8
    assert info.unet_config["addition_time_embed_dim"] == 8 and info.vae_scaling_factor == 0.13025
    loaded = load_checkpoint(path)
    written = build_tiny_models("sdxl_refiner", seed=3)
    for got, want in ((loaded.unet, written.unet), (loaded.text_encoders[0], written.text_encoders[0])):
        sd = got.state_dict()
        assert all(torch.equal(sd[k], v) for k, v in want.state_dict().items())


def _ctx(engine: Engine):
    return engine.executor.make_context(JobContext("j"), "n", "Test")


def test_refiner_prompt_is_openclip_g_penultimate_layer_with_its_pooled_projection(engine: Engine) -> None:
    from atelier.nodes.loaders import CheckpointLoaderSimple
    from atelier.nodes.sdxl_refiner import CLIPTextEncodeSDXLRefiner

    model, clip, _ = CheckpointLoaderSimple().run(_ctx(engine), ckpt_name="refiner.safetensors")
    assert model.family == "sdxl_refiner" and model.needs_pooled and len(clip.encoders) == 1
    (entry,) = CLIPTextEncodeSDXLRefiner().run(
        _ctx(engine), ascore=7.5, width=896, height=1152, text="a portrait", clip=clip
    )
    encoder = clip.encoders[0]
    ids = encoder.tokenizer("a portrait", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        out = encoder.model(ids, output_hidden_states=True)
    torch.testing.assert_close(entry.embedding, out.hidden_states[-2], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(entry.pooled, out.text_embeds, rtol=1e-4, atol=1e-5)
    assert entry.size == SizeCond(896, 1152, aesthetic_score=7.5)
    # the refiner's size conditioning: height, width, crop, aesthetic score (ComfyUI's defaults without one)
    assert model.size_ids(entry, 8, 8, negative=False) == [1152.0, 896.0, 0.0, 0.0, 7.5]
    plain = CondEntry(entry.embedding, entry.pooled)
    assert model.size_ids(plain, 8, 8, negative=False) == [768.0, 768.0, 0.0, 0.0, 6.0]
    assert model.size_ids(plain, 8, 8, negative=True) == [768.0, 768.0, 0.0, 0.0, 2.5]


def refiner_prompt(ascore: float, ckpt: str = "refiner.safetensors") -> dict:
    def encode(text: str, score: float) -> dict:
        return {
            "class_type": "CLIPTextEncodeSDXLRefiner",
            "inputs": {"ascore": score, "width": 64, "height": 64, "text": text, "clip": ["4", 1]},
        }

    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": encode("a portrait, sharp", ascore),
        "7": encode("blurry", 2.5),
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 11,
                "steps": 2,
                "cfg": 5.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "refined", "images": ["8", 0]}},
    }


def _pixels(engine: Engine, res) -> np.ndarray:
    assert res.ok, res.failure
    ref = res.outputs["9"]["images"][0]
    path = engine.executor.folders.output / ref["subfolder"] / ref["filename"]
    return np.asarray(Image.open(path)).astype(int)


def test_refiner_samples_and_follows_the_aesthetic_score(engine: Engine) -> None:
    ex = engine.executor
    six = _pixels(engine, ex.run(refiner_prompt(6.0)))
    again = _pixels(engine, ex.run(refiner_prompt(6.0)))
    nine = _pixels(engine, ex.run(refiner_prompt(9.0)))
    assert (six == again).all() and (six != nine).any()
    # SDXL-only nodes say what is wrong with a refiner CLIP
    wf = refiner_prompt(6.0)
    wf["6"] = {
        "class_type": "CLIPTextEncodeSDXL",
        "inputs": {
            "clip": ["4", 1],
            "width": 64,
            "height": 64,
            "crop_w": 0,
            "crop_h": 0,
            "target_width": 64,
            "target_height": 64,
            "text_g": "a",
            "text_l": "a",
        },
    }
    bad = ex.run(wf)
    assert not bad.ok and "two text encoders" in bad.failure.message


def test_refiner_checkpoint_save_round_trip(engine: Engine, refiner_root: Path) -> None:
    ex = engine.executor
    wf = refiner_prompt(6.0)
    wf["S"] = {
        "class_type": "CheckpointSave",
        "inputs": {
            "model": ["4", 0],
            "clip": ["4", 1],
            "vae": ["4", 2],
            "filename_prefix": "checkpoints/ref",
        },
    }
    res = ex.run(wf)
    first = _pixels(engine, res)
    saved = ex.folders.output / "checkpoints" / res.outputs["S"]["models"][0]["filename"]
    with safe_open(str(saved), "pt") as f:
        assert f.metadata()["modelspec.architecture"] == "stable-diffusion-xl-v1-refiner"
        assert any(k.startswith("conditioner.embedders.0.model.") for k in f.keys())
        assert not any(k.startswith("conditioner.embedders.1.") for k in f.keys())
    (refiner_root / "checkpoints" / "ref_copy.safetensors").write_bytes(saved.read_bytes())
    second = _pixels(engine, ex.run(refiner_prompt(6.0, "ref_copy.safetensors")))
    assert np.abs(second - first).max() <= 1
