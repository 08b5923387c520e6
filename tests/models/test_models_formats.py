"""Other ways real checkpoints come: fp16 with extra keys, .ckpt pickles, diffusers folders, lone VAEs."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from atelier.engine.models import (
    CheckpointError,
    build_tiny_models,
    detect_checkpoint,
    load_checkpoint,
    load_vae,
    write_tiny_checkpoint,
)
from atelier.engine.models.tiny import TinyModels


def _assert_same_weights(loaded: torch.nn.Module, original: torch.nn.Module) -> None:
    a, b = loaded.state_dict(), original.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key].to(a[key].dtype)), key


def _assert_same_model(loaded_unet: torch.nn.Module, models: TinyModels, vae: torch.nn.Module | None) -> None:
    _assert_same_weights(loaded_unet, models.unet)
    if vae is not None:
        _assert_same_weights(vae, models.vae)


@pytest.fixture(scope="module")
def sd15_fp16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(
        "sd15", tmp_path_factory.mktemp("fp16") / "tiny16.safetensors", dtype=torch.float16
    )


def test_fp16_file_with_extra_keys_loads(sd15_fp16: Path, tmp_path: Path) -> None:
    state = load_file(str(sd15_fp16))
    # what real fp16 files carry besides the model: EMA copies, a v-prediction marker, training state
    extras = {
        "model_ema.decay": torch.tensor(0.9999),
        "model_ema.num_updates": torch.tensor(1000, dtype=torch.int32),
        "model_ema.diffusion_modelinput_blocks00weight": state[
            "model.diffusion_model.input_blocks.0.0.weight"
        ]
        + 1,
        "v_pred": torch.tensor([]),
        "ztsnr": torch.tensor([]),
        "cond_stage_model.transformer.text_model.unknown_extra": torch.zeros(3),
    }
    for n in range(120):  # enough model_ema.* keys for diffusers to consider the EMA case
        extras[f"model_ema.x{n}"] = torch.zeros(1, dtype=torch.float16)
    path = tmp_path / "extras.safetensors"
    save_file({**state, **extras}, str(path))

    info = detect_checkpoint(path)
    assert info.dtype == "float16"
    assert info.prediction == "v" and info.prediction_source == "v_pred key"
    assert info.zero_terminal_snr is True

    originals = build_tiny_models("sd15", dtype=torch.float16)
    loaded = load_checkpoint(path, dtype=torch.float16)
    assert next(loaded.unet.parameters()).dtype == torch.float16
    _assert_same_model(loaded.unet, originals, loaded.vae)
    _assert_same_weights(loaded.text_encoders[0], originals.text_encoders[0])

    upcast = load_checkpoint(path, dtype=torch.float32, vae_dtype=torch.bfloat16)
    assert next(upcast.unet.parameters()).dtype == torch.float32
    assert upcast.vae is not None and next(upcast.vae.parameters()).dtype == torch.bfloat16
    _assert_same_weights(upcast.unet, originals.unet)


def test_ckpt_loads_through_weights_only(sd15_fp16: Path, tmp_path: Path) -> None:
    state = load_file(str(sd15_fp16))
    path = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": state, "global_step": 470000, "epoch": 6}, path)
    info = detect_checkpoint(path)
    assert info.source_format == "torch" and info.family == "sd15"
    loaded = load_checkpoint(path, dtype=torch.float16)
    originals = build_tiny_models("sd15", dtype=torch.float16)
    _assert_same_model(loaded.unet, originals, loaded.vae)


class _NotATensor:
    def __init__(self) -> None:
        self.payload = "anything"


def test_ckpt_with_python_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "callback": _NotATensor()}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "evil.ckpt" in str(err.value) and "weights_only" in str(err.value)


def _save_diffusers_folder(models: TinyModels, folder: Path, prediction: str = "epsilon") -> None:
    models.unet.save_pretrained(folder / "unet")
    models.vae.save_pretrained(folder / "vae")
    names = ["text_encoder", "text_encoder_2"][: len(models.text_encoders)]
    for name, encoder in zip(names, models.text_encoders, strict=True):
        encoder.save_pretrained(folder / name)
    pipeline = "StableDiffusionXLPipeline" if models.family == "sdxl" else "StableDiffusionPipeline"
    (folder / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({"prediction_type": prediction}))


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_diffusers_folder_loads(arch: str, tmp_path: Path) -> None:
    models = build_tiny_models(arch, seed=5)
    folder = tmp_path / f"{arch}-diffusers"
    _save_diffusers_folder(models, folder, prediction="v_prediction" if arch == "sd15" else "epsilon")
    info = detect_checkpoint(folder)
    assert info.family == arch and info.source_format == "diffusers"
    assert info.prediction == ("v" if arch == "sd15" else "eps")
    assert info.dtype == "float32"
    loaded = load_checkpoint(folder)
    _assert_same_model(loaded.unet, models, loaded.vae)
    for a, b in zip(loaded.text_encoders, models.text_encoders, strict=True):
        assert type(a) is type(b)
        _assert_same_weights(a, b)
    assert [t.pad_token for t in loaded.tokenizers] == [te.pad_token for te in models.info.text_encoders]
    assert len(loaded.sha256) == 64


def test_diffusers_folder_with_broken_weights_names_the_problem(tmp_path: Path) -> None:
    models = build_tiny_models("sd15")
    folder = tmp_path / "broken"
    _save_diffusers_folder(models, folder)
    weights = next((folder / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(folder)
    assert "truncated" in str(err.value) or "garbage" in str(err.value)


def test_standalone_vae_in_both_layouts(sd15_fp16: Path, tmp_path: Path) -> None:
    state = load_file(str(sd15_fp16))
    original_layout = {
        k.removeprefix("first_stage_model."): v
        for k, v in state.items()
        if k.startswith("first_stage_model.")
    }
    original_layout["loss.logvar"] = torch.zeros(())  # as in vae-ft-mse .ckpt files
    models = build_tiny_models("sd15", dtype=torch.float16)

    path = tmp_path / "vae.safetensors"
    save_file(original_layout, str(path))
    vae = load_vae(path)
    assert vae.config.scaling_factor == pytest.approx(0.18215)
    _assert_same_weights(vae, models.vae)

    xl = load_vae(path, family="sdxl", dtype=torch.float16)
    assert xl.config.scaling_factor == pytest.approx(0.13025)
    assert next(xl.parameters()).dtype == torch.float16

    diffusers_path = tmp_path / "vae_diffusers.safetensors"
    save_file({k: v.contiguous() for k, v in models.vae.state_dict().items()}, str(diffusers_path))
    _assert_same_weights(load_vae(diffusers_path), models.vae)

    folder = tmp_path / "vae_folder"
    models.vae.save_pretrained(folder)
    _assert_same_weights(load_vae(folder), models.vae)

    with pytest.raises(CheckpointError) as err:
        load_vae(sd15_fp16.parent / "missing.safetensors")
    assert "missing.safetensors" in str(err.value)
