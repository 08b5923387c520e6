"""Loading SD1.x / SD2.x / SDXL checkpoints into diffusers / transformers modules.

Single files (``.safetensors``; ``.ckpt``/``.pt`` only through ``torch.load(weights_only=True)``) and diffusers
folders. Modules are built on the meta device from the detected configs and receive the file's tensors
directly (cast to the requested dtype, on the requested device): no random initialisation, no second copy.
"""

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from atelier.engine.models.detect import (
    TOKENIZER_DIR,
    VAE_SCALING_FACTOR,
    CheckpointError,
    CheckpointInfo,
    Family,
    TensorIndex,
    TextEncoderInfo,
    _children,
    derive_vae_config,
    detect_diffusers_folder,
    detect_index,
    index_state_dict,
    is_diffusers_folder,
    load_torch_state_dict,
    normalise_sd1_clip_keys,
    open_single_file,
    weight_files,
)
from atelier.engine.models.names import UNET_PREFIX, VAE_PREFIX, vae_names

log = logging.getLogger(__name__)

TextEncoder = CLIPTextModel | CLIPTextModelWithProjection
M = TypeVar("M", bound=torch.nn.Module)
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@dataclass
class LoadedCheckpoint:
    """The modules of one checkpoint, ready for inference (eval mode, no grad)."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL | None
    text_encoders: list[TextEncoder]
    tokenizers: list[CLIPTokenizer]
    info: CheckpointInfo
    sha256: str

    @property
    def autov2(self) -> str:
        """The short hash A1111 and Civitai show (first 10 hex digits of the sha256)."""
        return self.sha256[:10]


# ---------------------------------------------------------------------------------------------------------
# Hashing


@dataclass(frozen=True)
class FileHash:
    sha256: str

    @property
    def autov2(self) -> str:
        return self.sha256[:10]


_hash_cache: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()
_CHUNK = 8 * 1024 * 1024


def _sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_hash(path: str | Path) -> FileHash:
    """sha256 of a file (streamed), cached by (path, size, mtime_ns). For a folder: sha256 over the
    sorted relative paths and sha256 of every file in it."""
    path = Path(path).resolve()
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
            digest.update(file_hash(file).sha256.encode() + b"\n")
        return FileHash(digest.hexdigest())
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _hash_lock:
        cached = _hash_cache.get(key)
    if cached is None:
        cached = _sha256_of_file(path)
        with _hash_lock:
            _hash_cache[key] = cached
    return FileHash(cached)


def file_sha256(path: str | Path) -> str:
    return file_hash(path).sha256


# ---------------------------------------------------------------------------------------------------------
# Tokenizers


def load_clip_tokenizer(pad_token: str = "<|endoftext|>", directory: str | None = None) -> CLIPTokenizer:
    """The CLIP BPE tokenizer (shipped vocab unless ``directory`` is given), max length 77. OpenCLIP encoders
    (SD2, SDXL's second) pad with ``"!"``. A new instance each call (~40 ms)."""
    folder = directory or str(TOKENIZER_DIR)
    tokenizer: CLIPTokenizer = CLIPTokenizer.from_pretrained(
        folder, model_max_length=77, pad_token=pad_token, local_files_only=True
    )
    return tokenizer


def _tokenizers_for(info: CheckpointInfo, folder: Path | None = None) -> list[CLIPTokenizer]:
    out: list[CLIPTokenizer] = []
    for n, te in enumerate(info.text_encoders):
        own: str | None = None
        if folder is not None:
            candidate = folder / ("tokenizer" if n == 0 else f"tokenizer_{n + 1}")
            if (candidate / "vocab.json").is_file() and (candidate / "merges.txt").is_file():
                own = str(candidate)
        out.append(load_clip_tokenizer(te.pad_token, own))
    return out


# ---------------------------------------------------------------------------------------------------------
# Building modules without random init


def resolve_dtype(device: str | torch.device, dtype: torch.dtype | None) -> torch.dtype:
    """Check the device is usable and pick the dtype: float32 on CPU, float16 elsewhere by default.
    Raises ValueError (a caller mistake, not a file problem)."""
    kind = torch.device(device).type
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} requested but MPS is not available")
    if dtype is None:
        return torch.float32 if kind == "cpu" else torch.float16
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of float16, bfloat16, float32, got {dtype}")
    return dtype


