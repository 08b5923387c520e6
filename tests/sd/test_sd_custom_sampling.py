"""Custom sampling on a tiny checkpoint: SamplerCustom(Advanced) against KSampler bit for bit, noise,
split schedules, dual CFG against the model's own predictions, events, cancel and the cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from atelier.engine import events as E
from atelier.engine.models.handles import load_checkpoint_handles
from atelier.engine.sampling.custom import DualCFGGuide, Sampler, SeededNoise, ZeroNoise
from atelier.engine.sampling.guidance import CFGDenoiser, DualCFGDenoiser
from atelier.engine.validate import check

STEPS = 3


def base(**ks: Any) -> dict[str, Any]:
    """Checkpoint, prompts, an empty latent and a KSampler ("ks") in ComfyUI's API format."""
    wf: dict[str, Any] = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny15.safetensors"}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "portrait photo", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["ckpt", 1]}},
        "ks": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 7,
                "steps": STEPS,
                "cfg": 5.0,
                "sampler_name": "euler_ancestral",
                "scheduler": "karras",
                "denoise": 1.0,
                "model": ["ckpt", 0],
                "positive": ["pos", 0],
                "negative": ["neg", 0],
                "latent_image": ["empty", 0],
            },
        },
    }
    wf["ks"]["inputs"].update(ks)
    return wf


def add_pieces(wf: dict[str, Any], *, sampler: str, scheduler: str, steps: int = STEPS, denoise: float = 1.0):
    wf["select"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler}}
    wf["sched"] = {
        "class_type": "BasicScheduler",
        "inputs": {"model": ["ckpt", 0], "scheduler": scheduler, "steps": steps, "denoise": denoise},
    }


def custom(
    seed: int, cfg: float, latent: list, *, add_noise: bool = True, sigmas: list | None = None
) -> dict:
    return {
        "class_type": "SamplerCustom",
        "inputs": {
            "model": ["ckpt", 0],
            "add_noise": add_noise,
            "noise_seed": seed,
            "cfg": cfg,
            "positive": ["pos", 0],
            "negative": ["neg", 0],
            "sampler": ["select", 0],
            "sigmas": sigmas or ["sched", 0],
            "latent_image": latent,
        },
    }


def advanced(noise: list, guider: list, latent: list, sigmas: list | None = None) -> dict:
    return {
        "class_type": "SamplerCustomAdvanced",
        "inputs": {
            "noise": noise,
            "guider": guider,
            "sampler": ["select", 0],
            "sigmas": sigmas or ["sched", 0],
            "latent_image": latent,
        },
    }


def cfg_guider(cfg: float) -> dict:
    return {
        "class_type": "CFGGuider",
        "inputs": {"model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0], "cfg": cfg},
    }


def values(ex, wf: dict, nodes: list[str], **run: Any) -> dict[str, tuple]:
    """Run up to ``nodes`` and read their output values back from the engine's cache."""
    res = ex.run(wf, outputs=nodes, **run)
    assert res.ok, (res.failure, res.errors)
    plan = ex.plan(check(wf, ex.registry, outputs=nodes, files=ex.folders).graph)
    return {n: ex.cache.get(plan.signatures[n]).outputs for n in nodes}


def latent(v: tuple, i: int = 0) -> torch.Tensor:
    return v[i]["samples"]


@pytest.mark.parametrize(
    ("sampler", "scheduler", "denoise"),
    [("euler_ancestral", "karras", 1.0), ("dpmpp_2m", "normal", 1.0), ("euler", "simple", 0.6)],
)
def test_sampler_custom_is_ksampler_bit_for_bit(
    engine_env, sampler: str, scheduler: str, denoise: float
) -> None:
    wf = base(sampler_name=sampler, scheduler=scheduler, denoise=denoise)
    # img2img at denoise < 1 starts from a latent that is not empty: the first KSampler's result
    wf["first"] = {**wf["ks"], "inputs": {**wf["ks"]["inputs"], "denoise": 1.0, "seed": 3}}
    src = ["first", 0] if denoise < 1 else ["empty", 0]
    wf["ks"]["inputs"]["latent_image"] = src
    add_pieces(wf, sampler=sampler, scheduler=scheduler, denoise=denoise)
    wf["sc"] = custom(7, 5.0, src)
    wf["noise"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 7}}
    wf["guide"] = cfg_guider(5.0)
    wf["adv"] = advanced(["noise", 0], ["guide", 0], src)
    v = values(engine_env, wf, ["ks", "sc", "adv", "empty"])
    want = latent(v["ks"])
    assert not torch.equal(want, latent(v["empty"]))
    assert torch.equal(latent(v["sc"]), want)
    assert torch.equal(latent(v["adv"]), want)


