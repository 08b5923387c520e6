"""Loading SD1.x / SD2.x / SDXL checkpoints into diffusers / transformers modules.

Single files (``.safetensors``; ``.ckpt``/``.pt`` only through ``torch.load(weights_only=True)``) in the
original layout are renamed with diffusers' own converters (an independent check on our writer, which
uses ``names.py``), diffusers folders are taken as they are. Either way the modules are built on the meta
device and receive the file's tensors directly (``build.py``).

Loading does not hash the file: :attr:`LoadedCheckpoint.sha256` is computed on first access (and
remembered per file version by the engine's ``FileHashes``); caches should key on
:attr:`LoadedCheckpoint.fingerprint`, which costs a ``stat``.
"""

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from atelier.engine.hashing import FileHashes, file_fingerprint
from atelier.engine.models.build import (
    LazyTensors,
    TextEncoder,
    assign_weights,
    empty_text_encoder,
    empty_unet,
    empty_vae,
    guard,
    resolve_dtype,
)
from atelier.engine.models.detect import detect_index
from atelier.engine.models.diffusers_folder import (
    detect_diffusers_folder,
    is_diffusers_folder,
    read_weight_files,
)
from atelier.engine.models.errors import CheckpointError
from atelier.engine.models.files import TensorIndex, open_single_file
from atelier.engine.models.info import CheckpointInfo, TextEncoderInfo
from atelier.engine.models.libraries import (
    AutoencoderKL,
    CLIPTokenizer,
    UNet2DConditionModel,
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
)
from atelier.engine.models.names import UNET_PREFIX, VAE_PREFIX
from atelier.engine.models.tokenizer import tokenizers_for
from atelier.engine.models.unclip import load_noise_augmentor

log = logging.getLogger(__name__)


class LoadedCheckpoint:
    """The modules of one checkpoint, ready for inference (eval mode, no grad), and where they came from.

    ``path`` is the file or diffusers folder (None for models built in memory). ``sha256`` (and ``autov2``)
    read the whole file on first access, through ``hashes``; ``fingerprint`` is cheap. A model built in
    memory passes its own ``sha256``."""

    def __init__(
        self,
        *,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL | None,
        text_encoders: list[TextEncoder],
        tokenizers: list[CLIPTokenizer],
        info: CheckpointInfo,
        path: str | Path | None = None,
        sha256: str | None = None,
        hashes: FileHashes | None = None,
        noise_augmentor: Any = None,
    ) -> None:
        if path is None and sha256 is None:
            raise ValueError("a LoadedCheckpoint needs the path it was loaded from or a known sha256")
        self.unet = unet
        self.vae = vae
        self.text_encoders = text_encoders
        self.tokenizers = tokenizers
        self.info = info
        #: a Stable unCLIP checkpoint's image-embedding noise (``unclip.NoiseAugmentor``), else None
        self.noise_augmentor = noise_augmentor
        self.path = Path(path) if path is not None else None
        self._hashes = hashes if hashes is not None else FileHashes(max_entries=1)
        self._sha256 = sha256
        self._sha_lock = threading.Lock()

    def __atelier_modules__(self) -> Iterator[tuple[str, Any]]:
        """The parts the device budget (engine/memory.py) accounts for and moves separately."""
        yield "unet", self.unet
        for i, te in enumerate(self.text_encoders):
            yield f"text_encoders[{i}]", te
        if self.vae is not None:
            yield "vae", self.vae

    @property
    def sha256(self) -> str:
        """sha256 of the file (or folder, see ``FileHashes.sha256``), computed on first access."""
        with self._sha_lock:
            if self._sha256 is None:
                assert self.path is not None
                self._sha256 = self._hashes.sha256(self.path)
            return self._sha256

    @property
    def autov2(self) -> str:
        """The short hash A1111 and Civitai show (first 10 hex digits of the sha256)."""
        return self.sha256[:10]

    @property
    def fingerprint(self) -> str:
        """Cheap identity of the file version the modules came from (``hashing.file_fingerprint``); for a
        model built in memory, its given sha256."""
        if self.path is None:
            assert self._sha256 is not None
            return self._sha256
        return file_fingerprint(self.path)

    def __repr__(self) -> str:
        where = str(self.path) if self.path is not None else "memory"
        return f"LoadedCheckpoint({self.info.family}, {self.info.prediction}-prediction, from {where})"


def _text_encoder_state_dict(
    te: TextEncoderInfo, index: TensorIndex, model: TextEncoder
) -> Mapping[str, torch.Tensor]:
    prefix = te.key_prefix or ""
    keys = [k for k in index.keys() if k.startswith(prefix)]
    has_wrapper = hasattr(model, "text_model")
    with_projection = te.model_class == "CLIPTextModelWithProjection"

    def rename(key: str) -> str | None:
        if key == "text_projection.weight" and not with_projection:
            return None
        return key if has_wrapper else key.removeprefix("text_model.")

    if te.layout == "clip_l":
        # a pure renaming (strips "cond_stage_model.transformer." / "conditioner.embedders.0.transformer."):
        # run it on the names and read each tensor only when it is assigned
        names = convert_ldm_clip_checkpoint({k: k for k in keys})
        return LazyTensors(
            index, {new: old for key, old in names.items() if (new := rename(key)) is not None}
        )
    # OpenCLIP splits the fused q/k/v and transposes the projection: needs the tensors. A private prefix
    # keeps diffusers' SD2 rule (drop the last layer) out: all layers of the file are kept.
    renamed = {"open_clip." + k[len(prefix) :]: index.read(k) for k in keys}
    converted = convert_open_clip_checkpoint(model, renamed, prefix="open_clip.")
    return {new: value for key, value in converted.items() if (new := rename(key)) is not None}


