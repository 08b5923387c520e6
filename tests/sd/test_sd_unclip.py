"""Stable unCLIP on a tiny random checkpoint in the real single-file layout (``tiny_unclip.py``).

The file is detected from its keys and loaded by the checkpoint path; its CLIP vision tower (open_clip layout)
is checked against a forward written out with matmuls from the file's own tensors, the image-embedding noise
against diffusers' Stable unCLIP noising (DDPMScheduler + StableUnCLIPImageNormalizer), and the UNet input
against what the sampler gives its class embedding. Sampling through the shipped workflow shows the image
and the strength steering the picture, strength 0 as no image bit for bit, noise augmentation seeded by the
job's seed; plain checkpoints are refused with the node and the file named."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.engine.model_loader import ModelLoader
from atelier.engine.models.detect import detect_checkpoint
from atelier.engine.models.tiny_unclip import TINY_UNCLIP_EMBED_DIM, write_tiny_unclip_checkpoint
from atelier.engine.models.unclip import UnclipImage, cosine_noise_schedule, unclip_adm
from atelier.engine.node import JobContext
from tests.engines import make_engine

ROOT = Path(__file__).resolve().parents[2]
UNCLIP = "tiny-unclip.safetensors"


@pytest.fixture(scope="module")
def unclip_root(models_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from atelier.engine.models.tiny_ipadapter import write_tiny_clip_vision

    root = tmp_path_factory.mktemp("unclip")
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "tiny15.safetensors").symlink_to(
        models_root / "checkpoints" / "tiny15.safetensors"
    )
    write_tiny_unclip_checkpoint(root / "checkpoints" / UNCLIP, seed=3)
    write_tiny_clip_vision(root / "clip_vision" / "narrow-vit.safetensors", seed=2, projection_dim=40)
    return root


@pytest.fixture()
def engine(unclip_root: Path, tmp_path: Path, shared_models: ModelLoader) -> Any:
    eng = make_engine(unclip_root, tmp_path, shared_models)
    for name, seed in (("photo.png", 5), ("other.png", 6)):
        rng = np.random.default_rng(seed)
        Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(eng.folders.input / name)
    return eng


def _node(engine: Any, cls: type, nid: str = "n", **inputs: Any) -> Any:
    ctx = engine.executor.make_context(JobContext("j"), nid, getattr(cls, "type_name", None) or cls.__name__)
    return cls().run(ctx, **inputs)


def _image(seed: int) -> torch.Tensor:
    return torch.rand(1, 80, 96, 3, generator=torch.Generator().manual_seed(seed))


# -- the file ---------------------------------------------------------------------------------------------


def _open_clip_reference(sd: dict[str, torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
    """The open_clip visual tower written out (one 64-wide head, GELU), from the file's tensors."""

    def ln(x: torch.Tensor, p: str) -> torch.Tensor:
        return torch.nn.functional.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"])

    w = sd["conv1.weight"]
    x = torch.nn.functional.conv2d(pixels, w, stride=w.shape[-1]).flatten(2).transpose(1, 2)
    x = torch.cat([sd["class_embedding"].expand(x.shape[0], 1, -1), x], dim=1) + sd["positional_embedding"]
    x = ln(x, "ln_pre")
    n = 0
    while f"transformer.resblocks.{n}.ln_1.weight" in sd:
        p = f"transformer.resblocks.{n}."
        q, k, v = (ln(x, p + "ln_1") @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"]).chunk(
            3, -1
        )
        att = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1) @ v
        x = x + att @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
        h = torch.nn.functional.gelu(
            ln(x, p + "ln_2") @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"]
        )
        x = x + h @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
        n += 1
    return ln(x[:, 0], "ln_post") @ sd["proj"]


