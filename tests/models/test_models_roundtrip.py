"""Tiny checkpoints: in-memory modules -> single file (original layout) -> detect -> load -> same model."""

from pathlib import Path

import pytest
import torch

from atelier.engine.models import (
    build_tiny_models,
    detect_checkpoint,
    load_checkpoint,
    write_tiny_checkpoint,
)
from atelier.engine.models.tiny import TinyModels


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {
        arch: write_tiny_checkpoint(arch, root / f"{arch}.safetensors", seed=0) for arch in ("sd15", "sdxl")
    }


@pytest.fixture(scope="module")
def originals() -> dict[str, TinyModels]:
    return {arch: build_tiny_models(arch, seed=0) for arch in ("sd15", "sdxl")}


def _assert_same_weights(loaded: torch.nn.Module, original: torch.nn.Module) -> None:
    a, b = loaded.state_dict(), original.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


def _unet_inputs(models: TinyModels, batch: int = 2) -> dict[str, object]:
    g = torch.Generator().manual_seed(1)
    cfg = models.info.unet_config
    sample = torch.randn(batch, 4, 8, 8, generator=g)
    context = torch.randn(batch, 77, cfg["cross_attention_dim"], generator=g)
    kwargs: dict[str, object] = {
        "sample": sample,
        "timestep": torch.tensor([999, 10]),
        "encoder_hidden_states": context,
    }
    if models.family == "sdxl":
        pooled = models.info.text_encoders[1].projection_dim
        kwargs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(batch, pooled, generator=g),
            "time_ids": torch.tensor([[512.0, 512.0, 0.0, 0.0, 512.0, 512.0]] * batch),
        }
    return kwargs


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_detects_family_and_configs_from_shapes(arch: str, tiny_files: dict[str, Path]) -> None:
    info = detect_checkpoint(tiny_files[arch])
    assert info.family == arch
    assert info.prediction == "eps" and info.prediction_source == "default"
    assert info.dtype == "float32"
    assert info.source_format == "safetensors"
    cfg = info.unet_config
    # widths come from the file, not from the full-size family config
    assert cfg["block_out_channels"] == [32, 64]
    assert cfg["layers_per_block"] == 2
    assert info.vae_config is not None and info.vae_config["block_out_channels"] == [32, 32, 64, 64]
    if arch == "sd15":
        assert info.components == ["unet", "vae", "text_encoder"]
        assert cfg["cross_attention_dim"] == 32 and cfg["use_linear_projection"] is False
        assert cfg["down_block_types"] == ["CrossAttnDownBlock2D", "DownBlock2D"]
        assert info.vae_scaling_factor == pytest.approx(0.18215)
        assert [te.hidden_size for te in info.text_encoders] == [32]
    else:
        assert info.components == ["unet", "vae", "text_encoder", "text_encoder_2"]
        assert cfg["cross_attention_dim"] == 96 and cfg["use_linear_projection"] is True
        assert cfg["down_block_types"] == ["DownBlock2D", "CrossAttnDownBlock2D"]
        assert cfg["transformer_layers_per_block"] == [1, 2]
        assert cfg["addition_time_embed_dim"] == 8 and cfg["projection_class_embeddings_input_dim"] == 80
        assert info.vae_scaling_factor == pytest.approx(0.13025)
        assert [(te.layout, te.hidden_size, te.projection_dim) for te in info.text_encoders] == [
            ("clip_l", 32, None),
            ("open_clip", 64, 32),
        ]
        assert [te.pad_token for te in info.text_encoders] == ["<|endoftext|>", "!"]


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_round_trip_gives_identical_weights_and_outputs(
    arch: str, tiny_files: dict[str, Path], originals: dict[str, TinyModels]
) -> None:
    loaded = load_checkpoint(tiny_files[arch])
    original = originals[arch]
    assert loaded.vae is not None
    _assert_same_weights(loaded.unet, original.unet)
    _assert_same_weights(loaded.vae, original.vae)
    assert len(loaded.text_encoders) == len(original.text_encoders) == len(loaded.tokenizers)
    for a, b in zip(loaded.text_encoders, original.text_encoders, strict=True):
        assert type(a) is type(b)
        _assert_same_weights(a, b)
    assert not loaded.unet.training and not any(p.requires_grad for p in loaded.unet.parameters())

    with torch.no_grad():
        kwargs = _unet_inputs(original)
        out_a = loaded.unet(**kwargs).sample  # type: ignore[arg-type]
        out_b = original.unet(**kwargs).sample  # type: ignore[arg-type]
        assert out_a.shape == (2, 4, 8, 8)
        assert torch.isfinite(out_a).all()
        assert torch.equal(out_a, out_b)

        image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
        latent_a = loaded.vae.encode(image).latent_dist.mean
        latent_b = original.vae.encode(image).latent_dist.mean
        assert latent_a.shape == (1, 4, 8, 8)  # 1/8 of the image, as with real VAEs
        assert torch.equal(latent_a, latent_b)
        assert torch.equal(loaded.vae.decode(latent_a).sample, original.vae.decode(latent_b).sample)

        for tokenizer, a, b in zip(
            loaded.tokenizers, loaded.text_encoders, original.text_encoders, strict=True
        ):
            ids = tokenizer(
                "a photo of a cat", padding="max_length", max_length=77, return_tensors="pt"
            ).input_ids
            ra = a(ids, output_hidden_states=True)
            rb = b(ids, output_hidden_states=True)
            assert torch.equal(ra.last_hidden_state, rb.last_hidden_state)
            assert torch.equal(ra.hidden_states[-2], rb.hidden_states[-2])
            if hasattr(ra, "text_embeds"):
                assert ra.text_embeds.shape == (1, 32)
                assert torch.equal(ra.text_embeds, rb.text_embeds)