def test_noise_mask_runs_as_in_ksampler(engine_env) -> None:
    wf = base(seed=3)  # "ks" makes the picture to repaint part of
    wf["zero"] = {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 64, "height": 64}}
    wf["one"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 32, "height": 64}}
    wf["mask"] = {
        "class_type": "MaskComposite",
        "inputs": {"destination": ["zero", 0], "source": ["one", 0], "x": 0, "y": 0, "operation": "add"},
    }
    wf["masked"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["ks", 0], "mask": ["mask", 0]}}
    wf["ksm"] = {**wf["ks"], "inputs": {**wf["ks"]["inputs"], "seed": 9, "latent_image": ["masked", 0]}}
    add_pieces(wf, sampler="euler_ancestral", scheduler="karras")
    wf["sc"] = custom(9, 5.0, ["masked", 0])
    v = values(engine_env, wf, ["ksm", "sc", "ks"])
    out, before = latent(v["sc"]), latent(v["ks"])
    assert torch.equal(out, latent(v["ksm"]))
    assert torch.equal(out[..., 4:], before[..., 4:])  # the unmasked right half is kept exactly
    assert not torch.allclose(out[..., :4], before[..., :4], atol=1e-3)
    assert "noise_mask" in v["sc"][0] and "noise_mask" in v["sc"][1]


def test_other_seed_or_cfg_changes_the_custom_result(engine_env) -> None:
    wf = base()
    add_pieces(wf, sampler="euler_ancestral", scheduler="karras")
    wf["a"] = custom(7, 5.0, ["empty", 0])
    wf["b"] = custom(8, 5.0, ["empty", 0])
    wf["c"] = custom(7, 2.0, ["empty", 0])
    v = values(engine_env, wf, ["a", "b", "c"])
    assert not torch.equal(latent(v["a"]), latent(v["b"]))
    assert not torch.equal(latent(v["a"]), latent(v["c"]))


def test_disabled_noise_is_ksampler_advanceds_add_noise_disable(engine_env) -> None:
    wf = base(seed=3)  # "ks" makes a latent to start from
    add_pieces(wf, sampler="euler_ancestral", scheduler="normal")
    wf["ksa"] = {
        "class_type": "KSamplerAdvanced",
        "inputs": {
            "model": ["ckpt", 0],
            "add_noise": "disable",
            "noise_seed": 11,
            "steps": STEPS,
            "cfg": 4.0,
            "sampler_name": "euler_ancestral",
            "scheduler": "normal",
            "positive": ["pos", 0],
            "negative": ["neg", 0],
            "latent_image": ["ks", 0],
            "start_at_step": 0,
            "end_at_step": 10000,
            "return_with_leftover_noise": "disable",
        },
    }
    wf["sc"] = custom(11, 4.0, ["ks", 0], add_noise=False)  # the seed still drives the ancestral noise
    wf["sc_noisy"] = custom(11, 4.0, ["ks", 0], add_noise=True)
    wf["off"] = {"class_type": "DisableNoise", "inputs": {}}
    wf["guide"] = cfg_guider(4.0)
    wf["adv"] = advanced(["off", 0], ["guide", 0], ["ks", 0])
    wf["ksa0"] = {**wf["ksa"], "inputs": {**wf["ksa"]["inputs"], "noise_seed": 0}}  # DisableNoise's seed is 0
    v = values(engine_env, wf, ["ksa", "sc", "sc_noisy", "adv", "ksa0"])
    assert torch.equal(latent(v["sc"]), latent(v["ksa"]))
    assert not torch.equal(latent(v["sc_noisy"]), latent(v["ksa"]))
    assert torch.equal(latent(v["adv"]), latent(v["ksa0"]))


