"""The GPU fast path keeps the picture: each optimisation, forced on here on the CPU, against the plain path.

Tolerances (on the final latent of a 4-step run of the tiny SD1.5, compared with the plain fp32 path):
channels_last and a dynamo-compiled UNet 1e-4 relative (float reassociation only), bfloat16 weights 8%
relative L2 (bf16 has 8 bits of mantissa). The step loop is run under a guard that refuses every host read
of a tensor from the second step on (no per-step sync). The inductor compile runs with ``--runslow`` (it
takes minutes on two CPU cores); ``bench/gpu_check.sh`` runs the same checks on CUDA in fp16.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest
import torch

from atelier.engine.models.checkpoint import load_checkpoint
from atelier.engine.models.fast_path import (
    FastPath,
    fast_unet,
    prepare_checkpoint,
    resolve_fast_path,
    sdpa_everywhere,
    vae_fallback,
)
from atelier.engine.models.handles import handles_from_checkpoint
from atelier.engine.models.patches import WeightPatch
from atelier.engine.models.tiny import write_tiny_checkpoint
from atelier.engine.runtime import EngineConfig, add_engine_arguments, build_engine, config_from_args
from atelier.engine.sampling.conditioning import CondEntry
from atelier.engine.sampling.ksampler import sample
from atelier.engine.sampling.sync_check import HostSync, no_host_sync


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint("sd15", tmp_path_factory.mktemp("fast") / "tiny15.safetensors", seed=0)


@pytest.fixture(scope="module")
def plain(ckpt: Path):
    return handles_from_checkpoint(load_checkpoint(ckpt), "plain")


@pytest.fixture(scope="module")
def fast(ckpt: Path):
    """The same checkpoint prepared for the fast path (eager): (loaded, MODEL handle)."""
    loaded = prepare_checkpoint(load_checkpoint(ckpt), FastPath())
    return loaded, handles_from_checkpoint(loaded, "fast")[0]


@pytest.fixture(scope="module")
def conds(plain):
    _, clip, _ = plain
    return [CondEntry(clip.encode("a portrait, soft light")[0])], [CondEntry(clip.encode("blurry")[0])]


def run(
    model,
    conds,
    *,
    seed: int = 1,
    sampler: str = "euler",
    size: int = 16,
    callback=None,
    cond=None,
    device: str = "cpu",
):
    """A 4-step KSampler run of ``model`` (latents and result on ``device``)."""
    pos, neg = conds
    with model.session():
        return sample(
            model,
            torch.zeros(1, 4, size, size),
            seed=seed,
            steps=4,
            cfg=7.0,
            sampler_name=sampler,
            scheduler="normal",
            positive=cond or pos,
            negative=neg,
            device=device,
            callback=callback,
        )


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative L2 distance of ``a`` to ``b``, in float32 on the host."""
    a, b = a.float().cpu(), b.float().cpu()
    return float((a - b).norm() / b.norm())


def test_channels_last_and_sdpa_keep_the_picture(fast, plain, conds) -> None:
    loaded, model = fast
    assert sdpa_everywhere(loaded.unet)
    assert loaded.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert not plain[0].unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    reference = run(plain[0], conds)
    out = run(model, conds)
    assert rel(out, reference) < 1e-4
    assert fast_unet(loaded.unet).eager_calls > 0  # the call went through the fast path
    assert rel(run(model, conds, seed=2), reference) > 0.1  # live: another seed, another picture


