"""Inpainting checkpoints (9-channel UNets): detection from shapes, the concatenated inputs built by the
MODEL handle's core wrapper (against tensors built by hand), live tiny SD1.5 and SDXL inpainting models,
and the nodes that feed them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from atelier.engine.imaging.checks import InputError
from atelier.engine.models.detect import detect_checkpoint
from atelier.engine.models.errors import CheckpointError
from atelier.engine.models.handles import ModelHandle, VaeHandle, load_checkpoint_handles
from atelier.engine.models.inpaint import BLANK_LATENT, InpaintConcat
from atelier.engine.models.tiny import write_tiny_checkpoint
from atelier.engine.sampling.conditioning import ConcatImage, CondEntry
from atelier.engine.sampling.guidance import ModelCall, SamplingInputs
from atelier.engine.sampling.runner import run_sampler
from atelier.nodes.inpaint import InpaintModelConditioning
from atelier.nodes.vae import VAEEncodeForInpaint

SCALE = 0.18215


def _ckpt(models_root: Path, name: str) -> Path:
    return models_root / "checkpoints" / name


@pytest.fixture()
def inpaint15(engine, models_root: Path):
    model, clip, vae = load_checkpoint_handles(
        engine.models, _ckpt(models_root, "tiny15-inpaint.safetensors")
    )
    emb, _ = clip.encode("a portrait, detailed face")
    return model, vae, CondEntry(emb)


# -- detection -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["sd15", "sd2", "sdxl"])
def test_inpainting_checkpoints_are_detected_from_shapes(
    models_root: Path, tmp_path: Path, arch: str
) -> None:
    path = _ckpt(models_root, f"tiny{'15' if arch == 'sd15' else 'xl'}-inpaint.safetensors")
    if arch == "sd2":
        path = write_tiny_checkpoint("sd2", tmp_path / "sd2-inpaint.safetensors", inpaint=True)
    info = detect_checkpoint(path)
    assert info.family == arch and info.is_inpaint
    assert info.unet_config["in_channels"] == 9 and info.unet_config["out_channels"] == 4
    assert not detect_checkpoint(_ckpt(models_root, "tiny15.safetensors")).is_inpaint


def test_other_input_channel_counts_are_refused_clearly(models_root: Path, tmp_path: Path) -> None:
    sd = load_file(str(_ckpt(models_root, "tiny15.safetensors")))
    key = "model.diffusion_model.input_blocks.0.0.weight"
    sd[key] = torch.zeros(sd[key].shape[0], 8, 3, 3)  # InstructPix2Pix-style
    save_file(sd, str(tmp_path / "ip2p.safetensors"))
    with pytest.raises(CheckpointError, match=r"8 input channels .* inpainting \(9"):
        detect_checkpoint(tmp_path / "ip2p.safetensors")


# -- the concatenated inputs ----------------------------------------------------------------------------


def _capture(call: ModelCall, wrapper: InpaintConcat) -> torch.Tensor:
    seen: list[torch.Tensor] = []

    def core(c: ModelCall) -> torch.Tensor:
        seen.append(c.x)
        return c.x[:, :4]

    wrapper(core, call)
    return seen[0]


def _call(entries: tuple[CondEntry, ...], batch: int, area=(8, 8, 0, 0), sampling=None) -> ModelCall:
    k = len(entries)
    x = torch.randn(k * batch, 4, area[0], area[1])
    return ModelCall(
        x=x,
        timestep=torch.zeros(k * batch),
        context=torch.zeros(k * batch, 77, 32),
        added=None,
        sigma=torch.ones(k * batch),
        entries=entries,
        negative=(False,) * k,
        batch=batch,
        area=area,
        sampling=sampling,
    )


def _blocks(values: list[list[float]], cell: int) -> torch.Tensor:
    """A mask whose cells are constant over cell x cell pixels: bilinear resizing to cells is exact."""
    t = torch.tensor(values)
    return t.repeat_interleave(cell, 0).repeat_interleave(cell, 1)


def test_without_inpaint_inputs_the_model_paints_everything() -> None:
    entry = CondEntry(torch.zeros(1, 77, 32))
    x = _capture(_call((entry,), batch=2), InpaintConcat(SCALE))
    assert x.shape == (2, 9, 8, 8)
    assert torch.equal(x[:, 4], torch.ones(2, 8, 8))
    for c, v in enumerate(BLANK_LATENT):
        assert torch.allclose(x[:, 5 + c], torch.full((2, 8, 8), v))


def test_a_plain_inpaint_latent_gives_its_own_latent_and_rounded_noise_mask() -> None:
    latent = torch.randn(1, 4, 8, 8)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:5, 3:7] = 0.7  # rounds to 1
    mask[..., 6:, :] = 0.4  # rounds to 0
    sampling = SamplingInputs(latent_image=latent, denoise_mask=mask, sigmas=torch.tensor([1.0, 0.0]))
    x = _capture(_call((CondEntry(torch.zeros(1, 77, 32)),), 1, sampling=sampling), InpaintConcat(SCALE))
    assert torch.equal(x[:, 4:5], mask.round()) and torch.equal(x[:, 5:], latent)


def test_conditioning_concat_wins_and_is_cut_to_the_call() -> None:
    raw = torch.randn(1, 4, 8, 8)
    cond_mask = _blocks([[1.0 if (i + j) % 3 == 0 else 0.0 for j in range(8)] for i in range(8)], 8)[
        None, None
    ]
    run_mask = torch.ones(2, 1, 8, 8)
    sampling = SamplingInputs(
        latent_image=torch.randn(2, 4, 8, 8), denoise_mask=run_mask, sigmas=torch.ones(2)
    )
    with_mask = CondEntry(torch.zeros(1, 77, 32), concat=ConcatImage(raw, cond_mask))
    latent_only = CondEntry(torch.zeros(1, 77, 32), concat=ConcatImage(raw * 2, None))
    plain = CondEntry(torch.zeros(1, 77, 32))
    area = (4, 3, 2, 5)  # h, w, y, x
    x = _capture(
        _call((with_mask, latent_only, plain), 2, area=area, sampling=sampling), InpaintConcat(SCALE)
    )
    assert x.shape == (6, 9, 4, 3)
    cut = (slice(None), slice(None), slice(2, 6), slice(5, 8))
    small_mask = cond_mask[:, :, ::8, ::8]
    # entry 1: its own mask (resized to cells, rounded) and latent (scaled), repeated to the batch
    assert torch.equal(x[0:2, 4:5], small_mask.expand(2, -1, -1, -1)[cut])
    assert torch.allclose(x[0:2, 5:], (raw * SCALE).expand(2, -1, -1, -1)[cut])
    # entry 2: no mask of its own: the run's noise mask, with its own latent
    assert torch.equal(x[2:4, 4:5], run_mask[cut]) and torch.allclose(
        x[2:4, 5:], (raw * 2 * SCALE).expand(2, -1, -1, -1)[cut]
    )
    # entry 3: the run's latent and mask
    assert torch.equal(x[4:6, 5:], sampling.latent_image[cut])


def test_a_latent_of_another_family_is_refused() -> None:
    entry = CondEntry(
        torch.zeros(1, 77, 32), concat=ConcatImage(torch.zeros(1, 16, 8, 8), torch.ones(1, 1, 8, 8))
    )
    with pytest.raises(ValueError, match="16 channels but this model's latent has 4"):
        _capture(_call((entry,), 1), InpaintConcat(SCALE))


# -- live tiny inpainting models ----------------------------------------------------------------------


def test_the_handle_concatenates_innermost_and_the_unet_sees_nine_channels(inpaint15) -> None:
    model, _, entry = inpaint15
    assert model.in_channels == 9 and len(model.core_wrappers) == 1
    seen: dict[str, int] = {}

    def patch(call_next, c: ModelCall):  # a patch (ControlNet-like) sees the model's usual 4 channels
        seen["patch"] = c.x.shape[1]
        return call_next(c)

    hook = model.unet.conv_in.register_forward_pre_hook(lambda m, a: seen.__setitem__("unet", a[0].shape[1]))
    try:
        out = model.with_wrapper(patch).apply_model(_call((entry,), 1))
    finally:
        hook.remove()
    assert seen == {"patch": 4, "unet": 9} and out.shape == (1, 4, 8, 8)


def test_the_masked_picture_changes_the_prediction(inpaint15) -> None:
    model, _, entry = inpaint15
    call = _call((entry,), 1)
    a = model.apply_model(
        call.replace(
            entries=(entry.replace(concat=ConcatImage(torch.zeros(1, 4, 8, 8), torch.ones(1, 1, 8, 8))),)
        )
    )
    b = model.apply_model(
        call.replace(
            entries=(entry.replace(concat=ConcatImage(torch.ones(1, 4, 8, 8), torch.ones(1, 1, 8, 8))),)
        )
    )
    c = model.apply_model(
        call.replace(
            entries=(entry.replace(concat=ConcatImage(torch.ones(1, 4, 8, 8), torch.zeros(1, 1, 8, 8))),)
        )
    )
    assert not torch.allclose(a, b, atol=1e-4) and not torch.allclose(b, c, atol=1e-4)


def _picture(h: int = 64, w: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, h, w, 3, generator=torch.Generator().manual_seed(seed))


def test_inpaint_model_conditioning_is_comfyuis(inpaint15, ctx) -> None:
    model, vae, entry = inpaint15
    pixels = _picture(68, 70)  # cut to 64 x 64 around the centre
    mask = torch.zeros(1, 68, 70)
    mask[:, 20:40, 10:50] = 1.0
    mask[:, 50:52, :] = 0.3
    pos, neg, latent = InpaintModelConditioning().run(
        ctx, positive=[entry], negative=[entry], vae=vae, pixels=pixels, mask=mask, noise_mask=True
    )
    cut_pixels, cut_mask = pixels[:, 2:66, 3:67], mask[:, 2:66, 3:67]
    assert torch.allclose(latent["samples"], vae.encode(cut_pixels))
    assert torch.equal(latent["noise_mask"], cut_mask[:, None])  # at pixel resolution, not rounded
    greyed = np.where(cut_mask.numpy()[..., None].round() == 1.0, 0.5, cut_pixels.numpy())
    concat = pos[0].concat
    assert concat is not None and neg[0].concat is concat and entry.concat is None
    assert torch.allclose(concat.latent, vae.encode(torch.from_numpy(greyed).float()), atol=1e-5)
    assert torch.equal(concat.mask, cut_mask[:, None])
    _, _, no_mask = InpaintModelConditioning().run(
        ctx,
        positive=[entry],
        negative=[entry],
        vae=vae,
        pixels=pixels,
        mask=mask[:, ::2, ::2],
        noise_mask=False,
    )
    assert "noise_mask" not in no_mask  # and a half-size mask is resized to the picture
    with pytest.raises(
        InputError, match=r"InpaintModelConditioning: input 'mask' is 70x30 but 'pixels' is 70x68"
    ):
        InpaintModelConditioning().run(
            ctx,
            positive=[entry],
            negative=[entry],
            vae=vae,
            pixels=pixels,
            mask=mask[:, :30],
            noise_mask=True,
        )
    with pytest.raises(InputError, match=r"InpaintModelConditioning: input 'pixels' has 2 channels"):
        InpaintModelConditioning().run(
            ctx,
            positive=[entry],
            negative=[entry],
            vae=vae,
            pixels=pixels[..., :2],
            mask=mask,
            noise_mask=True,
        )


def test_vae_encode_for_inpaint_greys_the_mask_and_grows_the_noise_mask(inpaint15, ctx) -> None:
    _, vae, _ = inpaint15
    pixels, mask = _picture(), torch.zeros(1, 64, 64)
    mask[:, 30:34, 30:34] = 1.0
    out = VAEEncodeForInpaint().run(ctx, pixels=pixels, vae=vae, mask=mask, grow_mask_by=6)
    greyed = pixels.clone()
    greyed[:, 30:34, 30:34] = 0.5
    assert torch.allclose(out["samples"], vae.encode(greyed), atol=1e-5)
    grown = out["noise_mask"][0, 0]
    rows = torch.nonzero(grown.any(dim=1)).flatten()
    assert (int(rows[0]), int(rows[-1])) == (28, 36)  # ComfyUI's 6-wide box: 2 up, ceil(5 / 2) = 3 down


def _sample(model: ModelHandle, latent: dict, entry: CondEntry, ctx, seed: int = 1) -> dict:
    return run_sampler(
        ctx,
        model,
        latent,
        [entry],
        [entry],
        seed=seed,
        steps=3,
        cfg=2.0,
        sampler_name="euler",
        scheduler="normal",
    )


def test_sd15_and_sdxl_inpainting_models_sample_live(engine, models_root: Path, ctx) -> None:
    for name in ("tiny15-inpaint.safetensors", "tinyxl-inpaint.safetensors"):
        model, clip, vae = load_checkpoint_handles(engine.models, _ckpt(models_root, name))
        assert isinstance(vae, VaeHandle)
        emb, pooled = clip.encode("a portrait")
        entry = CondEntry(emb, pooled)
        pixels, mask = _picture(seed=3), torch.zeros(1, 64, 64)
        mask[:, 16:48, 16:48] = 1.0
        pos, neg, latent = InpaintModelConditioning().run(
            ctx, positive=[entry], negative=[entry], vae=vae, pixels=pixels, mask=mask, noise_mask=True
        )
        out = _sample(model, latent, pos[0], ctx)["samples"]
        inside = (slice(None), slice(None), slice(2, 6), slice(2, 6))
        # outside the mask: kept (to the float rounding of scaling into model space and back)
        assert torch.allclose(out[:, :, :2], latent["samples"][:, :, :2], atol=1e-6, rtol=0)
        assert not torch.allclose(out[inside], latent["samples"][inside], atol=1e-3)  # inside: repainted
        # the masked picture matters: without it (blank, paint everything) the result differs
        blank = _sample(model, latent, entry, ctx)["samples"]
        assert not torch.allclose(blank[inside], out[inside], atol=1e-4), name
        # and an inpainting model draws from an empty latent too (mask 1, blank picture: ComfyUI's)
        empty = _sample(model, {"samples": torch.zeros(1, 4, 8, 8)}, entry, ctx)["samples"]
        assert empty.shape == (1, 4, 8, 8) and torch.isfinite(empty).all()


def test_a_plain_model_ignores_the_concat_and_inpaints_through_the_noise_mask(
    engine, models_root: Path, ctx
) -> None:
    model, clip, vae = load_checkpoint_handles(engine.models, _ckpt(models_root, "tiny15.safetensors"))
    assert model.core_wrappers == () and model.in_channels == 4
    entry = CondEntry(clip.encode("a portrait")[0])
    mask = torch.zeros(1, 64, 64)
    mask[:, 32:, :] = 1.0
    pos, _, latent = InpaintModelConditioning().run(
        ctx, positive=[entry], negative=[entry], vae=vae, pixels=_picture(), mask=mask, noise_mask=True
    )
    out = _sample(model, latent, pos[0], ctx)["samples"]
    assert torch.allclose(out[:, :, :4], latent["samples"][:, :, :4], atol=1e-6, rtol=0)
    assert not torch.allclose(out[:, :, 4:], latent["samples"][:, :, 4:], atol=1e-3)


def test_the_output_cache_counts_the_masked_picture_a_conditioning_carries() -> None:
    from atelier.engine.cache import measure

    plain = CondEntry(torch.zeros(1, 77, 32))
    latent, mask = torch.zeros(1, 4, 64, 64), torch.zeros(1, 1, 512, 512)
    carrying = plain.replace(concat=ConcatImage(latent, mask))
    extra = latent.numel() * 4 + mask.numel() * 4
    assert measure([carrying])[0] - measure([plain])[0] == extra
