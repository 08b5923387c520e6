"""The fast path on CUDA in fp16 against the plain path (skipped without a GPU; ``bench/gpu_check.sh`` runs it).

Tolerances on the final latent of a 4-step run of the tiny SD1.5 (relative L2 against the plain fp16 path):
fast eager 2e-2 and compiled (inductor, CUDA graphs) 2e-2 -- fp16 with other convolution algorithms
(cudnn.benchmark, channels_last) and fused kernels; a different seed differs by far more (checked). The
step loop runs under ``torch.cuda.set_sync_debug_mode("error")`` from its second step.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from atelier.engine.models.checkpoint import load_checkpoint
from atelier.engine.models.fast_path import FastPath, fast_unet, prepare_checkpoint, vae_fallback
from atelier.engine.models.handles import handles_from_checkpoint
from atelier.engine.models.patches import WeightPatch
from atelier.engine.models.tiny import write_tiny_checkpoint
from atelier.engine.sampling.conditioning import CondEntry
from atelier.engine.sampling.sync_check import no_host_sync
from tests.sd.test_sd_fast_path import rel
from tests.sd.test_sd_fast_path import run as cpu_run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
FP16 = torch.float16
TOL = 2e-2


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint("sd15", tmp_path_factory.mktemp("fastcuda") / "tiny15.safetensors", seed=0)


@pytest.fixture(scope="module")
def plain(ckpt: Path):
    return handles_from_checkpoint(load_checkpoint(ckpt, device="cuda", dtype=FP16), "plain")


@pytest.fixture(scope="module")
def conds(plain):
    clip = plain[1]
    return [CondEntry(clip.encode("a portrait, soft light")[0])], [CondEntry(clip.encode("blurry")[0])]


#: the CPU tests' run at 32 px, on the GPU
run = functools.partial(cpu_run, size=32, device="cuda")


def guarded(model, conds, sampler: str) -> torch.Tensor:
    """A run whose steps after the first may not synchronise with the device (the result stays there)."""
    with no_host_sync() as guard:
        out = run(model, conds, sampler=sampler, callback=lambda *a: guard.arm())
    assert not guard.refused
    return out


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "euler_ancestral"])
def test_fast_eager_fp16_matches_plain_without_syncs(ckpt, plain, conds, sampler) -> None:
    model = handles_from_checkpoint(
        prepare_checkpoint(load_checkpoint(ckpt, device="cuda", dtype=FP16), FastPath())
    )[0]
    reference = run(plain[0], conds, sampler=sampler)
    out = guarded(model, conds, sampler)
    print(f"fast eager fp16 {sampler}: relative L2 {rel(out, reference):.2e}")
    assert torch.isfinite(out).all() and rel(out, reference) < TOL
    assert rel(run(plain[0], conds, sampler=sampler, seed=2), reference) > 10 * TOL


def test_compiled_cudagraphs_fp16_matches_plain_and_follows_loras(ckpt, plain, conds) -> None:
    torch._dynamo.reset()
    loaded = prepare_checkpoint(
        load_checkpoint(ckpt, device="cuda", dtype=FP16), FastPath(compile="reduce-overhead")
    )
    model = handles_from_checkpoint(loaded)[0]
    reference = run(plain[0], conds)
    run(model, conds)  # compiles, warms up and records the CUDA graph
    out = guarded(model, conds, "euler")  # replays: no host sync inside the loop
    print(f"compiled reduce-overhead fp16: relative L2 {rel(out, reference):.2e}")
    assert rel(out, reference) < TOL
    state = fast_unet(loaded.unet)
    assert state.compiled_calls >= 8 and state.eager_calls == 0
    name = "down_blocks.0.attentions.0.proj_in.weight"
    w = loaded.unet.get_parameter(name)
    g = torch.Generator().manual_seed(3)
    lora = {
        name: (WeightPatch(torch.randn(w.shape[0], 2, generator=g), torch.randn(2, w.shape[1], generator=g)),)
    }
    with_lora = run(model.with_patches(lora), conds)
    lora_ref = run(plain[0].with_patches(lora), conds)
    print(
        f"compiled + LoRA: relative L2 {rel(with_lora, lora_ref):.2e}, LoRA effect {rel(with_lora, out):.2e}"
    )
    assert rel(with_lora, lora_ref) < TOL and rel(with_lora, out) > 10 * TOL
    assert len(state.compiled_shapes) == 1


def test_fp16_vae_nan_falls_back_on_cuda(ckpt) -> None:
    loaded = load_checkpoint(ckpt, device="cuda", dtype=FP16)
    with torch.no_grad():
        loaded.vae.decoder.conv_in.weight.mul_(1e5)
        loaded.vae.decoder.conv_in.bias.mul_(1e5)
    vae = handles_from_checkpoint(loaded)[2]
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    image = vae.decode(latent)
    assert torch.isfinite(image).all() and vae_fallback(vae.vae) in (torch.bfloat16, torch.float32)
