"""Detection from tensor names and shapes: SD2 and v-prediction, full-size configs, unusable files."""

import json
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from atelier.engine.models import (
    CheckpointError,
    build_tiny_models,
    detect_checkpoint,
    family_config,
    load_checkpoint,
    write_tiny_checkpoint,
)
from atelier.engine.models.build import empty_text_encoder, empty_unet, empty_vae
from atelier.engine.models.detect import detect_index
from atelier.engine.models.files import TensorIndex, index_state_dict
from atelier.engine.models.layout import original_state_dict
from atelier.engine.models.tiny import text_encoder_info


@pytest.fixture(scope="module")
def sd2_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint("sd2", tmp_path_factory.mktemp("sd2") / "tiny_sd2.safetensors", seed=0)


def test_sd2_detected_from_open_clip_layout_and_loads(sd2_file: Path) -> None:
    state = load_file(str(sd2_file))
    assert "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight" in state
    assert not any(k.startswith("cond_stage_model.transformer.") for k in state)
    info = detect_checkpoint(sd2_file)
    assert info.family == "sd2"
    assert info.prediction == "eps"
    assert info.unet_config["use_linear_projection"] is True
    assert info.unet_config["cross_attention_dim"] == 64
    (te,) = info.text_encoders
    assert (te.layout, te.model_class, te.num_layers, te.pad_token) == ("open_clip", "CLIPTextModel", 2, "!")
    assert te.config["hidden_act"] == "gelu"
    assert (te.default_layer, te.final_layer_norm) == (-2, True)

    loaded = load_checkpoint(sd2_file)
    original = build_tiny_models("sd2")
    for a, b in [(loaded.unet, original.unet), (loaded.text_encoders[0], original.text_encoders[0])]:
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    ids = torch.tensor([[49406, 320, 1125, 49407] + [0] * 73])
    with torch.no_grad():
        assert torch.equal(
            loaded.text_encoders[0](ids).last_hidden_state, original.text_encoders[0](ids).last_hidden_state
        )


def test_v_prediction_from_v_pred_key(tmp_path: Path) -> None:
    path = write_tiny_checkpoint("sd2", tmp_path / "vpred.safetensors", v_prediction=True)
    info = detect_checkpoint(path)
    assert (info.family, info.prediction, info.prediction_source) == ("sd2", "v", "v_pred key")


