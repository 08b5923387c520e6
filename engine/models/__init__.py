"""Stable Diffusion model files: detection from tensor shapes, loading, tiny random test models.

Public API (imported lazily, so that importing a light submodule does not import diffusers)::

    detect_checkpoint(path) -> CheckpointInfo
    load_checkpoint(path, *, device="cpu", dtype=None, vae_dtype=None, compute_hash=True) -> LoadedCheckpoint
    load_vae(path, *, family=None, device="cpu", dtype=None) -> AutoencoderKL
    file_hash(path) -> FileHash(sha256, autov2)
    write_tiny_checkpoint(arch, out, seed=0, dtype=torch.float32, *, v_prediction=False) -> Path
    build_tiny_models(arch, *, seed=0, dtype=torch.float32, device="cpu") -> TinyModels
    build_random_sd15(*, seed=0, device="cpu", dtype=None) -> LoadedCheckpoint
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atelier.engine.models.checkpoint import (
        FileHash,
        LoadedCheckpoint,
        detect_state_dict,
        file_hash,
        file_sha256,
        load_checkpoint,
        load_clip_tokenizer,
        load_state_dict_file,
        load_vae,
    )
    from atelier.engine.models.detect import (
        CONFIG_DIR,
        TOKENIZER_DIR,
        VAE_SCALING_FACTOR,
        CheckpointError,
        CheckpointInfo,
        Family,
        Prediction,
        TextEncoderInfo,
        detect_checkpoint,
        family_config,
    )
    from atelier.engine.models.layout import original_state_dict, unet_key_map
    from atelier.engine.models.tiny import (
        TinyModels,
        build_random_sd15,
        build_tiny_models,
        write_tiny_checkpoint,
    )

__all__ = [
    "CONFIG_DIR",
    "TOKENIZER_DIR",
    "VAE_SCALING_FACTOR",
    "CheckpointError",
    "CheckpointInfo",
    "Family",
    "FileHash",
    "LoadedCheckpoint",
    "Prediction",
    "TextEncoderInfo",
    "TinyModels",
    "build_random_sd15",
    "build_tiny_models",
    "detect_checkpoint",
    "detect_state_dict",
    "family_config",
    "file_hash",
    "file_sha256",
    "load_checkpoint",
    "load_clip_tokenizer",
    "load_state_dict_file",
    "load_vae",
    "original_state_dict",
    "unet_key_map",
    "write_tiny_checkpoint",
]

_MODULES: dict[str, tuple[str, ...]] = {
    "atelier.engine.models.detect": (
        "CONFIG_DIR",
        "TOKENIZER_DIR",
        "VAE_SCALING_FACTOR",
        "CheckpointError",
        "CheckpointInfo",
        "Family",
        "Prediction",
        "TextEncoderInfo",
        "detect_checkpoint",
        "family_config",
    ),
    "atelier.engine.models.checkpoint": (
        "FileHash",
        "LoadedCheckpoint",
        "detect_state_dict",
        "file_hash",
        "file_sha256",
        "load_checkpoint",
        "load_clip_tokenizer",
        "load_state_dict_file",
        "load_vae",
    ),
    "atelier.engine.models.layout": ("original_state_dict", "unet_key_map"),
    "atelier.engine.models.tiny": (
        "TinyModels",
        "build_random_sd15",
        "build_tiny_models",
        "write_tiny_checkpoint",
    ),
}
_EXPORTS: dict[str, str] = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'atelier.engine.models' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
