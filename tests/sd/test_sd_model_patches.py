"""The MODEL handle's extension points: the wrapper chain around the network call, CFG functions, and
RescaleCFG (a real patch node) against a reference computed another way."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from atelier.engine.models.handles import ModelHandle, load_checkpoint_handles
from atelier.engine.sampling.cfg import rescale_cfg
from atelier.engine.sampling.conditioning import CondEntry
from atelier.engine.sampling.guidance import CfgArgs, CFGDenoiser, ModelCall

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def tiny(engine, models_root: Path) -> tuple[ModelHandle, CondEntry]:
    model, clip, _ = load_checkpoint_handles(
        engine.models, models_root / "checkpoints" / "tiny15.safetensors"
    )
    emb, _ = clip.encode("a portrait of a woman, soft light")
    return model, CondEntry(emb)


def _call(model: ModelHandle, entry: CondEntry, seed: int = 0) -> ModelCall:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 8, 8, generator=g)
    sigma = torch.tensor([3.0, 3.0])
    return ModelCall(
        x=x,
        timestep=model.timestep(sigma),
        context=entry.embedding.expand(2, -1, -1),
        added=None,
        sigma=sigma,
        entries=(entry,),
        negative=(False,),
        batch=2,
        area=(8, 8, 0, 0),
    )


def test_the_tiny_unet_is_live(tiny) -> None:
    model, entry = tiny
    call = _call(model, entry)
    out = model.apply_model(call)
    assert out.abs().mean() > 1e-3
    assert not torch.allclose(out, model.apply_model(_call(model, entry, seed=1)))  # depends on x
    other = CondEntry(torch.randn_like(entry.embedding))
    assert not torch.allclose(out, model.apply_model(call.replace(context=other.embedding.expand(2, -1, -1))))
    # no normalisation layer may scale its output to nothing (zero GroupNorm scales would make the
    # network's output independent of its input, and every sampler agree trivially)
    norms = [m for m in model.unet.modules() if isinstance(m, torch.nn.GroupNorm | torch.nn.LayerNorm)]
    assert norms and all(float(m.weight.abs().min()) > 0.5 for m in norms if m.weight is not None)


def test_wrappers_compose_in_order_and_leave_the_handle_unchanged(tiny) -> None:
    model, entry = tiny
    call = _call(model, entry)
    plain = model.apply_model(call)
    log: list[str] = []

    def outer(call_next, c):
        log.append("outer")
        return call_next(c)

    def inner(call_next, c):
        log.append("inner")
        return call_next(c) * 2.0

    wrapped = model.with_wrapper(outer).with_wrapper(inner)
    out = wrapped.apply_model(call)
    assert log == ["outer", "inner"]
    assert torch.allclose(out, plain * 2.0)
    assert model.wrappers == () and torch.equal(model.apply_model(call), plain)  # the original is untouched
    assert wrapped.unet is model.unet  # and the weights are shared, not copied


def test_a_wrapper_attaches_residuals_to_the_unet_call(tiny) -> None:
    """How ControlNet attaches: extra keyword arguments to the network's forward, added by a wrapper."""
    model, entry = tiny
    call = _call(model, entry)
    plain = model.apply_model(call)
    # the shapes of the skip connections and the mid block, as a ControlNet would produce them
    shapes: dict[str, list[torch.Size]] = {"down": [], "mid": []}
    unet = model.unet
    hooks = [unet.conv_in.register_forward_hook(lambda m, i, o: shapes["down"].append(o.shape))]
    for block in unet.down_blocks:
        hooks.append(
            block.register_forward_hook(lambda m, i, o: shapes["down"].extend(t.shape for t in o[1]))
        )
    hooks.append(unet.mid_block.register_forward_hook(lambda m, i, o: shapes["mid"].append(o.shape)))
    model.apply_model(call)
    for h in hooks:
        h.remove()

    def residual(value: float):
        def wrapper(call_next, c):
            extra = {
                "down_block_additional_residuals": tuple(torch.full(s, value) for s in shapes["down"]),
                "mid_block_additional_residual": torch.full(shapes["mid"][0], value),
            }
            return call_next(c.replace(unet_kwargs={**c.unet_kwargs, **extra}))

        return wrapper

    assert torch.allclose(model.with_wrapper(residual(0.0)).apply_model(call), plain, atol=1e-6)
    assert not torch.allclose(model.with_wrapper(residual(0.5)).apply_model(call), plain, atol=1e-3)


def _comfy_style_rescale(cond_d, uncond_d, x_orig, sigma, cfg, multiplier):
    """Reference: the RescaleCFG formulation used by ComfyUI's node, which works on ``x - denoised``,
    recomputed here in float64 numpy."""
    s = sigma.reshape(-1, 1, 1, 1)
    cond = x_orig - cond_d
    uncond = x_orig - uncond_d
    x = x_orig / (s * s + 1.0)
    v_cond = ((x - (x_orig - cond)) * (s**2 + 1.0) ** 0.5) / s
    v_uncond = ((x - (x_orig - uncond)) * (s**2 + 1.0) ** 0.5) / s
    x_cfg = v_uncond + cfg * (v_cond - v_uncond)
    ro_pos = v_cond.std(axis=(1, 2, 3), ddof=1, keepdims=True)
    ro_cfg = x_cfg.std(axis=(1, 2, 3), ddof=1, keepdims=True)
    x_final = multiplier * x_cfg * (ro_pos / ro_cfg) + (1.0 - multiplier) * x_cfg
    result = x_orig - (x - x_final * s / (s * s + 1.0) ** 0.5)
    return x_orig - result  # ComfyUI's sampler subtracts the function's value from x


