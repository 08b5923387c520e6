"""Loading a standalone VAE file (``vae-ft-mse-840000``, ``sdxl_vae`` and the like) or a diffusers VAE folder.

Standalone VAE files come in both layouts, the original one (``encoder.down.N.block.M``, possibly under
``first_stage_model.`` or ``vae.``) and diffusers' (``encoder.down_blocks.N.resnets.M``, sometimes with
the old ``query``/``key``/``value`` attention names). The config is derived from shapes either way; the
latent scaling factor cannot be, so it follows the family the caller names.
"""

import json
from pathlib import Path

import torch

from atelier.engine.models.build import assign_weights, empty_vae, guard, resolve_dtype
from atelier.engine.models.derive import children, derive_vae_config
from atelier.engine.models.diffusers_folder import read_weight_files
from atelier.engine.models.errors import CheckpointError
from atelier.engine.models.files import TensorIndex, open_single_file
from atelier.engine.models.info import VAE_SCALING_FACTOR, Family
from atelier.engine.models.libraries import AutoencoderKL, convert_ldm_vae_checkpoint
from atelier.engine.models.names import UNET_PREFIX, vae_names

_OLD_VAE_ATTENTION = {
    ".query.": ".to_q.",
    ".key.": ".to_k.",
    ".value.": ".to_v.",
    ".proj_attn.": ".to_out.0.",
}


def _modern_attention(key: str) -> str:
    """Old diffusers VAE attention names (query/key/value/proj_attn) -> current ones."""
    if ".mid_block.attentions." not in key:
        return key
    for old, new in _OLD_VAE_ATTENTION.items():
        key = key.replace(old, new)
    return key


def _original_view_of_diffusers_vae(index: TensorIndex) -> TensorIndex:
    """Original-layout names for a diffusers-layout VAE index, to derive its config from shapes."""
    keys = index.keys()
    levels = children(keys, "encoder.down_blocks.")
    # just enough config for the name map: how many levels, and res blocks per encoder level
    config = {
        "block_out_channels": [0] * len(levels),
        "layers_per_block": len(children(keys, "encoder.down_blocks.0.resnets.")),
    }
    names = vae_names(config)
    entries: dict[str, tuple[tuple[int, ...], str]] = {}
    for key, entry in index.entries.items():
        try:
            entries[names.to_original(_modern_attention(key))] = entry
        except KeyError:
            continue
    return TensorIndex(index.path, index.source_format, entries, index.read)


def load_vae(
    path: str | Path,
    *,
    family: Family | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> AutoencoderKL:
    """Load a standalone VAE: a single file in the original layout (``encoder.*``/``decoder.*``, possibly
    under ``first_stage_model.`` or ``vae.``) or the diffusers layout, or a diffusers VAE folder.
    The latent scaling factor follows ``family`` (SDXL 0.13025, else 0.18215): shapes cannot tell an
    SDXL VAE from an SD1 one."""
    path = Path(path)
    dtype = resolve_dtype(device, dtype)
    scaling = VAE_SCALING_FACTOR[family or "sd15"]
    if path.is_dir():
        folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise CheckpointError(path, "folder has no config.json (not a diffusers VAE)")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(config_path, f"cannot read config: {exc}") from None
        if family is not None:
            config["scaling_factor"] = scaling
        sd = read_weight_files(folder, path)
        return guard(
            path,
            "VAE",
            lambda: assign_weights(
                empty_vae(config), sd, device=device, dtype=dtype, path=path, component="VAE"
            ),
        )

    index = open_single_file(path)
    prefix = next(
        (p for p in ("first_stage_model.", "vae.", "") if p + "encoder.conv_in.weight" in index), None
    )
    if prefix is None or prefix + "decoder.conv_in.weight" not in index:
        if UNET_PREFIX + "input_blocks.0.0.weight" in index:
            raise CheckpointError(path, "this is a full checkpoint, not a VAE; load it as a checkpoint")
        raise CheckpointError(path, "no encoder.conv_in / decoder.conv_in tensors: not a VAE file")
    if prefix:
        stripped = {k[len(prefix) :]: v for k, v in index.entries.items() if k.startswith(prefix)}
        base = index
        index = TensorIndex(path, index.source_format, stripped, lambda key: base.read(prefix + key))
    diffusers_layout = "encoder.down_blocks.0.resnets.0.conv1.weight" in index

    def build() -> AutoencoderKL:
        if diffusers_layout:
            config = derive_vae_config(_original_view_of_diffusers_vae(index), "", family)
            raw = {
                k: index.read(k)
                for k in index.keys()
                if k.startswith(("encoder.", "decoder.", "quant", "post_quant"))
            }
            sd = {_modern_attention(k): v for k, v in raw.items()}
            for k, v in list(sd.items()):
                if ".mid_block.attentions." in k and k.endswith(".weight") and v.ndim == 4:
                    sd[k] = v[:, :, 0, 0]
        else:
            config = derive_vae_config(index, "", family)
            raw = {k: index.read(k) for k in index.keys()}
            sd = convert_ldm_vae_checkpoint(raw, config)
        config["scaling_factor"] = scaling
        return assign_weights(empty_vae(config), sd, device=device, dtype=dtype, path=path, component="VAE")

    return guard(path, "VAE", build)
