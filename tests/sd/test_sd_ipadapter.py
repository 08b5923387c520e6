"""IP-Adapters and CLIP vision on tiny SD1.5 and SDXL models, from files in the real layouts.

The UNet output with an adapter is checked against diffusers' own IP-Adapter loading and attention
(``_load_ip_adapter_weights`` + ``IPAdapterAttnProcessor2_0``) on a copy of the UNet; sampling shows weight 0
as the model without adapter bit for bit, weights that change the picture, the sigma range and the mask
respected; wrong files fail with errors that name the node, the file and the mismatch."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.engine.model_loader import ModelLoader
from atelier.engine.models.clip_vision import clip_vision_config, preprocess
from atelier.engine.models.ipadapter import cross_attention_layers, read_ipadapter
from atelier.engine.models.ipadapter_attention import IPAdapterAttnProcessor, IPAdapterPatch, _CallState
from atelier.engine.models.tiny_ipadapter import (
    TINY_CLIP_VISION,
    write_tiny_clip_vision,
    write_tiny_ipadapter,
)
from atelier.engine.node import JobContext
from atelier.engine.sampling.conditioning import CondEntry
from atelier.engine.sampling.guidance import ModelCall
from tests.engines import make_engine

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS = {
    "plain15.bin": ("sd15", "plain"),
    "plus15.safetensors": ("sd15", "plus"),
    "plusface15.bin": ("sd15", "plus"),
    "plainxl.safetensors": ("sdxl", "plain"),
    "plusfacexl.bin": ("sdxl", "plus"),
    "faceid15.bin": ("sd15", "faceid"),
    "fullface15.safetensors": ("sd15", "full"),
}


@pytest.fixture(scope="module")
def ip_root(models_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ipmodels")
    (root / "checkpoints").mkdir()
    for name in ("tiny15.safetensors", "tinyxl.safetensors"):
        (root / "checkpoints" / name).symlink_to(models_root / "checkpoints" / name)
    write_tiny_clip_vision(root / "clip_vision" / "tiny-vit.safetensors", seed=1)
    write_tiny_clip_vision(root / "clip_vision" / "narrow-vit.safetensors", seed=2, projection_dim=40)
    for n, (name, (arch, kind)) in enumerate(ADAPTERS.items()):
        write_tiny_ipadapter(root / "ipadapter" / name, arch, kind, seed=n)  # type: ignore[arg-type]
    return root


@pytest.fixture()
def ip_engine(ip_root: Path, tmp_path: Path, shared_models: ModelLoader) -> Any:
    eng = make_engine(ip_root, tmp_path, shared_models)
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (96, 80, 3), dtype=np.uint8)).save(eng.folders.input / "face.png")
    return eng


def _node(engine: Any, cls: type, **inputs: Any) -> Any:
    ctx = engine.executor.make_context(JobContext("j"), "n", cls.__name__)
    out = cls().run(ctx, **inputs)
    return out


def _parts(engine: Any, ckpt: str, adapter: str, clip: str = "tiny-vit.safetensors") -> tuple[Any, Any, Any]:
    from atelier.nodes.clip_vision import CLIPVisionLoader
    from atelier.nodes.ipadapter import IPAdapterModelLoader
    from atelier.nodes.loaders import CheckpointLoaderSimple

    model = _node(engine, CheckpointLoaderSimple, ckpt_name=ckpt)[0]
    return (
        model,
        _node(engine, IPAdapterModelLoader, ipadapter_file=adapter),
        _node(engine, CLIPVisionLoader, clip_name=clip),
    )


def _apply(engine: Any, model: Any, ipa: Any, cv: Any, image: torch.Tensor, **kw: Any) -> Any:
    from atelier.nodes.ipadapter import IPAdapterAdvanced

    args = {"weight": 1.0, "start_at": 0.0, "end_at": 1.0, **kw}
    return _node(engine, IPAdapterAdvanced, model=model, ipadapter=ipa, image=image, clip_vision=cv, **args)


def _reference_image(seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 96, 80, 3, generator=torch.Generator().manual_seed(seed))


# -- CLIP vision ----------------------------------------------------------------------------------------


def test_clip_vision_config_from_shapes_uses_the_shipped_configs_for_released_widths() -> None:
    def vit(hidden: int, layers: int, ffn: int, proj: int) -> tuple[Any, list[str]]:
        shapes = {
            "vision_model.embeddings.patch_embedding.weight": (hidden, 3, 14, 14),
            "vision_model.embeddings.position_embedding.weight": (257, hidden),
            "vision_model.encoder.layers.0.mlp.fc1.weight": (ffn, hidden),
            "visual_projection.weight": (proj, hidden),
        }
        keys = [*shapes, *(f"vision_model.encoder.layers.{i}.mlp.fc2.weight" for i in range(layers))]
        return shapes.__getitem__, keys

    h = clip_vision_config(*vit(1280, 32, 5120, 1024))
    assert (h.num_attention_heads, h.num_hidden_layers, h.hidden_act, h.image_size) == (16, 32, "gelu", 224)
    g = clip_vision_config(*vit(1664, 48, 8192, 1280))
    assert (g.num_attention_heads, g.num_hidden_layers, g.projection_dim) == (16, 48, 1280)
    assert clip_vision_config(*vit(1024, 24, 4096, 768)).hidden_act == "quick_gelu"  # OpenAI ViT-L


def test_clip_vision_encode_matches_transformers_on_the_centre_crop(ip_engine: Any) -> None:
    from safetensors.torch import load_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from atelier.nodes.clip_vision import CLIPVisionEncode, CLIPVisionLoader

    cv = _node(ip_engine, CLIPVisionLoader, clip_name="tiny-vit.safetensors")
    assert cv.model.config.num_hidden_layers == TINY_CLIP_VISION["num_hidden_layers"]
    reference = CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_CLIP_VISION)).eval()
    reference.load_state_dict(
        load_file(str(ip_engine.folders.models["clip_vision"][0] / "tiny-vit.safetensors")), strict=False
    )
    image = torch.rand(1, 224, 300, 3, generator=torch.Generator().manual_seed(4))  # wide: crop, no resize
    out = _node(ip_engine, CLIPVisionEncode, clip_vision=cv, image=image, crop="center")
    centre = image[:, :, 38:262].permute(0, 3, 1, 2)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = reference(pixel_values=(centre - mean) / std, output_hidden_states=True)
    torch.testing.assert_close(out.image_embeds, ref.image_embeds, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.penultimate_hidden_states, ref.hidden_states[-2], rtol=1e-4, atol=1e-5)
    squashed = _node(ip_engine, CLIPVisionEncode, clip_vision=cv, image=image, crop="none")
    assert not torch.allclose(squashed.image_embeds, out.image_embeds, atol=1e-4)
    assert preprocess(torch.rand(2, 50, 70, 3), 224).shape == (2, 3, 224, 224)


# -- the UNet call against diffusers' IP-Adapter ---------------------------------------------------------


def _call(x: torch.Tensor, sigma: float, negative: tuple[bool, ...] = (False,)) -> ModelCall:
    entry = CondEntry(torch.zeros(1, 77, 8))
    b = x.shape[0] // len(negative)
    return ModelCall(
        x=x,
        timestep=torch.full((x.shape[0],), 500.0),
        context=torch.zeros(1),
        added=None,
        sigma=torch.full((x.shape[0],), sigma),
        entries=(entry,) * len(negative),
        negative=negative,
        batch=b,
        area=(x.shape[2], x.shape[3], 0, 0),
    )


@pytest.mark.parametrize(
    ("ckpt", "adapter"),
    [
        ("tiny15.safetensors", "plain15.bin"),
        ("tiny15.safetensors", "plusface15.bin"),
        ("tiny15.safetensors", "fullface15.safetensors"),
        ("tinyxl.safetensors", "plainxl.safetensors"),
        ("tinyxl.safetensors", "plusfacexl.bin"),
    ],
)
def test_unet_output_matches_diffusers_ip_adapter(ip_engine: Any, ckpt: str, adapter: str) -> None:
    model, ipa, cv = _parts(ip_engine, ckpt, adapter)
    image = _reference_image()
    weight = 0.7
    patched = _apply(ip_engine, model, ipa, cv, image, weight=weight)
    (patch,) = [w for w in patched.wrappers if isinstance(w, IPAdapterPatch)]
    unet = model.unet
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 4, 8, 6, generator=g)
    text = torch.randn(2, 7, unet.config.cross_attention_dim, generator=g)
    t = torch.tensor([500.0, 500.0])
    added: dict[str, torch.Tensor] = {}
    if model.needs_pooled:
        added = {"text_embeds": torch.randn(2, 32, generator=g), "time_ids": torch.randn(2, 6, generator=g)}

    def forward(c: ModelCall) -> torch.Tensor:
        with torch.no_grad():
            return unet(c.x, t, encoder_hidden_states=text, added_cond_kwargs=added or None).sample

    plain = forward(_call(x, 1.0))
    got = patch(forward, _call(x, 1.0))
    after = forward(_call(x, 1.0))

    # diffusers: load the same file's state dicts into a copy of the UNet, feed it the CLIP features
    reference = copy.deepcopy(unet)
    source = read_ipadapter(ip_engine.folders.models["ipadapter"][0] / adapter)
    reference._load_ip_adapter_weights([{"image_proj": source.image_proj, "ip_adapter": source.ip_adapter}])
    for proc in reference.attn_processors.values():
        if hasattr(proc, "scale"):
            proc.scale = [weight]
    out = cv.encode(image)
    feats = out.image_embeds if ipa.kind == "plain" else out.penultimate_hidden_states
    with torch.no_grad():
        expected = reference(
            x,
            t,
            encoder_hidden_states=text,
            added_cond_kwargs={**added, "image_embeds": [feats.expand(2, *feats.shape[1:])[:, None]]},
        ).sample
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-4)
    assert torch.equal(after, plain)  # the layers' own processors are back
    assert all(not isinstance(a.processor, IPAdapterAttnProcessor) for _, a in cross_attention_layers(unet))


def test_negative_rows_get_the_no_image_tokens(ip_engine: Any) -> None:
    model, ipa, cv = _parts(ip_engine, "tiny15.safetensors", "plusface15.bin")
    patched = _apply(ip_engine, model, ipa, cv, _reference_image())
    (patch,) = [w for w in patched.wrappers if isinstance(w, IPAdapterPatch)]
    seen: list[torch.Tensor] = []

    def probe(c: ModelCall) -> torch.Tensor:
        _, attn = cross_attention_layers(model.unet)[0]
        seen.append(attn.processor.state.tokens)
        return c.x

    patch(probe, _call(torch.zeros(4, 4, 8, 8), 1.0, negative=(False, True)))
    (tokens,) = seen
    assert torch.equal(tokens[:2], patch.cond.expand(2, -1, -1))
    assert torch.equal(tokens[2:], patch.uncond.expand(2, -1, -1))
    assert not torch.allclose(patch.cond, patch.uncond)


def test_the_mask_limits_the_adapter_to_its_region(ip_engine: Any) -> None:
    model, ipa, _ = _parts(ip_engine, "tiny15.safetensors", "plain15.bin")
    _, attn = cross_attention_layers(model.unet)[0]
    g = torch.Generator().manual_seed(6)
    hidden = torch.randn(1, 8 * 8, attn.to_q.in_features, generator=g)
    text = torch.randn(1, 7, attn.to_k.in_features, generator=g)
    tokens = torch.randn(1, 4, attn.to_k.in_features, generator=g)
    left = torch.zeros(1, 1, 8, 8)
    left[..., :4] = 1.0
    state = _CallState(tokens, left, (8, 8))
    proc = IPAdapterAttnProcessor(attn.processor, ipa.to_k[0], ipa.to_v[0], 1.0, state)
    with torch.no_grad():
        plain = attn.processor(attn, hidden, text)
        masked = proc(attn, hidden, text).view(1, 8, 8, -1)
    plain = plain.view(1, 8, 8, -1)
    assert torch.equal(masked[:, :, 4:], plain[:, :, 4:])  # outside the mask: untouched
    assert not torch.allclose(masked[:, :, :4], plain[:, :, :4], atol=1e-4)
    # over another processor (an attention patch's, say) the adapter adds the same, computed apart
    other = IPAdapterAttnProcessor(
        lambda *a, **k: attn.processor(*a, **k), ipa.to_k[0], ipa.to_v[0], 1.0, state
    )
    with torch.no_grad():
        torch.testing.assert_close(other(attn, hidden, text).view(1, 8, 8, -1), masked, rtol=1e-4, atol=1e-5)
    # at a coarser layer the mask is resized to that layer's grid (4 x 4 for 16 queries)
    assert state.mask_for(16, hidden).shape == (1, 16, 1)


# -- sampling ---------------------------------------------------------------------------------------------


def _workflow(
    ckpt: str, adapter: str | None, clip: str = "tiny-vit.safetensors", _mask: dict | None = None, **ip: Any
) -> dict:
    wf = json.loads((ROOT / "workflows" / "portrait.json").read_text())
    nodes = wf["nodes"]
    if _mask is not None:
        nodes["mask"] = _mask
        ip["attn_mask"] = {"node": "mask", "output": "MASK"}
    nodes["loader"]["inputs"]["ckpt_name"] = ckpt
    if adapter is not None:
        nodes["ref"] = {"type": "LoadImage", "inputs": {"image": "face.png"}}
        nodes["cv"] = {"type": "CLIPVisionLoader", "inputs": {"clip_name": clip}}
        nodes["ipm"] = {"type": "IPAdapterModelLoader", "inputs": {"ipadapter_file": adapter}}
        nodes["ip"] = {
            "type": "IPAdapterAdvanced",
            "inputs": {
                "model": {"node": "loader", "output": "MODEL"},
                "ipadapter": {"node": "ipm", "output": "IPADAPTER"},
                "image": {"node": "ref", "output": "IMAGE"},
                "clip_vision": {"node": "cv", "output": "CLIP_VISION"},
                **{"weight": 1.0, "start_at": 0.0, "end_at": 1.0, **ip},
            },
        }
        nodes["sampler"]["inputs"]["model"] = {"node": "ip", "output": "MODEL"}
    return wf


def _latent(engine: Any, ckpt: str, adapter: str | None, **ip: Any) -> torch.Tensor:
    overrides = {"checkpoint": ckpt, "steps": 3, "width": 64, "height": 64, "seed": 2, "cfg": 5.0}
    seen: dict[str, Any] = {}
    engine.executor.observers.append(lambda nid, _type, outputs: seen.__setitem__(nid, outputs))
    res = engine.executor.run(_workflow(ckpt, adapter, **ip), overrides=overrides, outputs=["sampler"])
    engine.executor.observers.pop()
    assert res.ok, res.failure or res.errors
    return seen["sampler"][0]["samples"]


@pytest.mark.parametrize(
    ("ckpt", "adapter"),
    [("tiny15.safetensors", "plus15.safetensors"), ("tinyxl.safetensors", "plusfacexl.bin")],
)
def test_weight_zero_is_no_adapter_and_the_weight_changes_the_picture(
    ip_engine: Any, ckpt: str, adapter: str
) -> None:
    none = _latent(ip_engine, ckpt, None)
    zero = _latent(ip_engine, ckpt, adapter, weight=0.0)
    half = _latent(ip_engine, ckpt, adapter, weight=0.5)
    full = _latent(ip_engine, ckpt, adapter, weight=1.0)
    assert torch.equal(zero, none)
    assert (half - none).abs().mean() > 1e-4
    assert (full - none).abs().mean() > (half - none).abs().mean()
    # a range that holds no step, and an all-black mask, are the model without adapter too
    assert torch.equal(_latent(ip_engine, ckpt, adapter, start_at=0.0, end_at=0.0), none)
    black = {"type": "SolidMask", "inputs": {"value": 0.0, "width": 64, "height": 64}}
    assert torch.equal(_latent(ip_engine, ckpt, adapter, _mask=black), none)
    white = {"type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 64}}
    assert torch.equal(_latent(ip_engine, ckpt, adapter, _mask=white), full)


def test_start_and_end_select_the_steps_the_adapter_acts_in(ip_engine: Any) -> None:
    model, ipa, cv = _parts(ip_engine, "tiny15.safetensors", "plain15.bin")
    patched = _apply(ip_engine, model, ipa, cv, _reference_image(), start_at=0.3, end_at=0.7)
    acted: list[tuple[float, bool]] = []

    def probe(call_next: Any, call: ModelCall) -> torch.Tensor:
        _, attn = cross_attention_layers(model.unet)[0]
        acted.append((float(call.sigma.max()), isinstance(attn.processor, IPAdapterAttnProcessor)))
        return call_next(call)

    probed = patched.with_wrapper(probe)  # inside the adapter's wrapper
    hi, lo = model.sampling.percent_to_sigma(0.3), model.sampling.percent_to_sigma(0.7)
    _sample(ip_engine, probed)
    assert acted and {a for _, a in acted} == {True, False}
    for sigma, active in acted:
        assert active == (lo <= sigma <= hi), (sigma, lo, hi)


def _sample(engine: Any, model: Any) -> None:
    from atelier.nodes.conditioning import CLIPTextEncode
    from atelier.nodes.loaders import CheckpointLoaderSimple
    from atelier.nodes.sampling import KSampler

    clip = _node(engine, CheckpointLoaderSimple, ckpt_name="tiny15.safetensors")[1]
    pos = _node(engine, CLIPTextEncode, clip=clip, text="a face")
    neg = _node(engine, CLIPTextEncode, clip=clip, text="")
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    _node(
        engine,
        KSampler,
        model=model,
        seed=1,
        steps=10,
        cfg=4.0,
        sampler_name="euler",
        scheduler="normal",
        positive=pos,
        negative=neg,
        latent_image=latent,
        denoise=1.0,
    )


# -- bad input --------------------------------------------------------------------------------------------


def _failure(engine: Any, wf: dict) -> str:
    res = engine.executor.run(wf, overrides={"steps": 1, "width": 64, "height": 64}, outputs=["sampler"])
    assert not res.ok
    assert res.failure is not None and res.failure.node == "ip", res.failure
    return res.failure.message


def test_an_adapter_of_another_family_names_the_node_the_file_and_the_widths(ip_engine: Any) -> None:
    message = _failure(ip_engine, _workflow("tinyxl.safetensors", "plain15.bin"))
    assert "IPAdapterAdvanced" in message and "plain15.bin" in message
    assert "text width 32" in message and "text width 96" in message and "sdxl" in message


def test_a_missing_or_mismatched_clip_vision_is_named(ip_engine: Any) -> None:
    wf = _workflow("tiny15.safetensors", "plain15.bin")
    del wf["nodes"]["ip"]["inputs"]["clip_vision"]
    message = _failure(ip_engine, wf)
    assert "clip_vision is not connected" in message and "plain15.bin" in message
    message = _failure(
        ip_engine, _workflow("tiny15.safetensors", "plain15.bin", clip="narrow-vit.safetensors")
    )
    assert "narrow-vit.safetensors" in message and "48" in message and "40" in message
    checked = ip_engine.check(_workflow("tiny15.safetensors", "plain15.bin", clip="nope.safetensors"), {})
    assert not checked.ok and any("nope.safetensors" in str(e) for e in checked.errors)


def test_a_faceid_adapter_says_it_needs_insightface(ip_engine: Any) -> None:
    message = _failure(ip_engine, _workflow("tiny15.safetensors", "faceid15.bin"))
    assert "faceid15.bin" in message and "FaceID" in message and "insightface" in message


def test_an_unrelated_file_is_not_an_ip_adapter(ip_engine: Any, ip_root: Path) -> None:
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2)}, str(ip_root / "ipadapter" / "junk.safetensors"))
    res = ip_engine.executor.run(_workflow("tiny15.safetensors", "junk.safetensors"), overrides={"steps": 1})
    assert not res.ok and res.failure.node == "ipm"
    assert "junk.safetensors" in res.failure.message and "not an IP-Adapter" in res.failure.message


# -- the shipped identity workflow ------------------------------------------------------------------------


def test_portrait_from_face_runs_on_tiny_models(ip_engine: Any) -> None:
    wf = json.loads((ROOT / "workflows" / "portrait_from_face.json").read_text())
    overrides = {
        "checkpoint": "tiny15.safetensors",
        "reference": "face.png",
        "ipadapter": "plusface15.bin",
        "clip_vision": "tiny-vit.safetensors",
        "steps": 2,
        "width": 64,
        "height": 64,
    }
    res = ip_engine.executor.run(wf, overrides=overrides)
    assert res.ok, res.failure or res.errors
    ref = res.outputs["save"]["images"][0]
    saved = np.asarray(Image.open(ip_engine.folders.output / ref["subfolder"] / ref["filename"]))
    assert saved.shape == (64, 64, 3)
    assert "ipadapter" in res.executed


# -- style models -----------------------------------------------------------------------------------------


def _style_reference(sd: dict[str, torch.Tensor], hidden: torch.Tensor) -> torch.Tensor:
    """T2I-Adapter's StyleAdapter written out with matmuls (one head: the tiny model is 64 wide)."""

    def ln(x: torch.Tensor, p: str) -> torch.Tensor:
        return torch.nn.functional.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"])

    tokens = sd["style_embedding"].shape[1]
    x = ln(torch.cat([hidden, sd["style_embedding"].expand(hidden.shape[0], -1, -1)], dim=1), "ln_pre")
    n = 0
    while f"transformer_layes.{n}.ln_1.weight" in sd:
        p = f"transformer_layes.{n}."
        h = ln(x, p + "ln_1")
        q, k, v = (h @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"]).chunk(3, dim=-1)
        att = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1) @ v
        x = x + att @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
        h = ln(x, p + "ln_2") @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"]
        h = h * torch.sigmoid(1.702 * h)
        x = x + h @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
        n += 1
    return ln(x[:, -tokens:], "ln_post") @ sd["proj"]