def test_v_prediction_from_sibling_yaml(sd2_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(sd2_file.read_bytes())
    (tmp_path / "model.yaml").write_text(
        'model:\n  params:\n    parameterization: "v"\n    linear_start: 0.00085\n'
    )
    info = detect_checkpoint(path)
    assert (info.prediction, info.prediction_source) == ("v", "yaml")
    (tmp_path / "model.yaml").write_text("model:\n  params:\n    linear_start: 0.00085\n")
    assert detect_checkpoint(path).prediction == "eps"


def test_v_prediction_from_sd2_heuristic(sd2_file: Path, tmp_path: Path) -> None:
    state = load_file(str(sd2_file))
    last = max(int(k.split(".")[3]) for k in state if k.startswith("model.diffusion_model.output_blocks."))
    key = f"model.diffusion_model.output_blocks.{last}.1.transformer_blocks.0.norm1.bias"
    assert torch.std(state[key]) < 0.09
    state[key] = torch.randn(state[key].shape, generator=torch.Generator().manual_seed(0)) * 0.2
    path = tmp_path / "heuristic.safetensors"
    save_file(state, str(path))
    info = detect_checkpoint(path)
    assert (info.prediction, info.prediction_source) == ("v", "sd2 heuristic")


def test_sd15_never_uses_the_sd2_heuristic(tmp_path: Path) -> None:
    path = write_tiny_checkpoint("sd15", tmp_path / "a.safetensors")
    state = load_file(str(path))
    for key in [k for k in state if k.endswith("norm1.bias") and "output_blocks" in k]:
        state[key] = state[key] + torch.randn(state[key].shape) * 0.5
    save_file(state, str(path))
    assert detect_checkpoint(path).prediction == "eps"


def test_file_name_plays_no_part(sd2_file: Path, tmp_path: Path) -> None:
    misleading = tmp_path / "sd_xl_base_1.0_v-pred.safetensors"
    misleading.write_bytes(sd2_file.read_bytes())
    info = detect_checkpoint(misleading)
    assert (info.family, info.prediction) == ("sd2", "eps")


@pytest.mark.parametrize("family", ["sd15", "sd2", "sdxl"])
def test_full_size_shapes_give_the_shipped_configs(family: str) -> None:
    """Meta-device modules built from the shipped configs, written out in the original layout (names and
    shapes only), must detect back to the same architecture."""
    unet_cfg = family_config(family, "unet")
    names = ["text_encoder", "text_encoder_2"] if family == "sdxl" else ["text_encoder"]
    encoders = [empty_text_encoder(text_encoder_info(family, n)) for n in names]  # type: ignore[arg-type]
    state = original_state_dict(
        family, empty_unet(unet_cfg), empty_vae(family_config(family, "vae")), encoders, unet_cfg
    )
    base = index_state_dict(state, Path(f"<{family}>"), "safetensors")
    index = TensorIndex(base.path, "safetensors", base.entries, lambda key: torch.zeros(8))
    info = detect_index(index)
    assert info.family == family
    assert info.unet_config == unet_cfg
    assert info.vae_config == family_config(family, "vae")
    for te, name in zip(info.text_encoders, names, strict=True):
        expected = {
            k: v for k, v in family_config(family, name).items() if k not in ("architectures", "model_type")
        }
        assert te.config == expected


# -------------------------------------------------------------------------------------------------------
# files that are not usable checkpoints: always CheckpointError naming the file


def _error(path: Path, *, detect_fails: bool = True) -> str:
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert path.name in message
    if detect_fails:
        with pytest.raises(CheckpointError):
            detect_checkpoint(path)
    return message


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    assert "empty" in _error(path)


def test_garbage_header(tmp_path: Path) -> None:
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"this is definitely not a safetensors file" * 10)
    assert "not a valid safetensors file" in _error(path)
    path.write_bytes(struct.pack("<Q", 20) + b"{not json at all!!!}" + b"\0" * 40)
    assert "not JSON" in _error(path)