def build_empty(factory: Callable[[], M]) -> M:
    """Construct a module with its parameters on the meta device (no memory, no init)."""
    with init_empty_weights(include_buffers=False):
        return factory()


def empty_unet(config: Mapping[str, Any]) -> UNet2DConditionModel:
    return build_empty(lambda: UNet2DConditionModel.from_config(dict(config)))


def empty_vae(config: Mapping[str, Any]) -> AutoencoderKL:
    return build_empty(lambda: AutoencoderKL.from_config(dict(config)))


def empty_text_encoder(te: TextEncoderInfo) -> TextEncoder:
    config = CLIPTextConfig(**te.config)
    cls = CLIPTextModelWithProjection if te.model_class == "CLIPTextModelWithProjection" else CLIPTextModel
    return build_empty(lambda: cls(config))


def _move(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    if not tensor.is_floating_point():
        return tensor.to(device)
    if tensor.element_size() > torch.empty((), dtype=dtype).element_size():
        return tensor.to(dtype=dtype).to(device)  # shrink first, then transfer fewer bytes
    return tensor.to(device).to(dtype=dtype)


class LazyTensors(Mapping[str, torch.Tensor]):
    """Module tensor name -> tensor of a single file, read only when accessed (one at a time), with
    shapes known from the file's header."""

    def __init__(self, index: TensorIndex, names: Mapping[str, str]) -> None:
        self._index = index
        self._names = dict(names)

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._index.read(self._names[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, key: object) -> bool:
        return key in self._names

    def shape(self, key: str) -> tuple[int, ...]:
        return self._index.shape(self._names[key])


def _shape(state_dict: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if isinstance(state_dict, LazyTensors):
        return state_dict.shape(key)
    return tuple(state_dict[key].shape)


def assign_weights(
    module: M,
    state_dict: Mapping[str, torch.Tensor],
    *,
    device: str | torch.device,
    dtype: torch.dtype,
    path: str | Path,
    component: str,
) -> M:
    """Give a meta-device module its tensors (cast and moved one by one), strictly: every tensor the
    module needs must be present with the right shape. Extra tensors are ignored. Returns the module in
    eval mode with gradients off."""
    device = torch.device(device)
    expected = module.state_dict(keep_vars=True)
    missing = [k for k in expected if k not in state_dict]
    if missing:
        shown = ", ".join(missing[:5])
        raise CheckpointError(path, f"{component}: {len(missing)} tensors missing, e.g. {shown}")
    wrong = [
        f"{k} {_shape(state_dict, k)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if _shape(state_dict, k) != tuple(v.shape)
    ]
    if wrong:
        raise CheckpointError(
            path, f"{component}: {len(wrong)} tensors with the wrong shape, e.g. {wrong[0]}"
        )
    ready = {k: _move(state_dict[k], device, dtype) for k in expected}
    module.load_state_dict(ready, strict=True, assign=True)
    module.to(device)  # non-persistent buffers (e.g. CLIP position ids)
    module.requires_grad_(False)
    module.eval()
    return module


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


def _guard(path: str | Path, component: str, fn: Callable[[], M]) -> M:
    """Run one loading step; library errors become CheckpointError (out-of-memory is not a file problem)."""
    try:
        return fn()
    except CheckpointError:
        raise
    except torch.OutOfMemoryError:
        raise
    except Exception as exc:
        raise CheckpointError(path, f"{component}: {type(exc).__name__}: {exc}") from exc


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

    unet_module = _guard(path, "UNet", unet)
    vae_module = _guard(path, "VAE", vae) if info.vae_config is not None else None
    encoders = [_guard(path, te.name, encoder(te)) for te in info.text_encoders]
    return unet_module, vae_module, encoders


# ---------------------------------------------------------------------------------------------------------
# diffusers folders


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


def _load_diffusers_folder(
    folder: Path, *, device: str | torch.device, dtype: torch.dtype, vae_dtype: torch.dtype | None
) -> tuple[UNet2DConditionModel, AutoencoderKL | None, list[TextEncoder], CheckpointInfo]:
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

    unet_module = _guard(folder, "unet/", unet)
    vae_module = _guard(folder, "vae/", vae) if info.vae_config is not None else None
    encoders = [_guard(folder, te.name + "/", encoder(te)) for te in info.text_encoders]
    return unet_module, vae_module, encoders, info


# ---------------------------------------------------------------------------------------------------------
# Public entry points


def load_checkpoint(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    vae_dtype: torch.dtype | None = None,
    compute_hash: bool = True,
) -> LoadedCheckpoint:
    """Load an SD1.x / SD2.x / SDXL checkpoint: a single ``.safetensors`` (or ``.ckpt``/``.pt`` read with
    ``weights_only=True``) in the original layout, or a diffusers folder.

    ``dtype`` defaults to float32 on CPU and float16 elsewhere; ``vae_dtype`` defaults to ``dtype``.
    Raises ``CheckpointError`` (naming the file) for anything wrong with the file.
    """
    path = Path(path)
    dtype = resolve_dtype(device, dtype)
    if vae_dtype is not None:
        vae_dtype = resolve_dtype(device, vae_dtype)
    if path.is_dir():
        if not is_diffusers_folder(path):
            raise CheckpointError(
                path, "folder is not a diffusers pipeline (no model_index.json or unet/config.json)"
            )
        unet, vae, encoders, info = _load_diffusers_folder(
            path, device=device, dtype=dtype, vae_dtype=vae_dtype
        )
        tokenizers = _tokenizers_for(info, path)
    else:
        index = open_single_file(path)
        info = detect_index(index)
        unet, vae, encoders = load_from_index(index, info, device=device, dtype=dtype, vae_dtype=vae_dtype)
        tokenizers = _tokenizers_for(info)
    sha = file_sha256(path) if compute_hash else ""
    log.info("loaded %s: %s %s-prediction, %s", path.name, info.family, info.prediction, info.dtype)
    return LoadedCheckpoint(
        unet=unet, vae=vae, text_encoders=encoders, tokenizers=tokenizers, info=info, sha256=sha
    )


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
    levels = _children(keys, "encoder.down_blocks.")
    # just enough config for the name map: how many levels, and res blocks per encoder level
    config = {
        "block_out_channels": [0] * len(levels),
        "layers_per_block": len(_children(keys, "encoder.down_blocks.0.resnets.")),
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
        return _guard(
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

    return _guard(path, "VAE", build)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a single ``.safetensors`` / ``.ckpt`` file (weights_only), with clear errors."""
    index = open_single_file(path)
    return {k: index.read(k) for k in index.keys()}


def detect_state_dict(
    state_dict: Mapping[str, torch.Tensor], path: str | Path = "<memory>"
) -> CheckpointInfo:
    """Detect a single-file state dict already in memory."""
    return detect_index(normalise_sd1_clip_keys(index_state_dict(state_dict, Path(path))))


__all__ = [
    "FileHash",
    "LoadedCheckpoint",
    "assign_weights",
    "build_empty",
    "detect_state_dict",
    "empty_text_encoder",
    "empty_unet",
    "empty_vae",
    "file_hash",
    "file_sha256",
    "load_checkpoint",
    "load_clip_tokenizer",
    "load_state_dict_file",
    "load_vae",
    "resolve_dtype",
]
