"""Upscale model files: spandrel detects tiny random-weight ESRGAN / Real-ESRGAN / Compact files written in
their real layouts; tiled runs equal the architecture module run on the whole image; bad files are refused
with errors that name them."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from atelier.engine.imaging.tiles import count_tiles
from atelier.engine.models.errors import CheckpointError
from atelier.engine.models.upscale import UpscaleModelHandle, load_upscale_model, upscale_image
from tests.upscale import tiny_upscalers as tiny
from tests.upscale.conftest import COMPACT_X2, COMPACT_X4, ESRGAN_X4, ESRGAN_X4_PTH, REALESRGAN_X4


def _image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, h, w, 3, generator=g)


@pytest.mark.parametrize(
    ("name", "module", "architecture", "scale"),
    [
        (ESRGAN_X4, tiny.esrgan(4), "ESRGAN", 4),
        (ESRGAN_X4_PTH, tiny.esrgan(4), "ESRGAN", 4),
        (REALESRGAN_X4, tiny.esrgan(4), "ESRGAN", 4),
        (COMPACT_X2, tiny.compact(2), "RealESRGAN Compact", 2),
        (COMPACT_X4, tiny.compact(4, seed=1), "RealESRGAN Compact", 4),
    ],
)
def test_tiled_upscale_equals_the_module_on_the_whole_image(
    models_root: Path, name: str, module: torch.nn.Module, architecture: str, scale: int
) -> None:
    handle = load_upscale_model(models_root / "upscale_models" / name)
    assert (handle.architecture, handle.scale, handle.input_channels, handle.output_channels) == (
        architecture,
        scale,
        3,
        3,
    )
    image = _image(37, 53)
    tiles: list[tuple[int, int]] = []
    out = upscale_image(handle, image, tile=32, overlap=24, on_tile=lambda d, t: tiles.append((d, t)))
    assert out.shape == (1, 37 * scale, 53 * scale, 3)
    assert tiles[-1] == (len(tiles), len(tiles)) and len(tiles) == 6  # 2 rows x 3 columns of tiles
    ref = tiny.reference(module, image)
    assert torch.allclose(out, ref, atol=1e-5), (out - ref).abs().max()


def test_too_little_overlap_shows_the_tiles(models_root: Path) -> None:
    """The reference comparison above is meaningful: cutting tiles without enough context differs."""
    handle = load_upscale_model(models_root / "upscale_models" / COMPACT_X2)
    image = _image(37, 53)
    ref = tiny.reference(tiny.compact(2), image)
    assert (upscale_image(handle, image, tile=32, overlap=0) - ref).abs().max() > 1e-2
    assert torch.allclose(upscale_image(handle, image, tile=64, overlap=16), ref, atol=1e-5)


def test_tiny_upscalers_are_live(models_root: Path) -> None:
    """Random weights, but the output depends on the input: different images, different results, and a
    change in one spot changes the output around that spot only."""
    for name in (ESRGAN_X4, COMPACT_X2):
        handle = load_upscale_model(models_root / "upscale_models" / name)
        a, b = _image(24, 24, seed=1), _image(24, 24, seed=2)
        out_a, out_b = upscale_image(handle, a), upscale_image(handle, b)
        assert (out_a - out_b).abs().mean() > 1e-3
        poked = a.clone()
        poked[0, 2, 2] = 1.0 - poked[0, 2, 2]
        diff = (upscale_image(handle, poked) - out_a).abs().sum(dim=-1)[0]
        s = handle.scale
        assert diff[: 5 * s, : 5 * s].max() > 1e-4
        assert diff[14 * s :, 14 * s :].max() < 1e-6  # beyond its receptive field: float noise at most


def test_batches_and_out_of_memory_shrink_the_tiles(models_root: Path) -> None:
    handle = load_upscale_model(models_root / "upscale_models" / COMPACT_X2)
    seen: list[int] = []

    class Tight:
        """The real model, but a device that runs out of memory on tiles over 40 pixels."""

        device, dtype = torch.device("cpu"), torch.float32

        def __call__(self, t: torch.Tensor) -> torch.Tensor:
            if max(t.shape[-2:]) > 40:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            seen.append(max(t.shape[-2:]))
            return handle.model(t)

    tight = UpscaleModelHandle(Tight(), scale=2, input_channels=3, output_channels=3, name="tight")
    image = torch.cat([_image(50, 70, seed=3), _image(50, 70, seed=4)])
    progress: list[tuple[int, int]] = []
    out = upscale_image(
        tight, image, tile=128, overlap=16, min_tile=32, on_tile=lambda *p: progress.append(p)
    )
    assert max(seen) <= 32
    ref = tiny.reference(tiny.compact(2), image)
    assert torch.allclose(out, ref, atol=1e-5)
    per_image = count_tiles(50, 70, 32, 16)  # the tile size it settled on
    assert per_image > 1 and progress[-1] == (2 * per_image, 2 * per_image)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        upscale_image(tight, image, tile=128, overlap=16, min_tile=64)


def test_a_1024px_image_upscales_4x_in_512px_tiles() -> None:
    """The model only ever sees 512 px tiles (ComfyUI's size), so memory is one tile's worth plus the
    result. A stand-in 4x model (nearest neighbour, so the tiled result must equal the plain one) keeps
    it quick; the real architectures' tiling is checked above."""
    sides: list[int] = []

    class Nearest4x:
        device, dtype = torch.device("cpu"), torch.float32

        def __call__(self, t: torch.Tensor) -> torch.Tensor:
            sides.append(max(t.shape[-2:]))
            return t.repeat_interleave(4, dim=-1).repeat_interleave(4, dim=-2)

    handle = UpscaleModelHandle(Nearest4x(), scale=4, input_channels=3, output_channels=3)
    image = _image(1024, 1024)
    out = upscale_image(handle, image)
    assert out.shape == (1, 4096, 4096, 3)
    assert max(sides) == 512 and len(sides) == 9
    ref = image.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)
    assert torch.allclose(
        out[:, ::7, ::7], ref[:, ::7, ::7], atol=1e-6
    )  # every 7th pixel: all kinds of seams


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickle_that_needs_more_than_weights_is_refused(tmp_path: Path) -> None:
    whole = tmp_path / "whole_module.pth"
    torch.save(tiny.compact(2), str(whole))  # the module object, not its state dict
    with pytest.raises(CheckpointError, match="refused to unpickle") as exc:
        load_upscale_model(whole)
    assert str(whole) in str(exc.value)

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"body.0.weight": Payload()}))
    with pytest.raises(CheckpointError, match="evil.pth"):
        load_upscale_model(evil)
    assert not marker.exists()


