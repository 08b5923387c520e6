"""Former home of checkpoint loading, kept so that existing imports keep working.

The code now lives in modules with one job each: ``files`` (reading files), ``detect`` / ``derive`` /
``diffusers_folder`` (what a file holds), ``build`` / ``load`` / ``vae`` (modules and weights),
``tokenizer`` and ``hashing``. New code should import from ``atelier.engine.models`` or those modules.
"""

from atelier.engine.hashing import FileHash, file_fingerprint, file_hash, file_sha256
from atelier.engine.models.build import (
    TextEncoder,
    assign_weights,
    build_empty,
    empty_text_encoder,
    empty_unet,
    empty_vae,
    resolve_dtype,
)
from atelier.engine.models.detect import detect_state_dict
from atelier.engine.models.files import load_state_dict_file
from atelier.engine.models.load import LoadedCheckpoint, load_checkpoint
from atelier.engine.models.tokenizer import load_clip_tokenizer
from atelier.engine.models.vae import load_vae

__all__ = [
    "FileHash",
    "LoadedCheckpoint",
    "TextEncoder",
    "assign_weights",
    "build_empty",
    "detect_state_dict",
    "empty_text_encoder",
    "empty_unet",
    "empty_vae",
    "file_fingerprint",
    "file_hash",
    "file_sha256",
    "load_checkpoint",
    "load_clip_tokenizer",
    "load_state_dict_file",
    "load_vae",
    "resolve_dtype",
]