def test_split_sigmas_two_stages_are_ksampler_advanced_two_stages(engine_env) -> None:
    wf = base()
    add_pieces(wf, sampler="euler", scheduler="karras", steps=4)
    wf["split"] = {"class_type": "SplitSigmas", "inputs": {"sigmas": ["sched", 0], "step": 2}}
    wf["noise"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 5}}
    wf["off"] = {"class_type": "DisableNoise", "inputs": {}}
    wf["guide"] = cfg_guider(6.0)
    wf["hi"] = advanced(["noise", 0], ["guide", 0], ["empty", 0], sigmas=["split", 0])
    wf["lo"] = advanced(["off", 0], ["guide", 0], ["hi", 0], sigmas=["split", 1])
    stage = {
        "model": ["ckpt", 0],
        "noise_seed": 5,
        "steps": 4,
        "cfg": 6.0,
        "sampler_name": "euler",
        "scheduler": "karras",
        "positive": ["pos", 0],
        "negative": ["neg", 0],
    }
    wf["k1"] = {
        "class_type": "KSamplerAdvanced",
        "inputs": {
            **stage,
            "add_noise": "enable",
            "latent_image": ["empty", 0],
            "start_at_step": 0,
            "end_at_step": 2,
            "return_with_leftover_noise": "enable",
        },
    }
    wf["k2"] = {
        "class_type": "KSamplerAdvanced",
        "inputs": {
            **stage,
            "add_noise": "disable",
            "latent_image": ["k1", 0],
            "start_at_step": 2,
            "end_at_step": 10000,
            "return_with_leftover_noise": "disable",
        },
    }
    v = values(engine_env, wf, ["hi", "lo", "k1", "k2"])
    assert torch.equal(latent(v["hi"]), latent(v["k1"]))
    assert torch.equal(latent(v["lo"]), latent(v["k2"]))
    # part way down, the output still holds noise; the denoised prediction does not
    assert not torch.allclose(latent(v["hi"], 0), latent(v["hi"], 1), atol=1e-3)
    # after the last step (sigma 0) the output is the last prediction
    assert torch.allclose(latent(v["lo"], 0), latent(v["lo"], 1), atol=1e-5)


def test_no_sigmas_pass_the_latent_through(engine_env) -> None:
    wf = base(seed=3)
    add_pieces(wf, sampler="euler", scheduler="normal", denoise=0.0)
    wf["sc"] = custom(1, 5.0, ["ks", 0])
    v = values(engine_env, wf, ["sc", "ks"])
    assert torch.equal(latent(v["sc"]), latent(v["ks"]))
    assert torch.equal(latent(v["sc"], 1), latent(v["ks"]))