@pytest.mark.parametrize("multiplier", [0.0, 0.7, 1.0])
def test_rescale_cfg_matches_the_reference(multiplier: float) -> None:
    g = torch.Generator().manual_seed(3)
    cond, uncond, x = (torch.randn(2, 4, 6, 6, generator=g, dtype=torch.float64) for _ in range(3))
    sigma = torch.tensor([0.5, 7.0], dtype=torch.float64)
    cfg = 7.5
    plain = uncond + cfg * (cond - uncond)
    ours = rescale_cfg(multiplier)(CfgArgs(cond, uncond, cfg, x, sigma, plain))
    ref = _comfy_style_rescale(*(t.numpy() for t in (cond, uncond, x, sigma)), cfg, multiplier)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-9, atol=1e-9)
    if multiplier == 0.0:
        torch.testing.assert_close(ours, plain)  # nothing to rescale: plain CFG
    else:
        assert not torch.allclose(ours, plain)
        # the rescaled v-prediction has the conditional one's spread
        s = sigma.reshape(-1, 1, 1, 1)
        v = lambda d: (x / (s**2 + 1) - d) * (s**2 + 1).sqrt() / s  # noqa: E731
        if multiplier == 1.0:
            torch.testing.assert_close(v(ours).std(dim=(1, 2, 3)), v(cond).std(dim=(1, 2, 3)))


def test_cfg_functions_run_inside_guidance() -> None:
    from tests.sd.test_sd_guidance import PointModel, cond, model

    m = model()
    patched = PointModel(m.sampling, [])
    patched.cfg_functions = (rescale_cfg(1.0),)
    x = torch.randn(1, 4, 8, 8)
    sigma = torch.tensor([2.0])
    # a regional prompt makes the conditional prediction vary over the picture (top half 0.8, bottom 2.0)
    positive = cond(0.8, area=(4, 8, 0, 0)) + cond(2.0, area=(4, 8, 4, 0))
    plain = CFGDenoiser(m, positive, cond(-0.2), cfg=5.0)(x, sigma)
    out = CFGDenoiser(patched, positive, cond(-0.2), cfg=5.0)(x, sigma)
    c, u = torch.full_like(x, 0.8), torch.full_like(x, -0.2)
    c[:, :, 4:] = 2.0
    expected = rescale_cfg(1.0)(CfgArgs(c, u, 5.0, x, sigma, plain))
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(out, plain, atol=1e-3)


def _with_rescale(multiplier: float) -> dict:
    wf = json.loads((ROOT / "workflows" / "portrait.json").read_text())
    wf["nodes"]["rescale"] = {
        "type": "RescaleCFG",
        "inputs": {"model": {"node": "loader", "output": "MODEL"}, "multiplier": multiplier},
    }
    wf["nodes"]["sampler"]["inputs"]["model"] = {"node": "rescale", "output": "MODEL"}
    return wf


def test_rescale_cfg_node_changes_the_picture_and_zero_keeps_it(engine_env) -> None:
    from tests.sd.test_sd_pipeline import pixels, portrait, run

    kw = dict(cfg=12.0, seed=4, steps=4)
    plain, _ = run(engine_env, portrait(), **kw)
    zero, _ = run(engine_env, copy.deepcopy(_with_rescale(0.0)), **kw)
    strong, _ = run(engine_env, copy.deepcopy(_with_rescale(1.0)), **kw)
    assert plain.ok and zero.ok and strong.ok
    a, b, c = (pixels(engine_env, r).astype(int) for r in (plain, zero, strong))
    assert np.abs(a - b).max() <= 1
    assert np.abs(a - c).mean() > 1.0
    assert "loader" in strong.cached  # the patch gives a new handle; the checkpoint is not reloaded


@pytest.mark.parametrize("sampling", ["eps", "v_prediction", "lcm", "x0"])
@pytest.mark.parametrize("zsnr", [False, True])
def test_model_sampling_discrete_node_replaces_the_schedule(tiny, sampling: str, zsnr: bool) -> None:
    from atelier.engine.sampling import ModelSampling
    from atelier.nodes.model_patches import ModelSamplingDiscrete

    model, entry = tiny
    patched = ModelSamplingDiscrete().run(None, model, sampling, zsnr)  # type: ignore[arg-type]
    ms = patched.sampling
    assert model.sampling.prediction == "eps" and len(model.sampling.sigmas) == 1000  # the input is unchanged
    assert ms.prediction == sampling and patched.unet is model.unet
    assert len(ms.sigmas) == (50 if sampling == "lcm" else 1000)
    assert (ms.sigma_max > 4000) == zsnr  # zero terminal SNR: the last level is almost pure noise
    # the guided prediction follows the new parameterisation: x0 takes the network output as it is
    x = torch.randn(1, 4, 8, 8)
    sigma = torch.tensor([3.0])
    out = CFGDenoiser(patched, [entry], [entry], cfg=1.0)(x, sigma)
    raw = patched.apply_model(
        ModelCall(
            x=ms.calculate_input(sigma, x),
            timestep=patched.timestep(sigma),
            context=entry.embedding,
            added=None,
            sigma=sigma,
            entries=(entry,),
            negative=(False,),
            batch=1,
            area=(8, 8, 0, 0),
        )
    )
    torch.testing.assert_close(out, ms.calculate_denoised(sigma, raw.float(), x), rtol=1e-4, atol=1e-4)
    if sampling == "x0":
        torch.testing.assert_close(out, raw.float(), rtol=1e-4, atol=1e-4)
    if sampling == "lcm":  # an LCM's timesteps are every 20th, ending at 999
        assert int(patched.timestep(torch.tensor([ms.sigma_max]))) == 999
    assert ModelSampling.discrete(sampling, zsnr=zsnr).sigmas.equal(ms.sigmas)  # type: ignore[arg-type]
