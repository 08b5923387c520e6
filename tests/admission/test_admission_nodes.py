"""Admission control over the node library: the issue's examples are refused naming node, input and
limit; portraits are admitted; sizes flow through upscales; LoadImage reads frames from headers, holds
them against the limits, and decodes them one at a time; the command line warns and runs."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile, ImageSequence

from atelier.engine import cli
from atelier.engine.image_probe import probe_file
from atelier.engine.limits import Limits
from atelier.engine.model_loader import ModelLoader
from atelier.engine.node import JobContext
from atelier.engine.runtime import Engine, EngineConfig, build_engine
from atelier.engine.validate import NodeError
from tests.admission.images import canvas_gif, coloured_gif
from tests.server.harness import comfy_prompt, load_workflow, write_models

PLENTY = Limits(memory_bytes=1 << 50)  # the machine's memory out of the way: only the other limits
GiB = 1 << 30


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_models(tmp_path_factory.mktemp("admission-models"))
    (root / "upscale_models").mkdir(exist_ok=True)
    (root / "upscale_models" / "4x_tiny.safetensors").write_bytes(b"")  # named, never loaded here
    return root


def make(
    models_root: Path, tmp_path: Path, limits: Limits = PLENTY, models: ModelLoader | None = None
) -> Engine:
    engine = build_engine(
        EngineConfig(
            device="cpu",
            models_dir=models_root,
            output_dir=tmp_path / "out",
            input_dir=tmp_path / "in",
            temp_dir=tmp_path / "tmp",
            limits=limits,
        ),
        models=models,
    )
    engine.folders.ensure()
    return engine


@pytest.fixture()
def engine(models_root: Path, tmp_path: Path) -> Engine:
    return make(models_root, tmp_path)


def problems(
    engine: Engine, data: Any, overrides: dict[str, Any] | None = None, **limits: Any
) -> list[NodeError]:
    result = engine.check(data, overrides)
    assert result.graph is not None, result.errors
    return engine.admit(result.graph, PLENTY.model_copy(update=limits) if limits else None).problems


def where(p: NodeError) -> tuple[str | None, str | None, str | None, str]:
    return p.node, p.node_type, p.input, p.code


# -- the examples ------------------------------------------------------------------------------


def test_a_16384_square_latent_is_refused_at_the_empty_latent(engine: Engine) -> None:
    [p] = problems(engine, comfy_prompt(size=16384))
    assert where(p) == ("5", "EmptyLatentImage", "width", "over_limit")
    assert p.message == "a 16384x16384 latent is over the limit max_image_pixels=67108864"


def test_a_batch_of_4096_is_refused_at_its_input(engine: Engine) -> None:
    prompt = comfy_prompt()
    prompt["5"]["inputs"]["batch_size"] = 4096
    [p] = problems(engine, prompt)
    assert where(p) == ("5", "EmptyLatentImage", "batch_size", "over_limit")
    assert p.message == "a batch of 4096 latents is over the limit max_batch=64"


def test_a_megabyte_prompt_is_refused_at_its_text(engine: Engine) -> None:
    prompt = comfy_prompt()
    prompt["6"]["inputs"]["text"] = "freckles, " * 100_000
    [p] = problems(engine, prompt)
    assert where(p) == ("6", "CLIPTextEncode", "text", "over_limit")
    assert p.message == "a prompt of 1000000 characters is over the limit max_prompt_chars=32768"


def test_a_150_frame_gif_that_would_need_10_gb_is_refused_from_its_headers(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    (engine.folders.input / "big.gif").write_bytes(canvas_gif(2048, 2048, 150))
    loads: list[object] = []
    load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self) or load(self))
    data = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "big.gif"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    [p] = problems(engine, data)
    assert where(p) == ("1", "LoadImage", "image", "over_limit")
    assert p.message == (
        f"'big.gif': 150 frames of 2048x2048 (10.1 GB decoded) is over the limit max_decoded_bytes={4 * GiB}"
    )
    assert loads == []  # not one frame decoded to find out
    # and at run time (the command line runs what it only warns about) the node refuses before decoding
    ctx = engine.executor.make_context(JobContext("j"), "1", "LoadImage")
    with pytest.raises(ValueError, match="max_decoded_bytes"):
        engine.registry.instance("LoadImage").run(ctx, image="big.gif")
    assert loads == []


# -- what is admitted ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("workflow", "overrides"),
    [
        ("portrait.json", {}),
        ("portrait.json", {"width": 832, "height": 1216}),
        ("portrait_hires.json", {}),
        ("portrait_hires.json", {"width": 832, "height": 1216, "hires_scale": 2.0}),
    ],
)
def test_portraits_are_admitted_by_the_default_limits_in_16_gib(
    models_root: Path, tmp_path: Path, workflow: str, overrides: dict[str, Any]
) -> None:
    engine = make(models_root, tmp_path, Limits(memory_bytes=16 * GiB))
    result = engine.check(load_workflow(workflow), {"checkpoint": "tiny15.safetensors", **overrides})
    assert result.graph is not None, result.errors
    verdict = engine.admit(result.graph)
    assert verdict.ok, verdict.problems
    assert 0 < verdict.memory_needed < 16 * GiB * 0.9


def test_a_batch_of_portraits_is_admitted(engine: Engine) -> None:
    prompt = comfy_prompt(size=1024)
    prompt["5"]["inputs"]["batch_size"] = 4
    assert problems(engine, prompt) == []


def test_memory_grows_with_the_picture_and_an_injected_small_memory_refuses(
    models_root: Path, tmp_path: Path
) -> None:
    engine = make(models_root, tmp_path, Limits(memory_bytes=16 * GiB))
    needed = {}
    for size in (512, 1024):
        verdict = engine.admit(engine.check(comfy_prompt(size=size)).graph)  # type: ignore[arg-type]
        assert verdict.ok and verdict.peak_node == "8"  # the VAE decode holds the most
        needed[size] = verdict.memory_needed
    assert 3.9 < needed[1024] / needed[512] <= 4.0  # pixels x4, latents and images alike
    small = make(models_root, tmp_path, Limits(memory_bytes=needed[512]))  # fits every other limit
    [p] = small.admit(small.check(comfy_prompt(size=512)).graph).problems  # type: ignore[arg-type]
    assert where(p) == ("8", "VAEDecode", None, "over_memory")
    assert "memory_fraction=0.9" in p.message


# -- sizes flow through upscales -------------------------------------------------------------------


def with_nodes(
    prompt: dict[str, Any], extra: dict[str, Any], decode_from: str, save_from: str
) -> dict[str, Any]:
    prompt = {**prompt, **extra}
    prompt["8"] = {"class_type": "VAEDecode", "inputs": {"samples": [decode_from, 0], "vae": ["4", 2]}}
    prompt["9"] = {"class_type": "SaveImage", "inputs": {"images": [save_from, 0], "filename_prefix": "x"}}
    return prompt


def test_a_latent_upscale_that_goes_over_is_named_with_its_factor(engine: Engine) -> None:
    extra = {
        "10": {
            "class_type": "LatentUpscaleBy",
            "inputs": {"samples": ["3", 0], "upscale_method": "bicubic", "scale_by": 2.5},
        }
    }
    [p] = problems(engine, with_nodes(comfy_prompt(size=4096), extra, "10", "8"))
    assert where(p) == ("10", "LatentUpscaleBy", "scale_by", "over_limit")
    assert p.message == "a 10240x10240 latent is over the limit max_image_pixels=67108864"
    assert problems(engine, with_nodes(comfy_prompt(size=2048), extra, "10", "8")) == []


def test_image_scales_and_upscale_models_carry_sizes_to_the_end(engine: Engine) -> None:
    extra = {
        "10": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "4x_tiny.safetensors"}},
        "11": {
            "class_type": "ImageUpscaleWithModel",
            "inputs": {"upscale_model": ["10", 0], "image": ["8", 0]},
        },
        "12": {
            "class_type": "ImageScaleBy",
            "inputs": {"image": ["11", 0], "upscale_method": "lanczos", "scale_by": 1.5},
        },
    }
    prompt = with_nodes(comfy_prompt(size=1024), extra, "3", "12")
    assert problems(engine, prompt) == []  # 4096 then 6144 square: within 8192x8192
    [p] = problems(engine, with_nodes(comfy_prompt(size=2048), extra, "3", "12"))  # 8192, then 12288
    assert where(p) == ("12", "ImageScaleBy", "scale_by", "over_limit")
    assert p.message == "a 12288x12288 image is over the limit max_image_pixels=67108864"
    found = problems(engine, with_nodes(comfy_prompt(size=2056), extra, "3", "12"))  # 8224 at the model
    assert [where(p) for p in found] == [
        ("11", "ImageUpscaleWithModel", "image", "over_limit"),
        ("12", "ImageScaleBy", "scale_by", "over_limit"),  # grown further: named again where it grows
    ]


def test_sampler_steps_and_configurable_limits(engine: Engine) -> None:
    prompt = comfy_prompt(steps=5000)
    [p] = problems(engine, prompt)
    assert where(p) == ("3", "KSampler", "steps", "over_limit")
    assert p.message == "5000 steps is over the limit max_steps=1000"
    assert problems(engine, prompt, max_steps=5000) == []
    assert [where(p) for p in problems(engine, comfy_prompt(steps=2), max_steps=1)] == [
        ("3", "KSampler", "steps", "over_limit")
    ]


# -- LoadImage's frames ------------------------------------------------------------------------------

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (250, 200, 10)]


def frames_reference(path: Path) -> torch.Tensor:
    """Every frame through PIL on its own, as RGB floats: the reference for the batch."""
    with Image.open(path) as im:
        arrs = [np.asarray(f.convert("RGB"), dtype=np.float32) / 255.0 for f in ImageSequence.Iterator(im)]
    return torch.from_numpy(np.stack(arrs))


def test_load_image_decodes_every_frame_into_the_batch(engine: Engine) -> None:
    path = engine.folders.input / "anim.gif"
    path.write_bytes(coloured_gif(16, 12, COLOURS))
    ctx = engine.executor.make_context(JobContext("j"), "1", "LoadImage")
    image, mask = engine.registry.instance("LoadImage").run(ctx, image="anim.gif")
    reference = frames_reference(path)
    assert image.shape == (4, 12, 16, 3) and mask.shape == (4, 12, 16)
    assert torch.equal(image, reference)
    assert not torch.equal(image[0], image[1])
    assert torch.equal(mask, torch.zeros(4, 12, 16))


def test_load_image_over_max_frames_is_refused_at_admission_and_at_run_time(
    models_root: Path, tmp_path: Path
) -> None:
    engine = make(models_root, tmp_path, PLENTY.model_copy(update={"max_frames": 3}))
    (engine.folders.input / "anim.gif").write_bytes(coloured_gif(16, 12, COLOURS))
    data = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "anim.gif"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    [p] = engine.admit(engine.check(data).graph).problems  # type: ignore[arg-type]
    assert where(p) == ("1", "LoadImage", "image", "over_limit")
    assert p.message == "'anim.gif': 4 frames is over the limit max_frames=3"
    result = engine.executor.run(data)
    assert result.status == "failed" and "max_frames=3" in result.failure.message  # type: ignore[union-attr]


def test_tiff_pages_are_each_held_against_the_pixel_limit(engine: Engine) -> None:
    path = engine.folders.input / "pages.tiff"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(
        path, save_all=True, append_images=[Image.new("RGB", (300, 200), (4, 5, 6))]
    )
    assert probe_file(path).frame_sizes == ((16, 16), (300, 200))
    data = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "pages.tiff"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    [p] = problems(engine, data, max_image_pixels=10_000)
    assert p.message == "'pages.tiff': a frame of 2 300x200 pixels is over the limit max_image_pixels=10000"
    ctx = engine.executor.make_context(JobContext("j"), "1", "LoadImage")
    image, _ = engine.registry.instance("LoadImage").run(ctx, image="pages.tiff")
    assert image.shape == (1, 16, 16, 3)  # pages of another size than the first are left out, as before


# -- the command line warns and runs ---------------------------------------------------------------


@pytest.fixture()
def cli_args(models_root: Path, tmp_path: Path) -> Iterator[list[str]]:
    yield [
        "--device",
        "cpu",
        "--models-dir",
        str(models_root),
        "--output-dir",
        str(tmp_path / "out"),
        "--input-dir",
        str(tmp_path / "in"),
        "--temp-dir",
        str(tmp_path / "tmp"),
    ]


def test_the_command_line_warns_and_runs(
    tmp_path: Path, cli_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    path = tmp_path / "prompt.json"
    path.write_text(json.dumps(comfy_prompt(steps=2, size=64)))
    assert cli.main(["validate", str(path), "--max-steps", "1", *cli_args]) == 0
    out = capsys.readouterr().out
    assert (
        "warning [over_limit] node 3 (KSampler), input 'steps': 2 steps is over the limit max_steps=1" in out
    )
    assert f"{path}: ok (1 warnings)" in out
    assert cli.main(["run", str(path), "--max-steps", "1", "-q", *cli_args]) == 0
    err = capsys.readouterr().err
    assert "warning [over_limit] node 3 (KSampler), input 'steps'" in err and "max_steps=1" in err
    saved = list((tmp_path / "out").glob("ComfyUI_*.png"))
    assert len(saved) == 1
    with Image.open(saved[0]) as im:
        assert im.size == (64, 64)


def test_bad_limit_flags_are_refused(
    cli_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "p.json"
    path.write_text("{}")
    assert cli.main(["validate", str(path), "--memory-fraction", "1.5", *cli_args]) == 2
    assert "memory_fraction" in capsys.readouterr().err


def test_upload_sized_gif_bytes() -> None:
    """The 10 GB GIF of the examples is a few kilobytes on the wire."""
    data = canvas_gif(2048, 2048, 150)
    assert len(data) < 8000
    with Image.open(io.BytesIO(data)) as im:
        assert im.n_frames == 150 and im.size == (2048, 2048)