def load_from_index(
    index: TensorIndex,
    info: CheckpointInfo,
    *,
    device: str | torch.device,
    dtype: torch.dtype,
    vae_dtype: torch.dtype | None = None,
) -> tuple[UNet2DConditionModel, AutoencoderKL | None, list[TextEncoder]]:
    """Build the modules of a detected single-file checkpoint."""
    path = index.path

    def unet() -> UNet2DConditionModel:
        # diffusers' conversion only renames UNet tensors: run it on the names, read tensors one by one
        names = convert_ldm_unet_checkpoint(
            {k: k for k in index.keys() if k.startswith(UNET_PREFIX)}, info.unet_config
        )
        converted = LazyTensors(index, {k: v for k, v in names.items() if isinstance(v, str)})
        return assign_weights(
            empty_unet(info.unet_config), converted, device=device, dtype=dtype, path=path, component="UNet"
        )

    def vae() -> AutoencoderKL:
        assert info.vae_config is not None
        raw = index.read_prefixed(VAE_PREFIX)
        converted = convert_ldm_vae_checkpoint(raw, info.vae_config)
        module = empty_vae(info.vae_config)
        return assign_weights(
            module, converted, device=device, dtype=vae_dtype or dtype, path=path, component="VAE"
        )

    def encoder(te: TextEncoderInfo) -> Callable[[], TextEncoder]:
        def build() -> TextEncoder:
            model = empty_text_encoder(te)
            sd = _text_encoder_state_dict(te, index, model)
            return assign_weights(model, sd, device=device, dtype=dtype, path=path, component=te.name)

        return build

    unet_module = guard(path, "UNet", unet)
    vae_module = guard(path, "VAE", vae) if info.vae_config is not None else None
    encoders = [guard(path, te.name, encoder(te)) for te in info.text_encoders]
    return unet_module, vae_module, encoders


def load_from_folder(
    folder: Path, *, device: str | torch.device, dtype: torch.dtype, vae_dtype: torch.dtype | None
) -> tuple[UNet2DConditionModel, AutoencoderKL | None, list[TextEncoder], CheckpointInfo]:
    """Build the modules of a diffusers folder (its files are already in diffusers' names)."""
    info = detect_diffusers_folder(folder)

    def unet() -> UNet2DConditionModel:
        sd = read_weight_files(folder / "unet", folder)
        return assign_weights(
            empty_unet(info.unet_config), sd, device=device, dtype=dtype, path=folder, component="unet/"
        )

    def vae() -> AutoencoderKL:
        assert info.vae_config is not None
        sd = read_weight_files(folder / "vae", folder)
        module = empty_vae(info.vae_config)
        return assign_weights(
            module, sd, device=device, dtype=vae_dtype or dtype, path=folder, component="vae/"
        )

    def encoder(te: TextEncoderInfo) -> Callable[[], TextEncoder]:
        def build() -> TextEncoder:
            model = empty_text_encoder(te)
            sd = read_weight_files(folder / te.name, folder)
            if not hasattr(model, "text_model"):
                sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
            return assign_weights(model, sd, device=device, dtype=dtype, path=folder, component=te.name + "/")

        return build

    unet_module = guard(folder, "unet/", unet)
    vae_module = guard(folder, "vae/", vae) if info.vae_config is not None else None
    encoders = [guard(folder, te.name + "/", encoder(te)) for te in info.text_encoders]
    return unet_module, vae_module, encoders, info


def load_checkpoint(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    vae_dtype: torch.dtype | None = None,
    compute_hash: bool = False,
    hashes: FileHashes | None = None,
) -> LoadedCheckpoint:
    """Load an SD1.x / SD2.x / SDXL checkpoint: a single ``.safetensors`` (or ``.ckpt``/``.pt`` read with
    ``weights_only=True``) in the original layout, or a diffusers folder.

    ``dtype`` defaults to float32 on CPU and float16 elsewhere; ``vae_dtype`` defaults to ``dtype``.
    Raises ``CheckpointError`` (naming the file) for anything wrong with the file.

    The file is not hashed: ``sha256`` is computed on first access (through ``hashes``, by default the
    a cache of its own). ``compute_hash=True`` hashes now instead, for callers that will need it.
    """
    path = Path(path)
    dtype = resolve_dtype(device, dtype)
    if vae_dtype is not None:
        vae_dtype = resolve_dtype(device, vae_dtype)
    augmentor = None
    if path.is_dir():
        if not is_diffusers_folder(path):
            raise CheckpointError(
                path, "folder is not a diffusers pipeline (no model_index.json or unet/config.json)"
            )
        unet, vae, encoders, info = load_from_folder(path, device=device, dtype=dtype, vae_dtype=vae_dtype)
        tokenizers = tokenizers_for(info, path)
    else:
        index = open_single_file(path)
        info = detect_index(index)
        unet, vae, encoders = load_from_index(index, info, device=device, dtype=dtype, vae_dtype=vae_dtype)
        tokenizers = tokenizers_for(info)
        augmentor = load_noise_augmentor(index, info.unclip) if info.unclip is not None else None
    log.info("loaded %s: %s %s-prediction, %s", path.name, info.family, info.prediction, info.dtype)
    loaded = LoadedCheckpoint(
        unet=unet, vae=vae, text_encoders=encoders, tokenizers=tokenizers, info=info, path=path, hashes=hashes
    )
    loaded.noise_augmentor = augmentor
    if compute_hash:
        loaded.sha256  # noqa: B018 - computed and kept now rather than on first access
    return loaded
