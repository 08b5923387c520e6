"""The upscale nodes end to end: the upscale_image workflow headless, UpscaleModelLoader's once-per-file
loading, and UltimateSDUpscale on the tiny SD1.5 checkpoint (sizes, denoise 0, seams, progress, interrupt)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.engine import events as E
from atelier.engine.imaging.redraw_plan import RedrawSettings, plan_jobs
from atelier.engine.imaging.resample import lanczos_resize_image
from atelier.engine.models.handles import load_checkpoint_handles
from atelier.engine.models.upscale import load_upscale_model
from atelier.engine.node import CancelToken, Context, JobContext
from atelier.engine.runtime import Engine
from atelier.engine.sampling.conditioning import CondEntry
from atelier.engine.sampling.tiled_redraw import SamplerSettings, redraw
from atelier.nodes.upscale import ImageUpscaleWithModel, UltimateSDUpscale
from tests.upscale import tiny_upscalers as tiny
from tests.upscale.conftest import COMPACT_X2, ESRGAN_X4

ROOT = Path(__file__).resolve().parents[2]


def _smooth(h: int, w: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return torch.stack(
        [0.5 + 0.4 * torch.sin(6 * xx), 0.5 + 0.4 * torch.cos(5 * yy), 0.5 + 0.3 * torch.sin(4 * (xx + yy))],
        -1,
    )[None]


def _write_png(engine: Engine, name: str, image: torch.Tensor) -> np.ndarray:
    pixels = (image[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    Image.fromarray(pixels).save(engine.folders.input / name)
    return pixels


def _saved(engine: Engine, result: Any, node: str = "save") -> np.ndarray:
    ref = result.outputs[node]["images"][0]
    return np.asarray(Image.open(engine.folders.output / ref["subfolder"] / ref["filename"]))


def _pil_lanczos(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Lanczos by PIL, channel by channel in float: the reference for Atelier's own."""
    chans = [
        np.asarray(
            Image.fromarray(image[0, :, :, c].numpy(), mode="F").resize((width, height), Image.LANCZOS)
        )
        for c in range(3)
    ]
    return torch.from_numpy(np.stack(chans, -1)).clamp(0, 1)[None]


# -- the upscale_image workflow and the two ComfyUI nodes -------------------------------------------------


def test_upscale_image_workflow_runs_headless(engine: Engine, models_root: Path) -> None:
    wf = json.loads((ROOT / "workflows" / "upscale_image.json").read_text())
    image = torch.rand(1, 20, 28, 3, generator=torch.Generator().manual_seed(5))
    pixels = _write_png(engine, "face.png", image)
    check = engine.check(copy.deepcopy(wf), {"image": "face.png", "upscale_model": ESRGAN_X4})
    assert check.ok, check.errors
    res = engine.executor.run(copy.deepcopy(wf), overrides={"image": "face.png", "upscale_model": ESRGAN_X4})
    assert res.ok, res.failure
    out = _saved(engine, res)
    assert out.shape == (80, 112, 3)
    ref = tiny.reference(tiny.esrgan(4), torch.from_numpy(pixels).float()[None] / 255.0)
    expected = (ref[0] * 255).round().numpy()
    assert np.abs(out.astype(np.float32) - expected).max() <= 1  # 8-bit rounding


def test_upscale_model_loads_once_per_file(engine: Engine) -> None:
    wf = json.loads((ROOT / "workflows" / "upscale_image.json").read_text())
    _write_png(engine, "a.png", torch.rand(1, 8, 8, 3))
    loads = engine.models.loads
    for prefix in ("one", "two"):
        engine.cache.clear()
        res = engine.executor.run(
            copy.deepcopy(wf), overrides={"image": "a.png", "upscale_model": COMPACT_X2, "prefix": prefix}
        )
        assert res.ok, res.failure
        assert "upscaler" in res.executed  # the node ran again, the file was not read again
    assert engine.models.loads - loads <= 1