def test_bfloat16_weights_within_tolerance(ckpt, plain, conds) -> None:
    loaded = prepare_checkpoint(load_checkpoint(ckpt, dtype=torch.bfloat16), FastPath())
    model, _, _ = handles_from_checkpoint(loaded, "bf16")
    assert model.dtype == torch.bfloat16
    reference = run(plain[0], conds)
    out = run(model, conds)
    assert out.dtype == torch.float32 and rel(out, reference) < 0.08
    assert rel(out, run(plain[0], conds, seed=2)) > 0.3  # the tolerance is far below a real difference


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "dpmpp_2m", "heun", "uni_pc", "lms"])
def test_step_loop_reads_nothing_back_from_the_device(fast, conds, sampler: str) -> None:
    # SDE samplers are left out: their Brownian tree (torchsde) compares its CPU time tensors on the host
    model = fast[1]
    area = CondEntry(conds[0][0].embedding, area=(8, 8, 4, 4), strength=0.7)
    steps: list[int] = []
    with no_host_sync() as guard:

        def armed(step: int, total: int, x, denoised) -> None:
            steps.append(step)
            guard.arm()  # from the second step on, any host read of a tensor raises

        run(model, conds, sampler=sampler, callback=armed, cond=[*conds[0], area])
    assert steps[-1] == 4 and not guard.refused


def test_sync_guard_catches_a_per_step_read(plain, conds) -> None:
    model = plain[0].with_wrapper(lambda call_next, call: call_next(call) * float(call.sigma[0] > -1))
    with no_host_sync() as guard, pytest.raises(HostSync, match="__float__|__bool__"):
        run(model, conds, callback=lambda *a: guard.arm())
    assert guard.refused


def _counting_backend(compiles: list[int]):
    def backend(gm: torch.fx.GraphModule, example_inputs) -> object:
        compiles.append(len(example_inputs))
        return gm.forward

    return backend


def test_compiled_unet_keeps_the_picture_loras_and_shape_buckets(ckpt, plain, conds) -> None:
    torch._dynamo.reset()
    compiles: list[int] = []
    fast = FastPath(compile="default", backend=_counting_backend(compiles), max_shapes=1)
    loaded = prepare_checkpoint(load_checkpoint(ckpt), fast)
    model, _, _ = handles_from_checkpoint(loaded, "compiled")
    state = fast_unet(loaded.unet)
    reference = run(plain[0], conds)
    assert rel(run(model, conds), reference) < 1e-4
    assert len(compiles) == 1 and state.compiled_calls == 4 and state.eager_calls == 0

    # a LoRA patches weights in place: the compiled graph stays valid and sees the new weights
    name = "down_blocks.0.attentions.0.proj_in.weight"
    w = loaded.unet.get_parameter(name)
    g = torch.Generator().manual_seed(3)
    lora = {
        name: (WeightPatch(torch.randn(w.shape[0], 2, generator=g), torch.randn(2, w.shape[1], generator=g)),)
    }
    with_lora = run(model.with_patches(lora), conds)
    assert rel(with_lora, run(plain[0].with_patches(lora), conds)) < 1e-4
    assert rel(with_lora, reference) > 1e-3  # the LoRA changes the picture
    assert len(compiles) == 1  # ... without a recompile

    # a wrapper that swaps an attention processor for the call (as image prompts do) runs eagerly
    attn = next(m for n, m in loaded.unet.named_modules() if n.endswith("attn2"))

    def swapping(call_next, call):
        saved, attn.processor = attn.processor, type(attn.processor)()
        try:
            return call_next(call)
        finally:
            attn.processor = saved

    eager = state.eager_calls
    assert rel(run(model.with_wrapper(swapping), conds), reference) < 1e-4
    assert len(compiles) == 1 and state.eager_calls == eager + 4
    eager = state.eager_calls
    assert rel(run(model, conds, size=24), run(plain[0], conds, size=24)) < 1e-4
    assert len(compiles) == 1 and state.eager_calls == eager + 4  # past max_shapes: eager, no recompile
    assert state.compiled_shapes == [((2, 4, 16, 16), (2, 77, 32), None, torch.float32)]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None, reason="no C++ compiler")