def test_flipped_sigmas_unsample_without_noise(engine_env) -> None:
    wf = base(seed=3)
    add_pieces(wf, sampler="euler", scheduler="normal")
    wf["flip"] = {"class_type": "FlipSigmas", "inputs": {"sigmas": ["sched", 0]}}
    wf["off"] = {"class_type": "DisableNoise", "inputs": {}}
    wf["guide"] = {"class_type": "BasicGuider", "inputs": {"model": ["ckpt", 0], "conditioning": ["pos", 0]}}
    wf["un"] = advanced(["off", 0], ["guide", 0], ["ks", 0], sigmas=["flip", 0])
    v = values(engine_env, wf, ["un", "ks", "flip", "guide"])
    sigmas, guide = v["flip"][0], v["guide"][0]
    assert float(sigmas[0]) < float(sigmas[-1])
    # Euler steps up the ascending schedule, by hand, from the latent itself (no noise added)
    x = latent(v["ks"]) * guide.model.latent_scale
    with guide.model.session():
        for s, s_next in zip(sigmas.tolist(), sigmas[1:].tolist(), strict=False):
            d = (x - guide.predict(x, torch.full((1,), s))) / s
            x = x + d * (s_next - s)
    want = x / guide.model.latent_scale
    assert torch.allclose(latent(v["un"]), want, rtol=1e-4, atol=1e-3)
    assert not torch.allclose(want, latent(v["ks"]), atol=1.0)


def test_progress_and_previews_as_for_ksampler(engine_env) -> None:
    wf = base()
    add_pieces(wf, sampler="euler", scheduler="normal")
    wf["noise"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 1}}
    wf["guide"] = cfg_guider(5.0)
    wf["adv"] = advanced(["noise", 0], ["guide", 0], ["empty", 0])
    events: list[E.Event] = []
    values(engine_env, wf, ["adv"], on_event=events.append)
    progress = [(e.value, e.max) for e in events if isinstance(e, E.Progress) and e.node == "adv"]
    assert progress == [(1, STEPS), (2, STEPS), (3, STEPS)]
    previews = [e for e in events if isinstance(e, E.Preview) and e.node == "adv"]
    assert previews and previews[-1].image[:2] == b"\xff\xd8"  # JPEG


def test_cancel_stops_the_custom_sampler_between_steps(engine_env) -> None:
    wf = base()
    add_pieces(wf, sampler="euler", scheduler="normal", steps=10)
    wf["sc"] = custom(1, 5.0, ["empty", 0])
    seen: list[E.Event] = []

    def on_event(e: E.Event) -> None:
        seen.append(e)
        if isinstance(e, E.Progress) and e.node == "sc" and e.value == 2:
            engine_env.interrupt()

    res = engine_env.run(wf, outputs=["sc"], on_event=on_event)
    assert res.status == "interrupted"
    assert [e.value for e in seen if isinstance(e, E.Progress) and e.node == "sc"] == [1, 2]
    assert values(engine_env, wf, ["sc"])["sc"]  # the engine keeps serving


def test_custom_pieces_are_cached_and_a_new_seed_reruns_only_what_depends_on_it(engine_env) -> None:
    wf = base()
    add_pieces(wf, sampler="euler_ancestral", scheduler="karras")
    wf["noise"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 1}}
    wf["guide"] = cfg_guider(5.0)
    wf["adv"] = advanced(["noise", 0], ["guide", 0], ["empty", 0])
    first = engine_env.run(wf, outputs=["adv"])
    assert first.ok and "guide" in first.executed
    again = engine_env.run(wf, outputs=["adv"])
    assert again.ok and again.executed == []
    wf["noise"]["inputs"]["noise_seed"] = 2
    reseeded = engine_env.run(wf, outputs=["adv"])
    assert reseeded.ok and sorted(reseeded.executed) == ["adv", "noise"]
    assert {"guide", "select", "sched"} <= set(reseeded.cached)