def test_a_missing_or_unusable_upscale_model_fails_the_node_by_name(
    engine: Engine, models_root: Path
) -> None:
    wf = json.loads((ROOT / "workflows" / "upscale_image.json").read_text())
    _write_png(engine, "a.png", torch.rand(1, 8, 8, 3))
    bogus = models_root / "upscale_models" / "not_a_model.safetensors"
    from safetensors.torch import save_file

    save_file({"text_model.weight": torch.zeros(2, 2)}, str(bogus))
    try:
        res = engine.executor.run(
            copy.deepcopy(wf), overrides={"image": "a.png", "upscale_model": bogus.name}
        )
        assert not res.ok and res.failure is not None
        assert res.failure.node == "upscaler" and "not_a_model.safetensors" in res.failure.message
        assert "not an upscale model" in res.failure.message
    finally:
        bogus.unlink()
    check = engine.check(copy.deepcopy(wf), {"image": "a.png", "upscale_model": "missing.pth"})
    assert not check.ok and any(e.input == "model_name" for e in check.errors)


def test_image_upscale_with_model_reports_progress_per_tile(models_root: Path) -> None:
    handle = load_upscale_model(models_root / "upscale_models" / COMPACT_X2)
    events: list[tuple[str, dict[str, Any]]] = []
    ctx = Context(
        job=JobContext("j"),
        node_id="up",
        node_type="ImageUpscaleWithModel",
        emit=lambda k, d: events.append((k, d)),
    )
    image = torch.rand(1, 600, 40, 3)  # two 512 px tiles high
    out = ImageUpscaleWithModel().run(ctx, upscale_model=handle, image=image)
    assert out.shape == (1, 1200, 80, 3)
    assert [(d["value"], d["max"]) for k, d in events if k == "progress"] == [(1, 2), (2, 2)]
    cancel = CancelToken()
    cancel.cancel()
    stopped = Context(job=JobContext("j"), node_id="up", node_type="ImageUpscaleWithModel", cancel=cancel)
    from atelier.engine.node import Interrupted

    with pytest.raises(Interrupted):
        ImageUpscaleWithModel().run(stopped, upscale_model=handle, image=image)


# -- UltimateSDUpscale --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sd(models_root: Path) -> dict[str, Any]:
    from atelier.engine.model_loader import ModelLoader

    model, clip, vae = load_checkpoint_handles(
        ModelLoader("cpu"), models_root / "checkpoints" / "tiny15.safetensors"
    )
    return {
        "model": model,
        "vae": vae,
        "positive": [CondEntry(*clip.encode("portrait of a woman, detailed skin"))],
        "negative": [CondEntry(*clip.encode("blurry"))],
    }


def _usdu(sd: dict[str, Any], image: torch.Tensor, ctx: Context | None = None, **kw: Any) -> torch.Tensor:
    args: dict[str, Any] = dict(
        image=image,
        upscale_by=2.0,
        seed=1,
        steps=2,
        cfg=5.0,
        sampler_name="euler",
        scheduler="normal",
        denoise=0.5,
        mode_type="Linear",
        tile_width=64,
        tile_height=64,
        mask_blur=8,
        tile_padding=16,
        seam_fix_mode="None",
        seam_fix_denoise=0.5,
        seam_fix_width=32,
        seam_fix_mask_blur=8,
        seam_fix_padding=16,
        force_uniform_tiles=True,
        tiled_decode=False,
    )
    args.update(sd)
    args.update(kw)
    ctx = ctx or Context(job=JobContext("j"), node_id="usdu", node_type="UltimateSDUpscale")
    return UltimateSDUpscale().run(ctx, **args)