def test_detected_from_its_keys_and_its_clip_vision_matches_the_open_clip_tower(
    engine: Any, unclip_root: Path
) -> None:
    from safetensors.torch import load_file

    from atelier.engine.models.clip_vision import preprocess
    from atelier.nodes.clip_vision import CLIPVisionEncode
    from atelier.nodes.unclip import UnclipCheckpointLoader

    path = unclip_root / "checkpoints" / UNCLIP
    info = detect_checkpoint(path)
    assert info.family == "sd2" and info.unclip is not None
    assert (info.unclip.embed_dim, info.unclip.noise_levels) == (TINY_UNCLIP_EMBED_DIM, 1000)
    assert info.unclip.embedder_prefix == "embedder.model.visual." and not info.unclip.has_stats
    assert info.unet_config["class_embed_type"] == "projection"
    assert info.unet_config["projection_class_embeddings_input_dim"] == 2 * TINY_UNCLIP_EMBED_DIM
    assert detect_checkpoint(unclip_root / "checkpoints" / "tiny15.safetensors").unclip is None

    model, _clip, _vae, vision = _node(engine, UnclipCheckpointLoader, ckpt_name=UNCLIP)
    sd = load_file(str(path))
    assert torch.equal(
        model.unet.class_embedding.linear_1.weight, sd["model.diffusion_model.label_emb.0.0.weight"]
    )
    assert torch.equal(
        model.unet.class_embedding.linear_2.bias, sd["model.diffusion_model.label_emb.0.2.bias"]
    )
    image = _image(0)
    out = _node(engine, CLIPVisionEncode, clip_vision=vision, image=image, crop="center")
    visual = {
        k.removeprefix("embedder.model.visual."): v for k, v in sd.items() if "embedder.model.visual." in k
    }
    expected = _open_clip_reference(visual, preprocess(image, vision.image_size))
    assert out.image_embeds.shape == (1, TINY_UNCLIP_EMBED_DIM)
    torch.testing.assert_close(out.image_embeds, expected, rtol=1e-4, atol=1e-5)
    assert (
        out.image_embeds
        - _node(engine, CLIPVisionEncode, clip_vision=vision, image=_image(1), crop="center").image_embeds
    ).abs().max() > 1e-3


# -- the image-embedding input ----------------------------------------------------------------------------


def _diffusers_noised(embeds: torch.Tensor, level: int, noise: torch.Tensor) -> torch.Tensor:
    """Stable unCLIP's image noising as diffusers' StableUnCLIPImg2ImgPipeline does it."""
    from diffusers import DDPMScheduler
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )

    normalizer = StableUnCLIPImageNormalizer(embedding_dim=embeds.shape[-1])
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    z = normalizer.unscale(scheduler.add_noise(normalizer.scale(embeds), noise, torch.tensor([level])))
    half = embeds.shape[-1] // 2  # the level's sinusoidal embedding, cosines first
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    angles = level * freqs
    return torch.cat([z, torch.cat([angles.cos(), angles.sin()])[None]], dim=1)


def test_image_embedding_input_matches_diffusers_stable_unclip_noising(engine: Any) -> None:
    from atelier.engine.models.handles import checkpoint_loader

    loaded = engine.executor.models.load(engine.folders.find_model("checkpoints", UNCLIP), checkpoint_loader)
    aug = loaded.noise_augmentor
    d = TINY_UNCLIP_EMBED_DIM
    a, b = torch.randn(2, d, generator=torch.Generator().manual_seed(9)).chunk(2)
    seed = 1234

    def noise(s: int) -> torch.Tensor:
        return torch.randn(1, d, generator=torch.Generator().manual_seed(s))

    one = unclip_adm([UnclipImage(a, 0.7, 0.3)], aug, seed)
    level = round(999 * 0.3)
    torch.testing.assert_close(one, _diffusers_noised(a, level, noise(seed - 10)) * 0.7, rtol=1e-4, atol=1e-5)
    # two images add up, and the sum is noised again at level 0.05 (seeded seed - 11)
    two = unclip_adm([UnclipImage(a, 0.7, 0.3), UnclipImage(b, 1.0, 0.0)], aug, seed)
    total = _diffusers_noised(a, level, noise(seed - 10)) * 0.7 + _diffusers_noised(b, 0, noise(seed - 10))
    expected = _diffusers_noised(total[:, :d], round(999 * 0.05), noise(seed - 11))
    torch.testing.assert_close(two, expected, rtol=1e-4, atol=1e-5)
    # no image: zeros; same seed, same input; the noise level decides the noise
    assert torch.equal(unclip_adm([], aug, seed), torch.zeros(1, 2 * d))
    assert torch.equal(unclip_adm([UnclipImage(a, 0.7, 0.3)], aug, seed), one)
    assert not torch.equal(unclip_adm([UnclipImage(a, 0.7, 0.3)], aug, seed + 1), one)
    sqrt_ac, _ = cosine_noise_schedule(1000)
    assert float(sqrt_ac[0]) > 0.999 and float(sqrt_ac[-1]) < 0.01