def test_carriers_are_checked_values(engine_env) -> None:
    wf = base()
    add_pieces(wf, sampler="dpmpp_2m", scheduler="karras", steps=5)
    wf["noise"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 9}}
    wf["off"] = {"class_type": "DisableNoise", "inputs": {}}
    wf["flip"] = {"class_type": "FlipSigmas", "inputs": {"sigmas": ["sched", 0]}}
    wf["ea"] = {"class_type": "SamplerEulerAncestral", "inputs": {"eta": 0.5, "s_noise": 1.0}}
    v = values(engine_env, wf, ["select", "noise", "off", "sched", "flip", "ea", "empty"])
    assert v["select"][0] == Sampler("dpmpp_2m")
    assert v["ea"][0] == Sampler("euler_ancestral", {"eta": 0.5, "s_noise": 1.0})
    assert v["noise"][0] == SeededNoise(9) and v["off"][0] == ZeroNoise(0)
    sig = v["sched"][0]
    assert sig.dtype == torch.float32 and sig.shape == (6,) and float(sig[-1]) == 0.0
    assert torch.equal(v["flip"][0][1:], sig.flip(0)[1:]) and float(v["flip"][0][0]) == pytest.approx(1e-4)
    empty = {"samples": latent(v["empty"])}
    assert torch.equal(
        SeededNoise(9).generate(empty), torch.randn(1, 4, 8, 8, generator=torch.manual_seed(9))
    )
    with pytest.raises(ValueError, match="unknown sampler"):
        Sampler("no_such_sampler")


# -- dual CFG against the model's own predictions ------------------------------------------------------


@pytest.fixture()
def tiny(engine_env, models_root: Path):
    model, clip, _ = load_checkpoint_handles(
        engine_env.models, models_root / "checkpoints" / "tiny15.safetensors"
    )

    def cond(text: str):
        from atelier.engine.sampling.conditioning import conditioning

        emb, pooled = clip.encode(text)
        return conditioning(emb, pooled)

    return model, cond("a portrait"), cond("a painting"), cond("blurry")


@pytest.mark.parametrize("nested", [False, True])
def test_dual_cfg_against_the_three_predictions(tiny, nested: bool) -> None:
    model, c1, c2, neg = tiny
    x = torch.randn(1, 4, 8, 8, generator=torch.manual_seed(0)) * 3.0
    sigma = torch.tensor([3.0])
    with model.session():
        p1, p2, n = (CFGDenoiser(model, c, [], 1.0)(x, sigma) for c in (c1, c2, neg))
        dual = DualCFGDenoiser(model, c1, c2, neg, 2.5, 4.0, nested=nested)
        got = dual(x, sigma)
    if nested:
        want = n + 4.0 * ((p2 + 2.5 * (p1 - p2)) - n)
    else:
        want = n + 4.0 * (p2 - n) + 2.5 * (p1 - p2)
    assert dual.model_calls == 1  # the three prompts share one forward pass
    guide = DualCFGGuide(model, c1, c2, neg, 2.5, 4.0, nested)
    with model.session():
        assert torch.equal(guide.predict(x, sigma), got)
    assert not torch.allclose(p1, p2, atol=1e-4) and not torch.allclose(p2, n, atol=1e-4)
    assert torch.allclose(got, want, atol=1e-4)


def test_dual_cfg_skips_what_cancels_at_cfg_one(tiny) -> None:
    model, c1, c2, neg = tiny
    x = torch.randn(1, 4, 8, 8, generator=torch.manual_seed(1))
    sigma = torch.tensor([2.0])
    with model.session():
        p1, p2 = (CFGDenoiser(model, c, [], 1.0)(x, sigma) for c in (c1, c2))
        no_negative = DualCFGDenoiser(model, c1, c2, [], 3.0, 1.0)
        only_cond1 = DualCFGDenoiser(model, c1, [], [], 1.0, 1.0)
        a, b = no_negative(x, sigma), only_cond1(x, sigma)
    assert len(no_negative.entries) == 2 and len(only_cond1.entries) == 1
    assert torch.allclose(a, p2 + 3.0 * (p1 - p2), atol=1e-4)
    assert torch.allclose(b, p1, atol=1e-5)
    with pytest.raises(ValueError, match="negative conditioning is empty"):
        DualCFGDenoiser(model, c1, c2, [], 3.0, 2.0)