def seam_ratio(image: torch.Tensor, tile_width: int, tile_height: int) -> float:
    """How much a tile border stands out: the mean absolute difference between the two pixel columns (rows)
    either side of each inner tile border, divided by the same statistic a few pixels away on both sides
    (2 to 6), averaged over the borders. About 1 where the border looks like its surroundings, well above
    1 where tiles meet with a step; below 1 where blending smoothed across the border."""
    g = image[0].float()
    dx = (g[:, 1:] - g[:, :-1]).abs().mean(dim=(0, 2))  # dx[i]: between columns i and i + 1
    dy = (g[1:] - g[:-1]).abs().mean(dim=(1, 2))
    ratios = []
    for d, tile in ((dx, tile_width), (dy, tile_height)):
        for border in range(tile, d.numel() + 1 - 6, tile):
            i = border - 1
            near = torch.stack([d[i + k] for k in range(2, 7)] + [d[i - k] for k in range(2, 7)])
            ratios.append(d[i] / near.mean())
    return float(torch.stack(ratios).mean())


def test_usdu_output_size(sd: dict[str, Any], models_root: Path) -> None:
    image = _smooth(36, 44)
    out = _usdu(sd, image, upscale_by=1.5, mode_type="None")
    assert out.shape == (1, 56, 72, 3)  # 54 x 66 rounded up to the VAE's 8 px cells
    model = load_upscale_model(models_root / "upscale_models" / ESRGAN_X4)
    out = _usdu(sd, image, upscale_by=2.0, upscale_model=model, tile_width=64, tile_height=64, denoise=0.3)
    assert out.shape == (1, 72, 88, 3)


def test_denoise_0_leaves_the_upscaled_image_unchanged(sd: dict[str, Any], models_root: Path) -> None:
    image = _smooth(24, 32)
    out = _usdu(sd, image, denoise=0.0, seam_fix_mode="Half Tile", seam_fix_denoise=0.0)
    assert torch.allclose(out, _pil_lanczos(image, 64, 48), atol=1e-4)

    model = load_upscale_model(models_root / "upscale_models" / ESRGAN_X4)
    out = _usdu(
        sd, image, denoise=0.0, upscale_model=model, upscale_by=3.0
    )  # 4x by the model, then down to 3x
    ref = tiny.reference(tiny.esrgan(4), image)
    assert out.shape == (1, 72, 96, 3)
    assert torch.allclose(out, _pil_lanczos(ref, 96, 72), atol=1e-4)

    redrawn = _usdu(sd, image, denoise=0.3)
    assert (redrawn - _pil_lanczos(image, 64, 48)).abs().mean() > 1e-2  # denoising does change it


@pytest.mark.parametrize("seed", [1, 2])
def test_feathering_and_seam_fix_hide_the_tile_borders(sd: dict[str, Any], seed: int) -> None:
    """The tiled redraw itself on a 128 x 96 canvas in 32 px tiles (4 x 3; the node's smallest tile is 64 px,
    which would only make this slower): pasted hard, the tiles' borders stand out; feathered, seam-fixed,
    or both, they do not."""
    canvas = lanczos_resize_image(_smooth(48, 64), 128, 96)

    def ratio(**kw: Any) -> float:
        settings = RedrawSettings(
            **{**dict(tile_width=32, tile_height=32, padding=8, denoise=0.5, seam_fix_denoise=0.5), **kw}
        )
        out = redraw(
            Context(job=JobContext("j"), node_id="usdu", node_type="UltimateSDUpscale"),
            canvas,
            plan_jobs(128, 96, settings),
            model=sd["model"],
            vae=sd["vae"],
            positive=sd["positive"],
            negative=sd["negative"],
            sampler=SamplerSettings(seed, 2, 5.0, "euler", "normal"),
            source_size=(48, 64),
        )
        return seam_ratio(out, 32, 32)

    hard = ratio(mask_blur=0)
    assert hard > 1.6, hard  # hard-pasted tiles: their borders stand out
    smoother = {
        "feathered": ratio(mask_blur=4),
        "seam fix (half tile)": ratio(mask_blur=0, seam_fix_mode="Half Tile", seam_fix_mask_blur=4),
        "feathered + seam fix": ratio(mask_blur=4, seam_fix_mode="Half Tile", seam_fix_mask_blur=4),
        "feathered + band pass": ratio(mask_blur=4, seam_fix_mode="Band Pass", seam_fix_width=16),
    }
    for name, r in smoother.items():
        assert r < 0.6 * hard and r < 1.3, (name, r, hard)


