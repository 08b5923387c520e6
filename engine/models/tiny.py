"""Random-weight models for tests and benchmarks.

``write_tiny_checkpoint`` writes a tiny SD1.5 / SD2 / SDXL model in the exact single-file layout of real
checkpoints (same tensor names and shape conventions), so that tests load it through the same detection and
loading code as a real file; ``inpaint=True`` gives it an inpainting UNet (9 input channels: latent, mask,
masked picture's latent), as in sd-v1-5-inpainting or sd_xl_base_1.0_inpainting. ``build_tiny_models`` gives the in-memory modules the file was written from
(same seed, same bytes). ``build_random_sd15`` builds the full-size SD1.5 architecture with random weights.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file

from atelier.engine.models.build import (
    TextEncoder,
    assign_weights,
    empty_text_encoder,
    empty_unet,
    empty_vae,
    resolve_dtype,
)
from atelier.engine.models.info import (
    INPAINT_EXTRA_CHANNELS,
    SDXL_FAMILIES,
    VAE_SCALING_FACTOR,
    CheckpointInfo,
    Family,
    TextEncoderInfo,
    family_config,
    family_text_layer,
)
from atelier.engine.models.layout import original_state_dict
from atelier.engine.models.libraries import AutoencoderKL, UNet2DConditionModel
from atelier.engine.models.load import LoadedCheckpoint
from atelier.engine.models.names import (
    SD1_CLIP_PREFIX,
    SD2_CLIP_PREFIX,
    SDXL_CLIP_G_PREFIX,
    SDXL_CLIP_L_PREFIX,
    SDXL_REFINER_CLIP_G_PREFIX,
    text_encoder_prefixes,
)
from atelier.engine.models.tokenizer import load_clip_tokenizer

TinyArch = Literal["sd15", "sd2", "sdxl", "sdxl_refiner"]

# Tiny sizes. UNet levels (32, 64); the VAE keeps four levels so that latents are 1/8 of the image size,
# as with real models. Text encoders keep the real vocabulary (49408) and 77 positions.
_TINY_UNET: dict[str, dict[str, Any]] = {
    "sd15": {
        "block_out_channels": [32, 64],
        "layers_per_block": 2,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "cross_attention_dim": 32,
        "attention_head_dim": 8,
        "transformer_layers_per_block": 1,
        "sample_size": 8,
    },
    "sd2": {
        "block_out_channels": [32, 64],
        "layers_per_block": 2,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "cross_attention_dim": 64,
        "attention_head_dim": [1, 1],
        "transformer_layers_per_block": 1,
        "sample_size": 8,
    },
    "sdxl": {
        "block_out_channels": [32, 64],
        "layers_per_block": 2,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "cross_attention_dim": 96,
        "attention_head_dim": [1, 1],
        "transformer_layers_per_block": [1, 2],
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 80,  # pooled 32 + 6 * 8
        "sample_size": 8,
    },
    "sdxl_refiner": {
        "block_out_channels": [32, 64],
        "layers_per_block": 2,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "cross_attention_dim": 64,  # OpenCLIP-G's width alone
        "attention_head_dim": [1, 1],
        "transformer_layers_per_block": [1, 2],
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 72,  # pooled 32 + 5 * 8 (sizes, crop, aesthetic score)
        "sample_size": 8,
    },
}
_TINY_VAE: dict[str, Any] = {
    "block_out_channels": [32, 32, 64, 64],
    "layers_per_block": 1,
    "sample_size": 64,
}
# (component, hidden, layers, projection_dim)
_TINY_TEXT: dict[str, list[tuple[str, int, int, int | None]]] = {
    "sd15": [("text_encoder", 32, 2, None)],
    "sd2": [("text_encoder", 64, 2, None)],
    "sdxl": [("text_encoder", 32, 2, None), ("text_encoder_2", 64, 2, 32)],
    "sdxl_refiner": [("text_encoder_2", 64, 2, 32)],
}


@dataclass
class TinyModels:
    """In-memory modules of a tiny (or random full-size) model and their configs."""

    family: Family
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoders: list[TextEncoder]
    info: CheckpointInfo

    def original_state_dict(self) -> dict[str, torch.Tensor]:
        """The single-file state dict (original layout) of these modules."""
        return original_state_dict(
            self.family, self.unet, self.vae, self.text_encoders, self.info.unet_config
        )


def _derived_seed(seed: int, tag: str) -> int:
    digest = hashlib.sha256(f"{seed}:{tag}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def _random_tensor(name: str, shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """Random values with sensible scales: weights ~ N(0, 1/fan_in), biases and embeddings small,
    norm weights near 1 (all non-constant, so a mixed-up mapping cannot go unnoticed)."""
    noise = torch.randn(tuple(shape), generator=generator, dtype=torch.float32)
    if name.endswith("bias"):
        return noise * 0.02
    if len(shape) == 1:
        return 1.0 + noise * 0.02
    if name.endswith(("token_embedding.weight", "position_embedding.weight")):
        return noise * 0.02
    fan_in = 1
    for d in shape[1:]:
        fan_in *= int(d)
    return noise / fan_in**0.5


def randomize(
    module: torch.nn.Module, *, seed: int, tag: str, device: str | torch.device, dtype: torch.dtype
) -> torch.nn.Module:
    """Give a meta-device module deterministic random weights (generated on the CPU in float32)."""
    generator = torch.Generator().manual_seed(_derived_seed(seed, tag))
    state = {
        name: _random_tensor(name, tuple(t.shape), generator)
        for name, t in module.state_dict(keep_vars=True).items()
    }
    return assign_weights(module, state, device=device, dtype=dtype, path=f"<random {tag}>", component=tag)


def text_encoder_info(
    family: Family,
    name: str,
    hidden: int | None = None,
    layers: int | None = None,
    projection_dim: int | None = None,
) -> TextEncoderInfo:
    """A family's text encoder ``name`` as the family uses it; full size unless ``hidden`` (and ``layers``,
    ``projection_dim``) give smaller widths. Heads follow the detection rule (64 channels per head)."""
    config = {
        k: v for k, v in family_config(family, name).items() if k not in ("architectures", "model_type")
    }
    if hidden is not None:
        config.update(
            hidden_size=hidden,
            intermediate_size=4 * hidden,
            num_hidden_layers=layers if layers is not None else config["num_hidden_layers"],
            num_attention_heads=1 if hidden < 64 else hidden // 64,
            projection_dim=projection_dim or hidden,
        )
    with_projection = family in SDXL_FAMILIES and name == "text_encoder_2"
    names = ["text_encoder_2"] if family == "sdxl_refiner" else ["text_encoder", "text_encoder_2"]
    layouts = dict(zip(names, text_encoder_prefixes(family), strict=False))
    prefix, layout = layouts[name]
    default_layer, final_ln = family_text_layer(family)
    return TextEncoderInfo(
        name=name,
        layout="open_clip" if layout == "open_clip" else "clip_l",
        model_class="CLIPTextModelWithProjection" if with_projection else "CLIPTextModel",
        key_prefix=prefix,
        hidden_size=int(config["hidden_size"]),
        num_layers=int(config["num_hidden_layers"]),
        projection_dim=int(config["projection_dim"]) if with_projection else None,
        pad_token="!" if layout == "open_clip" else "<|endoftext|>",
        default_layer=default_layer,
        final_layer_norm=final_ln,
        config=config,
    )


def _synthetic_info(
    family: Family,
    unet_config: dict[str, Any],
    vae_config: dict[str, Any],
    text_encoders: list[TextEncoderInfo],
    dtype: torch.dtype,
    label: str,
) -> CheckpointInfo:
    return CheckpointInfo(
        path=label,
        source_format="safetensors",
        family=family,
        prediction="eps",
        prediction_source="default",
        zero_terminal_snr=False,
        dtype=str(dtype).removeprefix("torch."),
        components=["unet", "vae"] + [te.name for te in text_encoders],
        unet_config=unet_config,
        vae_config=vae_config,
        text_encoders=text_encoders,
        vae_scaling_factor=VAE_SCALING_FACTOR[family],
        tensor_count=0,
    )


def _build(
    family: Family,
    unet_config: dict[str, Any],
    vae_config: dict[str, Any],
    text_infos: list[TextEncoderInfo],
    *,
    seed: int,
    device: str | torch.device,
    dtype: torch.dtype,
    label: str,
) -> TinyModels:
    unet = randomize(empty_unet(unet_config), seed=seed, tag="unet", device=device, dtype=dtype)
    vae = randomize(empty_vae(vae_config), seed=seed, tag="vae", device=device, dtype=dtype)
    encoders = [
        randomize(empty_text_encoder(te), seed=seed, tag=te.name, device=device, dtype=dtype)
        for te in text_infos
    ]
    info = _synthetic_info(family, unet_config, vae_config, text_infos, dtype, label)
    return TinyModels(
        family=family,
        unet=unet,  # type: ignore[arg-type]
        vae=vae,  # type: ignore[arg-type]
        text_encoders=encoders,  # type: ignore[arg-type]
        info=info,
    )


def build_tiny_models(
    arch: TinyArch,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    inpaint: bool = False,
    unet_overrides: dict[str, Any] | None = None,
) -> TinyModels:
    """The tiny random modules that ``write_tiny_checkpoint(arch, seed=seed, dtype=dtype, inpaint=...)``
    writes; ``unet_overrides`` change the UNet's config (an unCLIP model's image-embedding input)."""
    if arch not in _TINY_UNET:
        raise ValueError(f"unknown tiny architecture {arch!r} (expected one of {sorted(_TINY_UNET)})")
    family: Family = arch
    unet_config = {**family_config(family, "unet"), **_TINY_UNET[arch], **(unet_overrides or {})}
    if inpaint:
        unet_config["in_channels"] = unet_config["out_channels"] + INPAINT_EXTRA_CHANNELS
    vae_config = {**family_config(family, "vae"), **_TINY_VAE}
    vae_config["down_block_types"] = ["DownEncoderBlock2D"] * len(_TINY_VAE["block_out_channels"])
    vae_config["up_block_types"] = ["UpDecoderBlock2D"] * len(_TINY_VAE["block_out_channels"])
    text_infos = [text_encoder_info(family, *spec) for spec in _TINY_TEXT[arch]]
    return _build(
        family,
        unet_config,
        vae_config,
        text_infos,
        seed=seed,
        device=device,
        dtype=dtype,
        label=f"<tiny {arch}{' inpaint' if inpaint else ''}>",
    )


def _ddpm_schedule_buffers() -> dict[str, torch.Tensor]:
    """The noise-schedule buffers that ldm-trained SD1/SD2 checkpoints carry (scaled linear betas)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas = 1.0 - betas
    cumprod = torch.cumprod(alphas, dim=0)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), cumprod[:-1]])
    posterior_variance = betas * (1.0 - prev) / (1.0 - cumprod)
    buffers = {
        "betas": betas,
        "alphas_cumprod": cumprod,
        "alphas_cumprod_prev": prev,
        "sqrt_alphas_cumprod": cumprod.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - cumprod).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - cumprod).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / cumprod - 1.0).sqrt(),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * prev.sqrt() / (1.0 - cumprod),
        "posterior_mean_coef2": (1.0 - prev) * alphas.sqrt() / (1.0 - cumprod),
    }
    return {k: v.to(torch.float32) for k, v in buffers.items()}