def test_an_unknown_state_dict_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "mystery.safetensors"
    save_file(
        {"encoder.layer.0.weight": torch.zeros(4, 4), "encoder.layer.0.bias": torch.zeros(4)}, str(path)
    )
    with pytest.raises(CheckpointError, match="not an upscale model") as exc:
        load_upscale_model(path)
    assert str(path) in str(exc.value) and "encoder.layer.0.weight" in str(exc.value)


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("empty.pth", b"", "empty"),
        ("garbage.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all", "not JSON"),
        ("garbage.pth", b"this is not a model" * 10, "neither a safetensors"),
        ("notes.txt", b"hello", "unsupported file extension"),
    ],
)
def test_bad_files_get_errors_that_name_them(tmp_path: Path, name: str, content: bytes, problem: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=problem) as exc:
        load_upscale_model(path)
    assert str(path) in str(exc.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="file not found"):
        load_upscale_model(tmp_path / "nope.pth")


def test_a_state_dict_that_matches_names_but_not_shapes(tmp_path: Path) -> None:
    sd = tiny.state_dict(tiny.compact(2))
    sd["body.2.weight"] = torch.zeros(5, 3, 3, 3)  # the second conv no longer fits the first
    path = tmp_path / "broken.safetensors"
    save_file(sd, str(path))
    with pytest.raises(CheckpointError, match="does not load") as exc:
        load_upscale_model(path)
    assert str(path) in str(exc.value)