def test_usdu_workflow_progress_over_all_tiles_and_interrupt(engine: Engine) -> None:
    _write_png(engine, "small.png", _smooth(48, 64))
    wf = {
        "load": {"class_type": "LoadImage", "inputs": {"image": "small.png"}},
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny15.safetensors"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a portrait", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["ckpt", 1]}},
        "up": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": COMPACT_X2}},
        "usdu": {
            "class_type": "UltimateSDUpscale",
            "inputs": {
                "image": ["load", 0],
                "model": ["ckpt", 0],
                "positive": ["pos", 0],
                "negative": ["neg", 0],
                "vae": ["ckpt", 2],
                "upscale_model": ["up", 0],
                "upscale_by": 2,
                "seed": 3,
                "steps": 2,
                "cfg": 6.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 0.4,
                "mode_type": "Chess",
                "tile_width": 64,
                "tile_height": 64,
                "mask_blur": 4,
                "tile_padding": 16,
                "seam_fix_mode": "Band Pass",
                "seam_fix_denoise": 0.4,
                "seam_fix_width": 16,
                "seam_fix_mask_blur": 4,
                "seam_fix_padding": 8,
                "force_uniform_tiles": False,
                "tiled_decode": True,
            },
        },
        "save": {"class_type": "SaveImage", "inputs": {"images": ["usdu", 0], "filename_prefix": "usdu"}},
    }
    events: list[E.Event] = []
    res = engine.executor.run(copy.deepcopy(wf), on_event=events.append)
    assert res.ok, res.failure
    assert _saved(engine, res).shape == (96, 128, 3)
    jobs = 2 * 2 + (2 - 1) + (2 - 1)  # 2 x 2 tiles, one band per inner grid line
    progress = [(e.value, e.max) for e in events if e.type == "progress" and e.node == "usdu"]
    assert {m for _, m in progress} == {jobs} and progress[-1] == (jobs, jobs)
    values = [v for v, _ in progress]
    assert values == sorted(values) and len(values) > jobs  # sampler steps show as fractions of a job

    cancel = CancelToken()
    seen: list[float] = []

    def stop_after_first_tile(event: E.Event) -> None:
        if event.type == "progress" and event.node == "usdu":
            seen.append(event.value)
            if event.value >= 1:
                cancel.cancel("stop")

    engine.cache.clear()
    res = engine.executor.run(copy.deepcopy(wf), on_event=stop_after_first_tile, cancel=cancel)
    assert res.status == "interrupted"
    assert max(seen) < 2


def test_conditioning_is_cut_to_the_window() -> None:
    from atelier.engine.imaging.tiles import Rect
    from atelier.engine.sampling.tiled_redraw import crop_conditioning

    emb = torch.zeros(1, 77, 8)
    left = CondEntry(emb, area=(8, 4, 0, 0))  # the left half of a 64 x 64 source (latent 8 x 8)
    right = CondEntry(emb, area=(8, 4, 0, 4))
    mask = torch.zeros(8, 8)
    mask[:, :4] = 1.0
    masked = CondEntry(emb, mask=mask)
    canvas, source = (128, 128), (64, 64)
    window = Rect(0, 0, 48, 128)  # the left 48 px of the 128 px canvas
    cut = crop_conditioning([left, right, masked], window, canvas, source)
    assert len(cut) == 2 and cut[0].area == (16, 6, 0, 0)
    assert cut[1].mask is not None and cut[1].mask.shape == (16, 6) and cut[1].mask.min() > 0.99
    only_right = crop_conditioning([right], window, canvas, source)
    assert len(only_right) == 1 and only_right[0].area is None  # no entry covers it: applies everywhere
