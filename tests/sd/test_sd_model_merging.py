"""Model merging and saving on tiny checkpoints: merged weights against the files' weights computed by
hand, live outputs that follow the ratio, and save -> load round trips through the loaders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from atelier.engine.model_loader import ModelLoader
from atelier.engine.models.layout import unet_key_map
from atelier.engine.models.names import SD1_CLIP_PREFIX, UNET_PREFIX
from atelier.engine.node import JobContext
from atelier.engine.runtime import Engine
from tests.engines import make_engine


@pytest.fixture(scope="module")
def merge_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from atelier.engine.models.tiny import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("merge_models")
    write_tiny_checkpoint("sd15", root / "checkpoints" / "a.safetensors", seed=0)
    write_tiny_checkpoint("sd15", root / "checkpoints" / "b.safetensors", seed=1)
    write_tiny_checkpoint("sdxl", root / "checkpoints" / "xl.safetensors", seed=0)
    return root


@pytest.fixture()
def engine(merge_root: Path, tmp_path: Path, shared_models: ModelLoader) -> Engine:
    return make_engine(merge_root, tmp_path, shared_models)


def _ctx(engine: Engine, node_type: str = "Test"):
    return engine.executor.make_context(JobContext("j"), "n", node_type)


def _load(engine: Engine, name: str):
    from atelier.nodes.loaders import CheckpointLoaderSimple

    return CheckpointLoaderSimple().run(_ctx(engine), ckpt_name=name)


def _file_unet(root: Path, name: str, unet) -> dict[str, torch.Tensor]:
    """The UNet weights of a checkpoint file by diffusers parameter name (read from the file itself)."""
    raw = load_file(str(root / "checkpoints" / name))
    names = unet_key_map([n for n, _ in unet.named_parameters()], unet.config)
    return {n: raw[UNET_PREFIX + o].float() for n, o in names.items()}


def _params(module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone().float() for n, p in module.named_parameters()}


def prompt(model: list, clip: list, vae: list, extra: dict | None = None, seed: int = 3) -> dict:
    wf = {
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "portrait", "clip": clip}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": clip}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed,
                "steps": 2,
                "cfg": 5.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": model,
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": vae}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "t", "images": ["8", 0]}},
    }
    wf.update(extra or {})
    return wf


def loaders(*names: str) -> dict:
    return {
        f"L{i}": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": n}}
        for i, n in enumerate(names)
    }


def pixels(engine: Engine, res, node: str = "9") -> np.ndarray:
    assert res.ok, res.failure
    ref = res.outputs[node]["images"][0]
    return np.asarray(Image.open(engine.executor.folders.output / ref["subfolder"] / ref["filename"])).astype(
        int
    )


def test_merge_simple_is_the_files_weights_blended_and_leaves_the_loaded_models_unchanged(
    engine: Engine, merge_root: Path
) -> None:
    from atelier.nodes.model_merging import ModelMergeSimple

    m1, _, _ = _load(engine, "a.safetensors")
    m2, _, _ = _load(engine, "b.safetensors")
    a = _file_unet(merge_root, "a.safetensors", m1.unet)
    b = _file_unet(merge_root, "b.safetensors", m1.unet)
    before1, before2 = _params(m1.unet), _params(m2.unet)
    merged = ModelMergeSimple().run(_ctx(engine), model1=m1, model2=m2, ratio=0.3)
    assert merged.unet is m1.unet and not m1.patches
    with merged.session():
        now = _params(merged.unet)
    for name, value in now.items():
        torch.testing.assert_close(value, 0.3 * a[name] + 0.7 * b[name], rtol=1e-5, atol=1e-6)
    assert all(torch.equal(before1[n], v) for n, v in _params(m1.unet).items())
    assert all(torch.equal(before2[n], v) for n, v in _params(m2.unet).items())
    assert all(torch.equal(before1[n], a[n]) for n in a)


def test_subtract_add_and_blocks_follow_comfyui_rules(engine: Engine, merge_root: Path) -> None:
    from atelier.nodes.model_merging import ModelMergeAdd, ModelMergeBlocks, ModelMergeSubtract

    m1, _, _ = _load(engine, "a.safetensors")
    m2, _, _ = _load(engine, "b.safetensors")
    a = _file_unet(merge_root, "a.safetensors", m1.unet)
    b = _file_unet(merge_root, "b.safetensors", m1.unet)
    sub = ModelMergeSubtract().run(_ctx(engine), model1=m1, model2=m2, multiplier=1.5)
    with sub.session():
        for name, value in _params(sub.unet).items():
            torch.testing.assert_close(value, 1.5 * (a[name] - b[name]), rtol=1e-5, atol=1e-6)
    add = ModelMergeAdd().run(_ctx(engine), model1=m1, model2=m2)
    with add.session():
        for name, value in _params(add.unet).items():
            torch.testing.assert_close(value, a[name] + b[name], rtol=1e-5, atol=1e-6)
    blocks = ModelMergeBlocks().run(_ctx(engine), model1=m1, model2=m2, input=0.2, middle=0.5, out=0.9)
    original = unet_key_map(list(a), m1.unet.config)
    seen = set()
    with blocks.session():
        for name, value in _params(blocks.unet).items():
            o = original[name]
            r = 0.5 if o.startswith("middle") else 0.9 if o.startswith("out") else 0.2
            seen.add((o.split(".")[0], r))
            torch.testing.assert_close(value, r * a[name] + (1 - r) * b[name], rtol=1e-5, atol=1e-6)
    # every part was met: input blocks, middle, output blocks, the final "out" layer, and time_embed (input's)
    assert {("input_blocks", 0.2), ("middle_block", 0.5), ("output_blocks", 0.9), ("out", 0.9)} <= seen
    assert ("time_embed", 0.2) in seen


def test_merge_takes_the_second_models_lora_and_refuses_unrelated_models(engine: Engine) -> None:
    from atelier.engine.models.patches import WeightPatch
    from atelier.nodes.model_merging import ModelMergeSimple

    m1, _, _ = _load(engine, "a.safetensors")
    m2, _, _ = _load(engine, "b.safetensors")
    name, weight = next((n, p) for n, p in m2.unet.named_parameters() if n.endswith("attn1.to_q.weight"))
    g = torch.Generator().manual_seed(0)
    lora = WeightPatch(
        torch.randn(weight.shape[0], 2, generator=g), torch.randn(2, weight.shape[1], generator=g)
    )
    m2_lora = m2.with_patches({name: (lora,)})
    merged = ModelMergeSimple().run(_ctx(engine), model1=m1, model2=m2_lora, ratio=0.0)
    with merged.session():
        got = dict(merged.unet.named_parameters())[name].detach().clone()
    torch.testing.assert_close(got, weight.detach() + lora.delta(weight.shape), rtol=1e-5, atol=1e-6)
    xl, _, _ = _load(engine, "xl.safetensors")
    with pytest.raises(ValueError, match="model1 is a sd15 model, model2 a sdxl one"):
        ModelMergeSimple().run(_ctx(engine), model1=m1, model2=xl, ratio=0.5)


def test_merged_model_output_follows_the_ratio(engine: Engine) -> None:
    ex = engine.executor
    base_a = pixels(engine, ex.run(prompt(["L0", 0], ["L0", 1], ["L0", 2], loaders("a.safetensors"))))
    base_b = pixels(engine, ex.run(prompt(["L0", 0], ["L0", 1], ["L0", 2], loaders("b.safetensors"))))
    assert (base_a != base_b).any()

    def merged(ratio: float) -> np.ndarray:
        extra = loaders("a.safetensors", "b.safetensors")
        extra["M"] = {
            "class_type": "ModelMergeSimple",
            "inputs": {"model1": ["L0", 0], "model2": ["L1", 0], "ratio": ratio},
        }
        return pixels(engine, ex.run(prompt(["M", 0], ["L0", 1], ["L0", 2], extra)))

    assert (merged(1.0) == base_a).all()
    half = merged(0.5)
    assert (half != base_a).any()
    # model b with model a's text encoder and VAE, sampled through the merge at ratio 0
    only_b = merged(0.0)
    b_unet_a_rest = pixels(
        engine,
        ex.run(prompt(["L1", 0], ["L0", 1], ["L0", 2], loaders("a.safetensors", "b.safetensors"))),
    )
    assert (only_b == b_unet_a_rest).all() and (only_b != half).any()
    assert (merged(0.5) == half).all()  # a rerun (cached) gives the same picture


def test_clip_merge_blends_text_encoders(engine: Engine, merge_root: Path) -> None:
    from atelier.nodes.model_merging import CLIPMergeSimple

    _, c1, _ = _load(engine, "a.safetensors")
    _, c2, _ = _load(engine, "b.safetensors")
    raw_a = load_file(str(merge_root / "checkpoints" / "a.safetensors"))
    raw_b = load_file(str(merge_root / "checkpoints" / "b.safetensors"))
    merged = CLIPMergeSimple().run(_ctx(engine), clip1=c1, clip2=c2, ratio=0.25)
    te = merged.encoders[0].model
    with merged.session():
        now = _params(te)
    key = "text_model.encoder.layers.0.self_attn.q_proj.weight"
    name = next(n for n in now if key.endswith(n))
    expected = 0.25 * raw_a[SD1_CLIP_PREFIX + key] + 0.75 * raw_b[SD1_CLIP_PREFIX + key]
    torch.testing.assert_close(now[name], expected, rtol=1e-5, atol=1e-6)
    e1, _ = c1.encode("a portrait")
    e2, _ = c2.encode("a portrait")
    e0, _ = CLIPMergeSimple().run(_ctx(engine), clip1=c1, clip2=c2, ratio=0.0).encode("a portrait")
    em, _ = merged.encode("a portrait")
    torch.testing.assert_close(e0, e2, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(em, e1) and not torch.allclose(em, e2)
    torch.testing.assert_close(c1.encode("a portrait")[0], e1)  # clip1 itself is unchanged


def test_checkpoint_save_round_trips_through_the_loader(engine: Engine, merge_root: Path) -> None:
    ex = engine.executor
    extra = loaders("a.safetensors", "b.safetensors")
    extra["M"] = {
        "class_type": "ModelMergeSimple",
        "inputs": {"model1": ["L0", 0], "model2": ["L1", 0], "ratio": 0.4},
    }
    extra["C"] = {
        "class_type": "CLIPMergeSimple",
        "inputs": {"clip1": ["L0", 1], "clip2": ["L1", 1], "ratio": 0.6},
    }
    extra["S"] = {
        "class_type": "CheckpointSave",
        "inputs": {
            "model": ["M", 0],
            "clip": ["C", 0],
            "vae": ["L1", 2],
            "filename_prefix": "checkpoints/mix",
        },
    }
    res = ex.run(prompt(["M", 0], ["C", 0], ["L1", 2], extra))
    merged = pixels(engine, res)
    saved = res.outputs["S"]["models"][0]
    assert saved["subfolder"] == "checkpoints" and saved["filename"] == "mix_00001_.safetensors"
    path = engine.executor.folders.output / "checkpoints" / saved["filename"]
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        assert not any(k.startswith("model.diffusion_model.model.") for k in f.keys())
    assert meta["modelspec.predict_key"] == "epsilon"
    assert json.loads(meta["atelier"])["files"]  # what it was made from, with hashes
    assert "prompt" in meta
    # the saved file is a checkpoint like any other: load it and sample the same picture
    (merge_root / "checkpoints" / "mix.safetensors").write_bytes(path.read_bytes())
    again = pixels(engine, ex.run(prompt(["L0", 0], ["L0", 1], ["L0", 2], loaders("mix.safetensors"))))
    assert np.abs(again - merged).max() <= 1


def test_vae_save_round_trips_through_vae_loader(engine: Engine, merge_root: Path) -> None:
    from atelier.nodes.loaders import VAELoader
    from atelier.nodes.model_merging import VAESave

    _, _, vae = _load(engine, "b.safetensors")
    out = VAESave().run(_ctx(engine), vae=vae, filename_prefix="vae/ComfyUI_vae")
    ref = out.ui["models"][0]
    assert ref == {"filename": "ComfyUI_vae_00001_.safetensors", "subfolder": "vae", "type": "output"}
    path = engine.executor.folders.output / "vae" / ref["filename"]
    again = VAESave().run(_ctx(engine), vae=vae, filename_prefix="vae/ComfyUI_vae")
    assert again.ui["models"][0]["filename"] == "ComfyUI_vae_00002_.safetensors"  # never overwritten
    vae_dir = merge_root / "vae"
    vae_dir.mkdir(exist_ok=True)
    (vae_dir / "saved.safetensors").write_bytes(path.read_bytes())
    loaded = VAELoader().run(_ctx(engine), vae_name="saved.safetensors")
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded.decode(latent), vae.decode(latent))