def _realistic_extras(models: TinyModels, seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Tensors real checkpoints carry besides the modules' weights (the loader ignores them)."""
    extras: dict[str, torch.Tensor] = {}
    logit_scale = torch.tensor(4.6052, dtype=dtype)  # ln(100), as trained OpenCLIP models end up
    if models.family in ("sd15", "sd2"):
        extras.update(_ddpm_schedule_buffers())
    if models.family in ("sd15", "sdxl"):
        positions = models.info.text_encoders[0].config["max_position_embeddings"]
        prefix = SD1_CLIP_PREFIX if models.family == "sd15" else SDXL_CLIP_L_PREFIX
        extras[prefix + "text_model.embeddings.position_ids"] = torch.arange(positions)[None]
    if models.family == "sd2":
        # SD2 files keep OpenCLIP's projection although SD2 does not use it
        width = models.info.text_encoders[0].hidden_size
        generator = torch.Generator().manual_seed(_derived_seed(seed, "sd2_text_projection"))
        projection = torch.randn(width, width, generator=generator) / width**0.5
        extras[SD2_CLIP_PREFIX + "text_projection"] = projection.to(dtype)
        extras[SD2_CLIP_PREFIX + "logit_scale"] = logit_scale
    if models.family == "sdxl":
        extras[SDXL_CLIP_G_PREFIX + "logit_scale"] = logit_scale
    if models.family == "sdxl_refiner":
        extras[SDXL_REFINER_CLIP_G_PREFIX + "logit_scale"] = logit_scale
    return extras


def _write_checkpoint(
    models: TinyModels, out: str | Path, seed: int, dtype: torch.dtype, extra: dict[str, torch.Tensor]
) -> Path:
    """``models`` as a single-file checkpoint in the original layout, with what real files carry besides
    the networks (the noise schedule, the CLIP position ids) and ``extra`` keys."""
    state = {k: v.detach().contiguous() for k, v in models.original_state_dict().items()}
    state.update(_realistic_extras(models, seed, dtype))
    state.update(extra)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # one metadata entry only: safetensors writes metadata in hash-map order, which varies between runs
    save_file(state, str(out), metadata={"format": "pt"})
    return out


def write_tiny_checkpoint(
    arch: TinyArch,
    out: str | Path,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    *,
    v_prediction: bool = False,
    inpaint: bool = False,
) -> Path:
    """Write a tiny random-weight checkpoint in the single-file original layout of real ones.

    Deterministic: the same ``(arch, seed, dtype, inpaint)`` gives a byte-identical file. ``v_prediction``
    adds the ``v_pred`` marker key (as ComfyUI writes for v-prediction models); ``inpaint`` makes the UNet
    an inpainting one (9 input channels). Returns the path written."""
    models = build_tiny_models(arch, seed=seed, dtype=dtype, inpaint=inpaint)
    return _write_checkpoint(models, out, seed, dtype, {"v_pred": torch.tensor([])} if v_prediction else {})


#: the text encoders of each full-size family's checkpoint
_FULL_SIZE_TEXT = {
    "sd15": ["text_encoder"],
    "sd2": ["text_encoder"],
    "sdxl": ["text_encoder", "text_encoder_2"],
}


def _build_full_size(
    family: Family, seed: int, device: str | torch.device, dtype: torch.dtype
) -> tuple[TinyModels, list[TextEncoderInfo]]:
    """The full-size architecture of ``family`` (the shipped configs) with random weights, generated on the
    CPU (float32, deterministic per seed), then cast and moved tensor by tensor."""
    if family not in _FULL_SIZE_TEXT:
        raise ValueError(f"no random full-size {family!r} (expected one of {sorted(_FULL_SIZE_TEXT)})")
    text_infos = [text_encoder_info(family, name) for name in _FULL_SIZE_TEXT[family]]
    models = _build(
        family,
        family_config(family, "unet"),
        family_config(family, "vae"),
        text_infos,
        seed=seed,
        device=device,
        dtype=dtype,
        label=f"<random {family}>",
    )
    return models, text_infos


def build_random_sd15(
    *, seed: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> LoadedCheckpoint:
    """The full-size SD1.5 architecture (UNet 860M, VAE 84M, CLIP-L 123M) with random weights, built in
    memory, for benchmarks."""
    models, text_infos = _build_full_size("sd15", seed, device, resolve_dtype(device, dtype))
    return LoadedCheckpoint(
        unet=models.unet,
        vae=models.vae,
        text_encoders=models.text_encoders,
        tokenizers=[load_clip_tokenizer(te.pad_token) for te in text_infos],
        info=models.info,
        sha256=hashlib.sha256(f"atelier random sd15 seed={seed}".encode()).hexdigest(),
    )


def write_random_checkpoint(
    family: Family, out: str | Path, *, seed: int = 0, dtype: torch.dtype = torch.float16
) -> Path:
    """Write the full-size architecture of ``family`` ("sd15", "sd2", "sdxl") with random weights as a
    single-file checkpoint in the original layout, for benchmarks that load through the real loader (an
    SDXL file in fp16 is about 7 GB)."""
    models, _ = _build_full_size(family, seed, "cpu", dtype)
    return _write_checkpoint(models, out, seed, dtype, {})