# -- sampling ---------------------------------------------------------------------------------------------


def _workflow(**unclip: Any) -> dict:
    wf = json.loads((ROOT / "workflows" / "variation_from_photo.json").read_text())
    nodes = wf["nodes"]
    if unclip.pop("_without", False):  # the prompt alone (the unCLIP nodes stay, unused)
        nodes["sampler"]["inputs"]["positive"] = {"node": "positive", "output": "CONDITIONING"}
    if "second" in unclip:  # another image on top of the first
        nodes["photo2"] = {"type": "LoadImage", "inputs": {"image": unclip.pop("second")}}
        nodes["encode2"] = {
            "type": "CLIPVisionEncode",
            "inputs": {
                "clip_vision": {"node": "loader", "output": "CLIP_VISION"},
                "image": {"node": "photo2", "output": "IMAGE"},
                "crop": "center",
            },
        }
        nodes["unclip2"] = {
            "type": "unCLIPConditioning",
            "inputs": {
                "conditioning": {"node": "unclip", "output": "CONDITIONING"},
                "clip_vision_output": {"node": "encode2", "output": "CLIP_VISION_OUTPUT"},
                "strength": 1.0,
                "noise_augmentation": 0.0,
            },
        }
        nodes["sampler"]["inputs"]["positive"] = {"node": "unclip2", "output": "CONDITIONING"}
    return wf


def _latent(engine: Any, wf: dict | None = None, **overrides: Any) -> torch.Tensor:
    values = {
        "checkpoint": UNCLIP,
        "image": "photo.png",
        "steps": 3,
        "width": 64,
        "height": 64,
        "seed": 2,
        "cfg": 5.0,
        "sampler": "euler",
        "noise_augmentation": 0.0,
        **overrides,
    }
    seen: dict[str, Any] = {}
    engine.executor.observers.append(lambda nid, _type, outputs: seen.__setitem__(nid, outputs))
    res = engine.executor.run(wf or _workflow(), overrides=values, outputs=["sampler"])
    engine.executor.observers.pop()
    assert res.ok, res.failure or res.errors
    return seen["sampler"][0]["samples"]


def test_the_image_and_its_strength_steer_the_picture_and_strength_zero_is_no_image(engine: Any) -> None:
    none = _latent(engine, _workflow(_without=True))
    zero = _latent(engine, image_strength=0.0)
    half = _latent(engine, image_strength=0.5)
    full = _latent(engine)
    other = _latent(engine, image="other.png")
    assert torch.equal(zero, none)
    assert (half - none).abs().mean() > 1e-4
    assert (full - half).abs().mean() > 1e-4
    assert (other - full).abs().mean() > 1e-4
    stacked = _latent(engine, _workflow(second="other.png"))
    assert (stacked - full).abs().mean() > 1e-4 and (stacked - other).abs().mean() > 1e-4


