"""Stable Diffusion model files: detection from tensor shapes, loading, tiny random test models (file
hashing lives in the core, ``atelier.engine.hashing``, and is re-exported here).

Public API (imported lazily, so that importing a light submodule does not import diffusers)::

    detect_checkpoint(path) -> CheckpointInfo
    load_checkpoint(path, *, device="cpu", dtype=None, vae_dtype=None, compute_hash=False, hashes=None)
        -> LoadedCheckpoint        (.sha256 / .autov2 computed on first access, .fingerprint cheap)
    load_vae(path, *, family=None, device="cpu", dtype=None) -> AutoencoderKL
    file_fingerprint(path) -> str  (resolved path, size, mtime_ns: for cache signatures)
    file_sha256(path) -> str       (content hash, read now; an engine remembers them: ctx.files.sha256)
    file_hash(path) -> FileHash(sha256, autov2)
    write_tiny_checkpoint(arch, out, seed=0, dtype=torch.float32, *, v_prediction=False, inpaint=False)
        -> Path
    build_tiny_models(arch, *, seed=0, dtype=torch.float32, device="cpu", inpaint=False) -> TinyModels
    build_random_sd15(*, seed=0, device="cpu", dtype=None) -> LoadedCheckpoint

Modules, one job each: ``names`` (the diffusers <-> original name map), ``layout`` (writing the original
layout), ``files`` (reading files), ``info`` (what a checkpoint holds), ``detect`` / ``derive`` /
``describe`` / ``diffusers_folder`` (finding that out), ``build`` / ``load`` / ``vae`` (modules and
weights), ``tokenizer``, ``lora`` / ``patches`` (LoRA), ``tiny`` (random test models).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atelier.engine.hashing import (
        FileHash,
        FileHashes,
        file_autov2,
        file_fingerprint,
        file_hash,
        file_sha256,
    )
    from atelier.engine.models.detect import detect_checkpoint, detect_state_dict
    from atelier.engine.models.errors import CheckpointError
    from atelier.engine.models.files import load_state_dict_file
    from atelier.engine.models.info import (
        CONFIG_DIR,
        TOKENIZER_DIR,
        VAE_SCALING_FACTOR,
        CheckpointInfo,
        Family,
        Prediction,
        TextEncoderInfo,
        family_config,
    )
    from atelier.engine.models.layout import original_state_dict, unet_key_map
    from atelier.engine.models.load import LoadedCheckpoint, load_checkpoint
    from atelier.engine.models.names import NameMap, NamePair, clip_names, unet_names, vae_names
    from atelier.engine.models.tiny import (
        TinyModels,
        build_random_sd15,
        build_tiny_models,
        write_tiny_checkpoint,
    )
    from atelier.engine.models.tokenizer import load_clip_tokenizer
    from atelier.engine.models.vae import load_vae

__all__ = [
    "CONFIG_DIR",
    "TOKENIZER_DIR",
    "VAE_SCALING_FACTOR",
    "CheckpointError",
    "CheckpointInfo",
    "Family",
    "FileHash",
    "FileHashes",
    "LoadedCheckpoint",
    "NameMap",
    "NamePair",
    "Prediction",
    "TextEncoderInfo",
    "TinyModels",
    "build_random_sd15",
    "build_tiny_models",
    "clip_names",
    "detect_checkpoint",
    "detect_state_dict",
    "family_config",
    "file_autov2",
    "file_fingerprint",
    "file_hash",
    "file_sha256",
    "load_checkpoint",
    "load_clip_tokenizer",
    "load_state_dict_file",
    "load_vae",
    "original_state_dict",
    "unet_key_map",
    "unet_names",
    "vae_names",
    "write_tiny_checkpoint",
]

_MODULES: dict[str, tuple[str, ...]] = {
    "atelier.engine.models.detect": ("detect_checkpoint", "detect_state_dict"),
    "atelier.engine.models.errors": ("CheckpointError",),
    "atelier.engine.models.files": ("load_state_dict_file",),
    "atelier.engine.hashing": (
        "FileHash",
        "FileHashes",
        "file_autov2",
        "file_fingerprint",
        "file_hash",
        "file_sha256",
    ),
    "atelier.engine.models.info": (
        "CONFIG_DIR",
        "TOKENIZER_DIR",
        "VAE_SCALING_FACTOR",
        "CheckpointInfo",
        "Family",
        "Prediction",
        "TextEncoderInfo",
        "family_config",
    ),
    "atelier.engine.models.layout": ("original_state_dict", "unet_key_map"),
    "atelier.engine.models.load": ("LoadedCheckpoint", "load_checkpoint"),
    "atelier.engine.models.names": ("NameMap", "NamePair", "clip_names", "unet_names", "vae_names"),
    "atelier.engine.models.tiny": (
        "TinyModels",
        "build_random_sd15",
        "build_tiny_models",
        "write_tiny_checkpoint",
    ),
    "atelier.engine.models.tokenizer": ("load_clip_tokenizer",),
    "atelier.engine.models.vae": ("load_vae",),
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