def test_inductor_compiled_unet_keeps_the_picture(ckpt, plain, conds, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ATELIER_COMPILE_CACHE", str(tmp_path / "compile"))
    torch._dynamo.reset()
    loaded = prepare_checkpoint(load_checkpoint(ckpt), FastPath(compile="default"))
    model, _, _ = handles_from_checkpoint(loaded, "inductor")
    assert rel(run(model, conds), run(plain[0], conds)) < 1e-4
    written = [p for p in (tmp_path / "compile" / "inductor").rglob("*") if p.is_file()]
    assert written, "inductor wrote nothing into the compile cache folder"


def _overflowing_vae(ckpt: Path, dtype: torch.dtype):
    """The tiny VAE with its decoder's first convolution scaled so that activations pass fp16's range
    (65504) but stay far inside bf16's and fp32's; the group norms after it take the scale out again."""
    loaded = load_checkpoint(ckpt, dtype=dtype)
    with torch.no_grad():
        loaded.vae.decoder.conv_in.weight.mul_(1e5)
        loaded.vae.decoder.conv_in.bias.mul_(1e5)
    return handles_from_checkpoint(loaded, str(dtype))[2]


def test_fp16_vae_nan_is_detected_and_remembered(ckpt, plain) -> None:
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    reference = _overflowing_vae(ckpt, torch.float32).decode(latent)
    assert torch.isfinite(reference).all()
    vae = _overflowing_vae(ckpt, torch.float16)
    with torch.inference_mode():
        raw = vae.vae.decode(latent.half(), return_dict=False)[0]
    assert not torch.isfinite(raw).all()  # the forced overflow is real in fp16
    calls: list[torch.dtype] = []
    vae.vae.register_forward_pre_hook(lambda m, a: calls.append(vae.dtype))
    decode = vae.vae.decode
    vae.vae.decode = lambda z, **kw: (calls.append(z.dtype), decode(z, **kw))[1]
    image = vae.decode(latent)
    assert calls == [torch.float16, torch.bfloat16]  # decoded again after the NaN check
    assert vae.dtype == torch.bfloat16 and vae_fallback(vae.vae) == torch.bfloat16
    assert torch.isfinite(image).all() and (image - reference).abs().max() < 0.05
    calls.clear()
    vae.decode(latent)
    assert calls == [torch.bfloat16]  # remembered: no fp16 attempt any more
    # an fp16 VAE that does not overflow stays fp16
    fine = handles_from_checkpoint(load_checkpoint(ckpt, dtype=torch.float16), "fine")[2]
    fine.decode(latent)
    assert fine.dtype == torch.float16 and vae_fallback(fine.vae) is None
    broken = latent.clone()
    broken[0, 0, 0, 0] = float("nan")
    assert not torch.isfinite(fine.decode(broken)).all()  # a NaN latent is not the VAE's fault
    assert fine.dtype == torch.float16 and vae_fallback(fine.vae) is None


def test_engine_options_switch_the_fast_path(ckpt, tmp_path) -> None:
    assert resolve_fast_path("cuda") == FastPath() and resolve_fast_path("cuda:1", compile="max-autotune")
    assert resolve_fast_path("cpu") is None and resolve_fast_path("cuda", enabled=False) is None
    with pytest.raises(ValueError, match="unknown compile mode 'fastest'"):
        resolve_fast_path("cuda", compile="fastest")
    p = argparse.ArgumentParser()
    add_engine_arguments(p)
    assert config_from_args(p.parse_args(["--no-fast-path"])).fast_path is False
    assert config_from_args(p.parse_args(["--compile"])).compile == "reduce-overhead"
    assert config_from_args(p.parse_args(["--compile=reduce-overhead"])).compile == "reduce-overhead"
    with pytest.raises(ValueError, match="unknown --compile mode 'wf.json'"):
        config_from_args(p.parse_args(["--compile", "wf.json"]))

    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    shutil.copy(ckpt, tmp_path / "models" / "checkpoints" / "t.safetensors")
    dirs = {"models_dir": tmp_path / "models", "output_dir": tmp_path / "o", "temp_dir": tmp_path / "t"}
    assert build_engine(EngineConfig(device="cpu", **dirs)).models.fast is None
    engine = build_engine(EngineConfig(device="cpu", fast_path=True, compile="default", **dirs))
    assert engine.models.fast == FastPath(compile="default")
    from atelier.engine.models.handles import load_checkpoint_handles

    model, _, _ = load_checkpoint_handles(
        engine.models, tmp_path / "models" / "checkpoints" / "t.safetensors"
    )
    assert fast_unet(model.unet) is not None and fast_unet(model.unet).fast.compile == "default"