def test_style_model_appends_its_tokens_to_the_conditioning(ip_engine: Any, ip_root: Path) -> None:
    from safetensors.torch import load_file

    from atelier.engine.models.tiny_ipadapter import write_tiny_style_model
    from atelier.nodes.clip_vision import (
        CLIPVisionEncode,
        CLIPVisionLoader,
        StyleModelApply,
        StyleModelLoader,
    )

    path = write_tiny_style_model(ip_root / "style_models" / "tiny-style.safetensors", seed=3)
    write_tiny_style_model(ip_root / "style_models" / "wide-style.safetensors", width=128)
    style = _node(ip_engine, StyleModelLoader, style_model_name="tiny-style.safetensors")
    cv = _node(ip_engine, CLIPVisionLoader, clip_name="tiny-vit.safetensors")
    encoded = _node(ip_engine, CLIPVisionEncode, clip_vision=cv, image=_reference_image(), crop="center")
    cond = [CondEntry(torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(8)))]

    def apply(strength: float, model: Any = style) -> Any:
        return _node(
            ip_engine,
            StyleModelApply,
            conditioning=cond,
            style_model=model,
            clip_vision_output=encoded,
            strength=strength,
            strength_type="multiply",
        )

    (one,) = apply(1.0)
    assert one.embedding.shape == (1, 77 + 8, 32)
    assert torch.equal(one.embedding[:, :77], cond[0].embedding)
    expected = _style_reference(load_file(str(path)), encoded.last_hidden_state)
    torch.testing.assert_close(one.embedding[:, 77:], expected, rtol=1e-4, atol=1e-5)
    (half,) = apply(0.5)
    torch.testing.assert_close(half.embedding[:, 77:], expected * 0.5, rtol=1e-4, atol=1e-6)
    wide = _node(ip_engine, StyleModelLoader, style_model_name="wide-style.safetensors")
    with pytest.raises(ValueError, match=r"StyleModelApply: style model wide-style.safetensors .*width 128"):
        apply(1.0, wide)