def test_noise_augmentation_is_seeded_by_the_job_seed(engine: Any) -> None:
    clean = _latent(engine)
    noisy = _latent(engine, noise_augmentation=0.5)
    assert (noisy - clean).abs().mean() > 1e-4
    engine.executor.cache.clear()  # computed again, not taken from the cache
    assert torch.equal(_latent(engine, noise_augmentation=0.5), noisy)
    # what reaches the UNet: the seed's noise on the photo's embedding for the prompt, zeros for the negative
    from atelier.engine.models.handles import checkpoint_loader

    loaded = engine.executor.models.load(engine.folders.find_model("checkpoints", UNCLIP), checkpoint_loader)
    seen: list[torch.Tensor] = []
    hook = loaded.unet.class_embedding.register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].clone())
    )
    try:
        for seed in (2, 3):
            _latent(engine, noise_augmentation=0.5, seed=seed, steps=1)
    finally:
        hook.remove()
    first, second = seen[0], seen[-1]
    assert first.shape == (2, 2 * TINY_UNCLIP_EMBED_DIM)
    positive, negative = (first[0], first[1]) if first[1].abs().sum() == 0 else (first[1], first[0])
    assert negative.abs().sum() == 0 and positive.abs().sum() > 0
    assert not torch.equal(first, second)  # another seed, other noise on the embedding


def test_a_bfloat16_model_gets_the_image_input_in_its_dtype(engine: Any, unclip_root: Path) -> None:
    from atelier.engine.models.handles import handles_from_checkpoint
    from atelier.engine.models.load import load_checkpoint
    from atelier.nodes.clip_vision import CLIPVisionEncode
    from atelier.nodes.conditioning import CLIPTextEncode
    from atelier.nodes.sampling import KSampler
    from atelier.nodes.unclip import UnclipCheckpointLoader, UnclipConditioning

    _, clip, _, vision = _node(engine, UnclipCheckpointLoader, ckpt_name=UNCLIP)
    loaded = load_checkpoint(unclip_root / "checkpoints" / UNCLIP, dtype=torch.bfloat16)
    model = handles_from_checkpoint(loaded, UNCLIP)[0]
    seen: list[torch.Tensor] = []
    hook = loaded.unet.class_embedding.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    encoded = _node(engine, CLIPVisionEncode, clip_vision=vision, image=_image(0), crop="center")
    text = _node(engine, CLIPTextEncode, clip=clip, text="a face")
    positive = _node(
        engine,
        UnclipConditioning,
        "u",
        conditioning=text,
        clip_vision_output=encoded,
        strength=1.0,
        noise_augmentation=0.2,
    )
    out = _node(
        engine,
        KSampler,
        model=model,
        seed=4,
        steps=2,
        cfg=4.0,
        sampler_name="euler",
        scheduler="normal",
        positive=positive,
        negative=_node(engine, CLIPTextEncode, clip=clip, text=""),
        latent_image={"samples": torch.zeros(1, 4, 8, 8)},
        denoise=1.0,
    )
    hook.remove()
    assert seen and all(t.dtype == torch.bfloat16 for t in seen)
    assert torch.isfinite(out["samples"]).all()


def test_a_model_built_without_its_file_gets_the_released_augmentor(engine: Any) -> None:
    from atelier.engine.models.handles import checkpoint_loader, handles_from_checkpoint
    from atelier.engine.models.load import LoadedCheckpoint
    from atelier.engine.models.unclip import UnclipConditioner

    def load(name: str) -> Any:
        return engine.executor.models.load(engine.folders.find_model("checkpoints", name), checkpoint_loader)

    loaded = load(UNCLIP)
    bare = (
        LoadedCheckpoint(  # the same modules without the file's augmentor, as a diffusers folder gives them
            unet=loaded.unet,
            vae=loaded.vae,
            text_encoders=loaded.text_encoders,
            tokenizers=loaded.tokenizers,
            info=loaded.info,
            sha256="0" * 64,
        )
    )
    (conditioner,) = handles_from_checkpoint(bare)[0].core_wrappers
    assert isinstance(conditioner, UnclipConditioner) and conditioner.augmentor is not loaded.noise_augmentor
    assert (conditioner.augmentor.embed_dim, conditioner.augmentor.max_noise_level) == (
        TINY_UNCLIP_EMBED_DIM,
        1000,
    )
    assert torch.equal(conditioner.augmentor.sqrt_alphas_cumprod, loaded.noise_augmentor.sqrt_alphas_cumprod)
    assert handles_from_checkpoint(load("tiny15.safetensors"))[0].core_wrappers == ()