def test_file_uses_the_original_single_file_layout(tiny_files: dict[str, Path]) -> None:
    from safetensors import safe_open

    with safe_open(str(tiny_files["sd15"]), "pt") as f:
        keys = set(f.keys())
        assert f.get_slice("first_stage_model.encoder.mid.attn_1.q.weight").get_shape() == [64, 64, 1, 1]
        assert f.get_slice("model.diffusion_model.input_blocks.1.1.proj_in.weight").get_shape() == [
            32,
            32,
            1,
            1,
        ]
    for key in (
        "model.diffusion_model.input_blocks.0.0.weight",
        "model.diffusion_model.input_blocks.3.0.op.weight",
        "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight",
        "model.diffusion_model.output_blocks.2.1.conv.weight",  # up level without attention: .1
        "model.diffusion_model.output_blocks.5.1.transformer_blocks.0.ff.net.0.proj.weight",
        "model.diffusion_model.out.2.weight",
        "first_stage_model.decoder.up.3.upsample.conv.weight",
        "first_stage_model.quant_conv.weight",
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
        "cond_stage_model.transformer.text_model.encoder.layers.1.self_attn.q_proj.weight",
        "cond_stage_model.transformer.text_model.embeddings.position_ids",
        "alphas_cumprod",
    ):
        assert key in keys, key
    assert not any(k.startswith(("unet.", "down_blocks.", "vae.")) for k in keys)

    with safe_open(str(tiny_files["sdxl"]), "pt") as f:
        keys = set(f.keys())
        g = "conditioner.embedders.1.model."
        assert f.get_slice(g + "transformer.resblocks.0.attn.in_proj_weight").get_shape() == [192, 64]
        assert f.get_slice(g + "text_projection").get_shape() == [64, 32]  # x @ text_projection
        assert f.get_slice("model.diffusion_model.label_emb.0.0.weight").get_shape() == [128, 80]
    for key in (
        "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight",
        g + "positional_embedding",
        g + "ln_final.weight",
        g + "logit_scale",
        "model.diffusion_model.output_blocks.2.2.conv.weight",  # up level with attention: .2
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.1.attn1.to_q.weight",
    ):
        assert key in keys, key


def test_writer_is_deterministic(tmp_path: Path, tiny_files: dict[str, Path]) -> None:
    again = write_tiny_checkpoint("sd15", tmp_path / "again.safetensors", seed=0)
    assert again.read_bytes() == tiny_files["sd15"].read_bytes()
    other = write_tiny_checkpoint("sd15", tmp_path / "other.safetensors", seed=1)
    assert other.read_bytes() != again.read_bytes()
