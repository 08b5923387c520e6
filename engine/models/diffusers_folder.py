"""diffusers pipeline folders: detection from their config JSONs, and reading their weight files.

A folder (``model_index.json`` + ``unet/ vae/ text_encoder/ [text_encoder_2/] scheduler/``) states its
configs, so nothing is derived from shapes here; the family comes from the UNet config, the prediction
type from the scheduler config.
"""

import json
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from atelier.engine.models.errors import CheckpointError
from atelier.engine.models.files import load_torch_state_dict, open_single_file, read_safetensors_header
from atelier.engine.models.info import (
    VAE_SCALING_FACTOR,
    CheckpointInfo,
    Family,
    Prediction,
    TextEncoderInfo,
    unet_input_kind,
)


def _read_json(path: Path, folder: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(folder, f"diffusers folder lacks {path.relative_to(folder)}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(folder, f"cannot read {path.relative_to(folder)}: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(folder, f"{path.relative_to(folder)} is not a JSON object")
    return data


def is_diffusers_folder(path: Path) -> bool:
    return path.is_dir() and (
        (path / "model_index.json").is_file() or (path / "unet" / "config.json").is_file()
    )


def weight_files(folder: Path) -> list[Path]:
    """Weight files of one diffusers/transformers component folder, best first (safetensors, fp32)."""
    safetensors = sorted(folder.glob("*.safetensors"))
    if safetensors:
        plain = [p for p in safetensors if p.name.count(".") == 1]
        return plain or safetensors
    return sorted(folder.glob("*.bin"))


def detect_diffusers_folder(folder: str | Path) -> CheckpointInfo:
    """Detect a diffusers pipeline folder (model_index.json + unet/ vae/ text_encoder/ [text_encoder_2/])."""
    folder = Path(folder)
    if not is_diffusers_folder(folder):
        raise CheckpointError(
            folder, "folder is not a diffusers pipeline (no model_index.json or unet/config.json)"
        )
    unet_config = _read_json(folder / "unet" / "config.json", folder)
    channels = (int(unet_config.get("in_channels", 4)), int(unet_config.get("out_channels", 4)))
    if unet_input_kind(*channels) is None:
        raise CheckpointError(
            folder, f"unsupported UNet: {channels[0]} input channels (neither plain nor inpainting)"
        )
    vae_path = folder / "vae" / "config.json"
    vae_config = _read_json(vae_path, folder) if vae_path.is_file() else None
    te_configs: list[tuple[str, dict[str, Any]]] = []
    for name in ("text_encoder", "text_encoder_2"):
        cfg_path = folder / name / "config.json"
        if cfg_path.is_file():
            te_configs.append((name, _read_json(cfg_path, folder)))

    family: Family
    if unet_config.get("addition_embed_type") == "text_time":
        family = "sdxl"
        if [n for n, _ in te_configs] != ["text_encoder", "text_encoder_2"]:
            raise CheckpointError(
                folder, "SDXL folder without both text_encoder and text_encoder_2 (refiner?)"
            )
    elif unet_config.get("cross_attention_dim") == 1024:
        family = "sd2"
    elif unet_config.get("cross_attention_dim") == 768:
        family = "sd15"
    elif te_configs and te_configs[0][1].get("hidden_act") == "gelu":
        family = "sd2"
    else:
        family = "sd15"

    text_encoders: list[TextEncoderInfo] = []
    for name, cfg in te_configs:
        arch = (cfg.get("architectures") or ["CLIPTextModel"])[0]
        with_projection = arch == "CLIPTextModelWithProjection"
        open_clip = family == "sd2" or name == "text_encoder_2"
        config = {
            k: v for k, v in cfg.items() if not k.startswith("_") and k not in ("architectures", "model_type")
        }
        text_encoders.append(
            TextEncoderInfo(
                name=name,
                layout="open_clip" if open_clip else "clip_l",
                model_class="CLIPTextModelWithProjection" if with_projection else "CLIPTextModel",
                key_prefix=None,
                hidden_size=int(cfg["hidden_size"]),
                num_layers=int(cfg["num_hidden_layers"]),
                projection_dim=int(cfg.get("projection_dim", cfg["hidden_size"]))
                if with_projection
                else None,
                pad_token="!" if open_clip else "<|endoftext|>",
                # diffusers SD2 folders already drop the last layer, so their last layer is the one used
                default_layer=-2 if family == "sdxl" else -1,
                final_layer_norm=family != "sdxl",
                config=config,
            )
        )

    prediction: Prediction = "eps"
    source = "default"
    ztsnr = False
    sched = folder / "scheduler" / "scheduler_config.json"
    if sched.is_file():
        sched_cfg = _read_json(sched, folder)
        if sched_cfg.get("prediction_type") == "v_prediction":
            prediction, source = "v", "scheduler config"
        ztsnr = bool(sched_cfg.get("rescale_betas_zero_snr", False))

    dtype = "unknown"
    unet_weights = weight_files(folder / "unet")
    if unet_weights and unet_weights[0].suffix == ".safetensors":
        entries, _ = read_safetensors_header(unet_weights[0])
        counts = Counter(d for _, d in entries.values())
        dtype = counts.most_common(1)[0][0] if counts else "unknown"

    if vae_config is not None:
        vae_config = dict(vae_config)
        vae_config.setdefault("scaling_factor", VAE_SCALING_FACTOR[family])
    components = ["unet"] + (["vae"] if vae_config is not None else []) + [te.name for te in text_encoders]
    return CheckpointInfo(
        path=str(folder),
        source_format="diffusers",
        family=family,
        prediction=prediction,
        prediction_source=source,
        zero_terminal_snr=ztsnr,
        dtype=dtype,
        components=components,
        unet_config=unet_config,
        vae_config=vae_config,
        text_encoders=text_encoders,
        vae_scaling_factor=float(vae_config["scaling_factor"]) if vae_config else VAE_SCALING_FACTOR[family],
        tensor_count=0,
    )


def read_weight_files(folder: Path, owner: Path) -> dict[str, torch.Tensor]:
    """All tensors of one component folder (safetensors, possibly sharded, or .bin via weights_only)."""
    from safetensors.torch import load_file

    files = weight_files(folder)
    if not files:
        raise CheckpointError(owner, f"{folder.name}/ has no weight file (.safetensors or .bin)")
    # a sharded set comes with an index; variants such as *.fp16.safetensors are used only if alone
    names = {p.name for p in files}
    if len(files) > 1 and not any("-of-" in n for n in names):
        files = files[:1]
    out: dict[str, torch.Tensor] = {}
    for file in files:
        if file.suffix == ".safetensors":
            open_single_file(file)  # validates the header with a clear message
            try:
                out.update(load_file(str(file), device="cpu"))
            except Exception as exc:
                raise CheckpointError(file, f"cannot read safetensors data: {exc}") from None
        else:
            out.update(load_torch_state_dict(file))
    return out