# -- bad input --------------------------------------------------------------------------------------------


def test_a_plain_checkpoint_is_refused_naming_the_node_and_the_file(engine: Any) -> None:
    res = engine.executor.run(
        _workflow(), overrides={"checkpoint": "tiny15.safetensors", "image": "photo.png", "steps": 1}
    )
    assert not res.ok and res.failure.node == "loader"
    assert (
        "tiny15.safetensors" in res.failure.message
        and "not a Stable unCLIP checkpoint" in res.failure.message
    )

    # unCLIP conditioning sampled with a plain model: the sampler fails naming unCLIPConditioning and the file
    wf = _workflow()
    nodes = wf["nodes"]
    nodes["plain"] = {"type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny15.safetensors"}}
    for nid in ("positive", "negative"):
        nodes[nid]["inputs"]["clip"] = {"node": "plain", "output": "CLIP"}
    nodes["sampler"]["inputs"]["model"] = {"node": "plain", "output": "MODEL"}
    res = engine.executor.run(
        wf, overrides={"checkpoint": UNCLIP, "image": "photo.png", "steps": 1, "width": 64, "height": 64}
    )
    assert not res.ok and res.failure.node == "sampler"
    assert "node unclip (unCLIPConditioning)" in res.failure.message
    assert "tiny15.safetensors" in res.failure.message and "not an unCLIP checkpoint" in res.failure.message


def test_an_image_embedding_of_another_width_is_named(engine: Any) -> None:
    wf = _workflow()
    wf["nodes"]["cv"] = {"type": "CLIPVisionLoader", "inputs": {"clip_name": "narrow-vit.safetensors"}}
    wf["nodes"]["encode"]["inputs"]["clip_vision"] = {"node": "cv", "output": "CLIP_VISION"}
    res = engine.executor.run(
        wf, overrides={"checkpoint": UNCLIP, "image": "photo.png", "steps": 1, "width": 64, "height": 64}
    )
    assert not res.ok and res.failure.node == "sampler"
    message = res.failure.message
    assert "node unclip (unCLIPConditioning)" in message and "40 wide" in message and "48-wide" in message
    assert UNCLIP in message


def test_variation_from_photo_runs_and_saves(engine: Any) -> None:
    overrides = {"checkpoint": UNCLIP, "image": "photo.png", "steps": 2, "width": 64, "height": 64}
    res = engine.executor.run(_workflow(), overrides=overrides)
    assert res.ok, res.failure or res.errors
    ref = res.outputs["save"]["images"][0]
    saved = np.asarray(Image.open(engine.folders.output / ref["subfolder"] / ref["filename"]))
    assert saved.shape == (64, 64, 3)


def test_a_comfyui_api_prompt_with_the_unclip_nodes_runs(engine: Any) -> None:
    prompt = {
        "1": {"class_type": "unCLIPCheckpointLoader", "inputs": {"ckpt_name": UNCLIP}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "3": {
            "class_type": "CLIPVisionEncode",
            "inputs": {"clip_vision": ["1", 3], "image": ["2", 0], "crop": "center"},
        },
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a face", "clip": ["1", 1]}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "6": {
            "class_type": "unCLIPConditioning",
            "inputs": {
                "conditioning": ["4", 0],
                "clip_vision_output": ["3", 0],
                "strength": 1.0,
                "noise_augmentation": 0.1,
            },
        },
        "7": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "8": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "seed": 5,
                "steps": 1,
                "cfg": 4.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "positive": ["6", 0],
                "negative": ["5", 0],
                "latent_image": ["7", 0],
                "denoise": 1.0,
            },
        },
    }
    res = engine.executor.run(prompt, outputs=["8"])
    assert res.ok, res.failure or res.errors
    assert {"1", "3", "6", "8"} <= set(res.executed)