def test_truncated_file(sd2_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "truncated.safetensors"
    data = sd2_file.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "truncated" in _error(path)
    path.write_bytes(data[:5])
    _error(path)


def test_wrong_extension(sd2_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "model.txt"
    path.write_bytes(sd2_file.read_bytes())
    assert "extension" in _error(path)
    pickled = tmp_path / "pickled.safetensors"
    torch.save({"state_dict": {"x": torch.zeros(1)}}, pickled)
    assert "rename it to .ckpt" in _error(pickled)
    junk_ckpt = tmp_path / "junk.ckpt"
    junk_ckpt.write_bytes(b"\x00\x01garbage" * 50)
    assert "neither a safetensors file nor a PyTorch checkpoint" in _error(junk_ckpt)
    broken_zip = tmp_path / "broken.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1000)}}, broken_zip)
    broken_zip.write_bytes(broken_zip.read_bytes()[:300])
    assert "corrupt or truncated" in _error(broken_zip)


def test_missing_file_and_non_pipeline_folder(tmp_path: Path) -> None:
    assert "not found" in _error(tmp_path / "nothing.safetensors")
    folder = tmp_path / "some_folder"
    folder.mkdir()
    assert "not a diffusers pipeline" in _error(folder)


def test_lora_file(tmp_path: Path) -> None:
    path = tmp_path / "my_lora.safetensors"
    state: dict[str, torch.Tensor] = {}
    for n in range(104):
        base = f"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q{n}"
        state[f"{base}.lora_down.weight"] = torch.zeros(4, 32)
        state[f"{base}.lora_up.weight"] = torch.zeros(32, 4)
        state[f"{base}.alpha"] = torch.tensor(4.0)
    save_file(state, str(path))
    message = _error(path)
    assert "312 keys starting with lora_unet_" in message
    assert "LoRA" in message and "models/loras" in message


def test_vae_only_file_given_as_checkpoint(tmp_path: Path) -> None:
    state = load_file(str(write_tiny_checkpoint("sd15", tmp_path / "full.safetensors")))
    path = tmp_path / "just_a_vae.safetensors"
    save_file(
        {
            k.removeprefix("first_stage_model."): v
            for k, v in state.items()
            if k.startswith("first_stage_model.")
        },
        str(path),
    )
    assert "models/vae" in _error(path)


def test_sd3_and_flux_files(tmp_path: Path) -> None:
    sd3 = tmp_path / "sd3.safetensors"
    save_file(
        {
            f"model.diffusion_model.joint_blocks.{i}.x_block.attn.qkv.weight": torch.zeros(2, 2)
            for i in range(3)
        },
        str(sd3),
    )
    assert "Stable Diffusion 3" in _error(sd3)
    flux = tmp_path / "flux.safetensors"
    save_file({f"double_blocks.{i}.img_attn.qkv.weight": torch.zeros(2, 2) for i in range(3)}, str(flux))
    assert "Flux" in _error(flux)


def test_no_tensors_and_unknown_layout(tmp_path: Path) -> None:
    empty = tmp_path / "no_tensors.safetensors"
    save_file({}, str(empty))
    assert "no tensors" in _error(empty)
    unknown = tmp_path / "unknown.safetensors"
    save_file({"foo.bar.weight": torch.zeros(1), "foo.baz.weight": torch.zeros(1)}, str(unknown))
    assert "unrecognised layout" in _error(unknown)


def test_missing_required_tensors_are_listed(tmp_path: Path) -> None:
    state = load_file(str(write_tiny_checkpoint("sd15", tmp_path / "full.safetensors")))
    del state["model.diffusion_model.output_blocks.0.0.emb_layers.1.weight"]
    del state["cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc2.bias"]
    path = tmp_path / "incomplete.safetensors"
    save_file(state, str(path))
    message = _error(path, detect_fails=False)  # detection needs no weights; loading does
    assert "missing" in message and "up_blocks.0.resnets.0.time_emb_proj.weight" in message


def test_partial_unet(tmp_path: Path) -> None:
    state = load_file(str(write_tiny_checkpoint("sd15", tmp_path / "full.safetensors")))
    partial = {k: v for k, v in state.items() if not k.startswith("model.diffusion_model.out")}
    path = tmp_path / "partial.safetensors"
    save_file(partial, str(path))
    assert "incomplete" in _error(path)
    no_output_blocks = {k: v for k, v in state.items() if "output_blocks" not in k}
    save_file(no_output_blocks, str(path))
    assert "unsupported UNet layout" in _error(path)


def test_mismatched_text_encoder_width(tmp_path: Path) -> None:
    state = load_file(str(write_tiny_checkpoint("sd15", tmp_path / "full.safetensors")))
    key = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
    state[key] = torch.zeros(49408, 48)
    path = tmp_path / "mismatch.safetensors"
    save_file(state, str(path))
    assert "cross-attention dim 32" in _error(path)


def test_old_sd1_clip_names_without_text_model(tmp_path: Path) -> None:
    state = load_file(str(write_tiny_checkpoint("sd15", tmp_path / "full.safetensors")))
    old = {
        k.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."): v
        for k, v in state.items()
    }
    path = tmp_path / "old_names.safetensors"
    save_file(old, str(path))
    loaded = load_checkpoint(path)
    original = build_tiny_models("sd15").text_encoders[0].state_dict()
    assert all(torch.equal(v, original[k]) for k, v in loaded.text_encoders[0].state_dict().items())


def test_info_is_serialisable(sd2_file: Path) -> None:
    info = detect_checkpoint(sd2_file)
    data = json.loads(info.model_dump_json())
    assert data["family"] == "sd2" and data["unet_config"]["block_out_channels"] == [32, 64]
    assert pickle.loads(pickle.dumps(info)) == info