def test_dual_cfg_guider_node_runs_and_reduces_to_cfg(engine_env) -> None:
    wf = base()
    add_pieces(wf, sampler="euler", scheduler="normal")
    wf["noise"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 4}}
    wf["guide"] = cfg_guider(5.0)
    wf["dual"] = {
        "class_type": "DualCFGGuider",
        "inputs": {
            "model": ["ckpt", 0],
            "cond1": ["pos", 0],
            "cond2": ["neg", 0],
            "negative": ["neg", 0],
            "cfg_conds": 5.0,
            "cfg_cond2_negative": 3.0,
            "style": "regular",
        },
    }
    wf["basic"] = {"class_type": "BasicGuider", "inputs": {"model": ["ckpt", 0], "conditioning": ["pos", 0]}}
    wf["cfg1"] = cfg_guider(1.0)
    wf["a"] = advanced(["noise", 0], ["guide", 0], ["empty", 0])
    wf["b"] = advanced(["noise", 0], ["dual", 0], ["empty", 0])
    wf["c"] = advanced(["noise", 0], ["basic", 0], ["empty", 0])
    wf["d"] = advanced(["noise", 0], ["cfg1", 0], ["empty", 0])
    v = values(engine_env, wf, ["a", "b", "c", "d"])
    # cond2 = negative: n + cfg2 (n - n) + cfg1 (p - n) is plain CFG at cfg1
    assert torch.allclose(latent(v["a"]), latent(v["b"]), atol=1e-3)
    assert torch.equal(latent(v["c"]), latent(v["d"]))  # BasicGuider is CFG 1
    assert not torch.allclose(latent(v["a"]), latent(v["c"]), atol=1e-3)


def test_add_noise_manual_sigmas_and_percent_to_sigma(engine_env) -> None:
    wf = base(seed=3)
    wf["manual"] = {"class_type": "ManualSigmas", "inputs": {"sigmas": "8.0, 3.5, 0.5"}}
    wf["noise"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 12}}
    for name, src in (("noisy", ["ks", 0]), ("noisy0", ["empty", 0])):
        wf[name] = {
            "class_type": "AddNoise",
            "inputs": {
                "model": ["ckpt", 0],
                "noise": ["noise", 0],
                "sigmas": ["manual", 0],
                "latent_image": src,
            },
        }
    for name, percent, actual in (
        ("p0", 0.0, True),
        ("p1", 1.0, True),
        ("p_half", 0.5, False),
        ("p0c", 0.0, False),
    ):
        wf[name] = {
            "class_type": "SamplingPercentToSigma",
            "inputs": {"model": ["ckpt", 0], "sampling_percent": percent, "return_actual_sigma": actual},
        }
    wf["guide"] = cfg_guider(1.0)  # reaches the model handle
    nodes = ["noisy", "noisy0", "ks", "manual", "p0", "p1", "p_half", "p0c", "guide"]
    v = values(engine_env, wf, nodes)
    assert v["manual"][0].tolist() == [8.0, 3.5, 0.5]
    noise = torch.randn(1, 4, 8, 8, generator=torch.manual_seed(12))
    scale = v["guide"][0].model.latent_scale
    src = latent(v["ks"])
    assert torch.allclose(latent(v["noisy"]), (src * scale + noise * 7.5) / scale, atol=1e-4)
    assert torch.allclose(
        latent(v["noisy0"]), noise * 7.5 / scale, atol=1e-5
    )  # an empty latent is not scaled
    ms = v["guide"][0].model.sampling
    assert v["p0"][0] == ms.sigma_max and v["p1"][0] == ms.sigma_min
    assert v["p0c"][0] > 1e6  # the interval-check value at the very start
    assert v["p_half"][0] == pytest.approx(float(ms.sigma(torch.tensor(0.5 * (ms.num_timesteps - 1)))))
    assert ms.sigma_min < v["p_half"][0] < ms.sigma_max
