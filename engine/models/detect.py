"""Checkpoint detection: which model family a file holds, and the exact module configs to build it.

Everything here is decided from tensor names and shapes (never the file name): the family from the text
encoder layout, the UNet / VAE / text encoder widths and depths from the shapes, so that tiny test models
and full-size ones go through the same code. Settings that shapes cannot reveal (activation functions,
the attention head convention, VAE scaling factor) come from the family config shipped in ``configs/``.
"""

import json
import re
import struct
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict

from atelier.engine.models.layout import (
    SD1_CLIP_PREFIX,
    SD2_CLIP_PREFIX,
    SDXL_CLIP_G_PREFIX,
    SDXL_CLIP_L_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
)

Family = Literal["sd15", "sd2", "sdxl"]
Prediction = Literal["eps", "v"]
SourceFormat = Literal["safetensors", "torch", "diffusers"]
TextEncoderLayout = Literal["clip_l", "open_clip"]

CONFIG_DIR = Path(__file__).parent / "configs"
TOKENIZER_DIR = CONFIG_DIR / "clip_tokenizer"
VAE_SCALING_FACTOR: dict[str, float] = {"sd15": 0.18215, "sd2": 0.18215, "sdxl": 0.13025}
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
# Heads convention per family (not visible in shapes): SD1 uses 8 heads everywhere, SD2 and SDXL use
# 64 channels per head. CLIP text encoders all use 64 channels per head.
_SD1_NUM_HEADS = 8
_HEAD_CHANNELS = 64
_MAX_HEADER = 100 * 1024 * 1024
_SD2_VPRED_STD = 0.09


class CheckpointError(Exception):
    """A model file that cannot be used: names the file and says what is wrong with it."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class TextEncoderInfo(BaseModel):
    """One text encoder of a checkpoint and how the family uses it."""

    name: str  # "text_encoder" or "text_encoder_2" (diffusers component name)
    layout: TextEncoderLayout  # clip_l = OpenAI CLIP-L (transformers names), open_clip = OpenCLIP H / bigG
    model_class: Literal["CLIPTextModel", "CLIPTextModelWithProjection"]
    key_prefix: str | None  # prefix in a single file, None for diffusers folders
    hidden_size: int
    num_layers: int
    projection_dim: int | None  # only for CLIPTextModelWithProjection
    pad_token: str  # "<|endoftext|>" (CLIP-L) or "!" (OpenCLIP)
    default_layer: int  # hidden layer the family conditions on: -1 last, -2 penultimate
    final_layer_norm: bool  # whether the family applies the final layer norm to that layer
    config: dict[str, Any]  # transformers CLIPTextConfig kwargs


class CheckpointInfo(BaseModel):
    """What a checkpoint holds, enough to build its modules without guessing."""

    model_config = ConfigDict(frozen=True)

    path: str
    source_format: SourceFormat
    family: Family
    prediction: Prediction
    prediction_source: str  # "default", "v_pred key", "yaml", "sd2 heuristic", "scheduler config"
    zero_terminal_snr: bool
    dtype: str  # dominant dtype of the UNet weights, e.g. "float16"
    components: list[str]  # present: "unet", "vae", "text_encoder", "text_encoder_2"
    unet_config: dict[str, Any]
    vae_config: dict[str, Any] | None
    text_encoders: list[TextEncoderInfo]
    vae_scaling_factor: float
    tensor_count: int

    @property
    def text_encoder_configs(self) -> list[dict[str, Any]]:
        return [te.config for te in self.text_encoders]

    @property
    def is_sdxl(self) -> bool:
        return self.family == "sdxl"


@cache
def _family_config_text(family: str, component: str) -> str:
    path = CONFIG_DIR / family / component / "config.json"
    return path.read_text(encoding="utf-8")


def family_config(family: str, component: str) -> dict[str, Any]:
    """The shipped full-size config of a family's component (unet, vae, text_encoder, text_encoder_2)."""
    config: dict[str, Any] = json.loads(_family_config_text(family, component))
    return config


# ---------------------------------------------------------------------------------------------------------
# Reading a single file: names, shapes and dtypes without loading tensors where possible


class TensorIndex:
    """Names, shapes and dtypes of the tensors of a single file, plus a way to read one tensor."""

    def __init__(
        self,
        path: Path,
        source_format: SourceFormat,
        entries: Mapping[str, tuple[tuple[int, ...], str]],
        read: Callable[[str], torch.Tensor],
    ) -> None:
        self.path = path
        self.source_format: SourceFormat = source_format
        self.entries = dict(entries)
        self._read = read

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def keys(self) -> list[str]:
        return list(self.entries)

    def shape(self, key: str) -> tuple[int, ...]:
        return self.entries[key][0]

    def dtype(self, key: str) -> str:
        return self.entries[key][1]

    def read(self, key: str) -> torch.Tensor:
        return self._read(key)

    def read_prefixed(self, prefix: str) -> dict[str, torch.Tensor]:
        return {key: self._read(key) for key in self.entries if key.startswith(prefix)}


_SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


def sniff_format(path: Path) -> Literal["safetensors", "zip", "pickle", "empty", "unknown"]:
    """What a file's first bytes say it is."""
    with path.open("rb") as f:
        head = f.read(16)
    if not head:
        return "empty"
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if len(head) >= 9 and head[8:9] == b"{":
        (header_len,) = struct.unpack("<Q", head[:8])
        if header_len <= path.stat().st_size - 8:
            return "safetensors"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] in range(2, 6):
        return "pickle"
    return "unknown"


def read_safetensors_header(path: Path) -> tuple[dict[str, tuple[tuple[int, ...], str]], dict[str, str]]:
    """Parse and validate a safetensors header: ({name: (shape, dtype)}, metadata). Raises CheckpointError
    for an empty, truncated or garbage file."""
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(path, "file is empty (0 bytes)")
    if size < 8:
        raise CheckpointError(path, f"file is only {size} bytes: not a safetensors file (truncated?)")
    with path.open("rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > size - 8 or header_len > _MAX_HEADER:
            raise CheckpointError(
                path,
                f"not a valid safetensors file: header length field says {header_len} bytes but the file has "
                f"{size} bytes (garbage header or truncated file)",
            )
        raw = f.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(path, f"not a valid safetensors file: header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(path, "not a valid safetensors file: header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    entries: dict[str, tuple[tuple[int, ...], str]] = {}
    data_end = 0
    for name, spec in header.items():
        try:
            dtype = _SAFETENSORS_DTYPES.get(spec["dtype"], str(spec["dtype"]).lower())
            shape = tuple(int(d) for d in spec["shape"])
            begin, end = (int(x) for x in spec["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(
                path, f"not a valid safetensors file: bad header entry for {name!r}"
            ) from None
        if end < begin:
            raise CheckpointError(path, f"not a valid safetensors file: bad data offsets for {name!r}")
        data_end = max(data_end, end)
        entries[str(name)] = (shape, dtype)
    available = size - 8 - header_len
    if data_end > available:
        raise CheckpointError(
            path,
            f"file is truncated: the header describes {data_end} bytes of tensor data but only {available} "
            f"are present ({size} bytes in the file)",
        )
    return entries, {str(k): str(v) for k, v in dict(metadata).items()}


def _safetensors_index(path: Path) -> TensorIndex:
    from safetensors import safe_open

    entries, _ = read_safetensors_header(path)
    handle: list[Any] = []

    def read(key: str) -> torch.Tensor:
        if not handle:
            try:
                handle.append(safe_open(str(path), framework="pt", device="cpu"))
            except Exception as exc:  # safetensors raises its own error types
                raise CheckpointError(path, f"cannot open as safetensors: {exc}") from None
        try:
            tensor: torch.Tensor = handle[0].get_tensor(key)
        except Exception as exc:
            raise CheckpointError(path, f"cannot read tensor {key!r}: {exc}") from None
        return tensor

    return TensorIndex(path, "safetensors", entries, read)


def load_torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A ``.ckpt``/``.pt``/``.pth`` file through ``torch.load(weights_only=True)``, unwrapping
    ``state_dict``. Only tensors are kept."""
    try:
        try:
            data = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc) or "Weights only" in str(exc):
            raise CheckpointError(
                path,
                "refused to unpickle: the file holds Python objects besides tensors, and only "
                f"torch.load(weights_only=True) is allowed ({text}). Convert it to .safetensors.",
            ) from None
        raise CheckpointError(
            path, f"not a readable PyTorch checkpoint (corrupt or truncated?): {text}"
        ) from None
    while isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise CheckpointError(path, f"PyTorch file holds a {type(data).__name__}, not a state dict")
    return {str(k): v for k, v in data.items() if isinstance(v, torch.Tensor)}


def index_state_dict(
    state_dict: Mapping[str, torch.Tensor], path: Path, source_format: SourceFormat = "torch"
) -> TensorIndex:
    entries = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state_dict.items()}
    return TensorIndex(path, source_format, entries, lambda key: state_dict[key])


def open_single_file(path: str | Path) -> TensorIndex:
    """Open a single-file model (``.safetensors`` or a torch file) for detection and loading."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "file not found")
    if path.is_dir():
        raise CheckpointError(path, "is a folder, not a single-file checkpoint")
    suffix = path.suffix.lower()
    if suffix not in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
        allowed = ", ".join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)
        raise CheckpointError(
            path, f"unsupported file extension {suffix or '(none)'!r} (expected one of {allowed})"
        )
    kind = sniff_format(path)
    if kind == "empty":
        raise CheckpointError(path, "file is empty (0 bytes)")
    if suffix in SAFETENSORS_SUFFIXES:
        if kind in ("zip", "pickle"):
            raise CheckpointError(
                path,
                f"has a {suffix} extension but holds a PyTorch pickle ({kind}); rename it to .ckpt "
                "(it will then be read with weights_only=True)",
            )
        return normalise_sd1_clip_keys(_safetensors_index(path))
    if kind == "safetensors":
        return normalise_sd1_clip_keys(_safetensors_index(path))
    if kind not in ("zip", "pickle"):
        raise CheckpointError(
            path, "neither a safetensors file nor a PyTorch checkpoint (garbage or truncated)"
        )
    return normalise_sd1_clip_keys(index_state_dict(load_torch_state_dict(path), path, "torch"))


# ---------------------------------------------------------------------------------------------------------
# Shape helpers


def _children(keys: Iterable[str], prefix: str) -> set[str]:
    n = len(prefix)
    return {key[n:].split(".", 1)[0] for key in keys if key.startswith(prefix)}


def _int_children(keys: Iterable[str], prefix: str) -> list[int]:
    return sorted(int(c) for c in _children(keys, prefix) if c.isdigit())


def _heads(channels: int) -> int:
    return channels // _HEAD_CHANNELS if channels >= _HEAD_CHANNELS and channels % _HEAD_CHANNELS == 0 else 1


def _describe_unknown(index: TensorIndex) -> str:
    """A hint saying what a file that is not an SD checkpoint seems to be."""
    keys = index.keys()
    if not keys:
        return "the file holds no tensors"

    def count(pred: Callable[[str], bool]) -> int:
        return sum(1 for k in keys if pred(k))

    lora_prefixes = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "lycoris_")
    for prefix in lora_prefixes:
        n = count(lambda k, p=prefix: k.startswith(p))
        if n:
            return f"found {n} keys starting with {prefix} - this looks like a LoRA, put it in models/loras"
    n = count(lambda k: any(s in k for s in (".lora_down.", ".lora_up.", ".lora_A.", ".lora_B.", ".hada_w1")))
    if n:
        return f"found {n} LoRA weight keys (lora_down/lora_up/lora_A/lora_B) - this looks like a LoRA, put it in models/loras"
    n = count(lambda k: "joint_blocks." in k or k.startswith("text_encoders.clip_g"))
    if n:
        return f"found {n} keys with joint_blocks / text_encoders.* - this looks like Stable Diffusion 3, which is not supported"
    n = count(lambda k: "double_blocks." in k or "single_blocks." in k)
    if n:
        return f"found {n} keys with double_blocks / single_blocks - this looks like Flux, which is not supported"
    n = count(lambda k: k.startswith("control_model.") or "input_hint_block." in k or "controlnet_" in k)
    if n:
        return f"found {n} ControlNet keys - this looks like a ControlNet, put it in models/controlnet"
    for vae_prefix in ("", "first_stage_model.", "vae."):
        if vae_prefix + "encoder.conv_in.weight" in index and vae_prefix + "decoder.conv_in.weight" in index:
            n = count(lambda k, p=vae_prefix: k.startswith(p + "encoder.") or k.startswith(p + "decoder."))
            return f"found {n} encoder.*/decoder.* keys and no UNet - this looks like a VAE, put it in models/vae"
    n = count(lambda k: k.startswith(("down_blocks.", "up_blocks.", "mid_block.")))
    if n:
        return (
            f"found {n} diffusers-format UNet keys (down_blocks.*) - a bare diffusers UNet is not a checkpoint; "
            "use the single-file checkpoint or the whole diffusers folder"
        )
    n = count(
        lambda k: (
            k in ("emb_params", "clip_l", "clip_g") or k.startswith(("string_to_param", "string_to_token"))
        )
    )
    if n:
        return "this looks like a textual-inversion embedding, put it in models/embeddings"
    if "conv_first.weight" in index or count(lambda k: k.startswith("model.") and ".body." in k):
        return "this looks like an upscale model, put it in models/upscale_models"
    prefixes = Counter(".".join(k.split(".")[:2]) for k in keys).most_common(3)
    listed = ", ".join(f"{p}.* ({n})" for p, n in prefixes)
    return f"unrecognised layout: {len(keys)} tensors, most common prefixes {listed}"


# ---------------------------------------------------------------------------------------------------------
# Config derivation from shapes


def derive_unet_config(index: TensorIndex, family: Family, adm_pooled_dim: int | None) -> dict[str, Any]:
    """The diffusers ``UNet2DConditionModel`` config of the UNet in ``index`` (original layout)."""
    p = UNET_PREFIX
    keys = [k for k in index.keys() if k.startswith(p)]
    conv_in = index.shape(p + "input_blocks.0.0.weight")
    model_channels, in_channels = conv_in[0], conv_in[1]
    out_channels = index.shape(p + "out.2.weight")[0]

    def depth(block: str) -> int | None:
        if block + ".1.proj_in.weight" not in index:
            return None
        return len(_int_children(keys, block + ".1.transformer_blocks."))

    levels: list[dict[str, Any]] = []
    current: dict[str, Any] = {"res": 0, "channels": None, "depths": []}
    for i in _int_children(keys, p + "input_blocks."):
        if i == 0:
            continue
        block = f"{p}input_blocks.{i}"
        if block + ".0.op.weight" in index:
            levels.append(current)
            current = {"res": 0, "channels": None, "depths": []}
            continue
        current["res"] += 1
        current["channels"] = index.shape(block + ".0.out_layers.3.weight")[0]
        current["depths"].append(depth(block))
    levels.append(current)

    def fail(why: str) -> CheckpointError:
        return CheckpointError(index.path, f"unsupported UNet layout: {why}")

    res_counts = {level["res"] for level in levels}
    if len(res_counts) != 1 or 0 in res_counts:
        raise fail(f"res blocks per level differ: {[level['res'] for level in levels]}")
    layers_per_block = res_counts.pop()
    channels = [int(level["channels"]) for level in levels]
    level_depths: list[int | None] = []
    for n, level in enumerate(levels):
        if len(set(level["depths"])) != 1:
            raise fail(f"level {n} mixes transformer depths {level['depths']}")
        level_depths.append(level["depths"][0])

    # output blocks mirror the input blocks with one extra block per level
    out_ids = _int_children(keys, p + "output_blocks.")
    if len(out_ids) != len(levels) * (layers_per_block + 1):
        raise fail(f"{len(out_ids)} output blocks for {len(levels)} levels of {layers_per_block} res blocks")
    for up_level in range(len(levels)):
        expected = level_depths[len(levels) - 1 - up_level]
        for j in range(layers_per_block + 1):
            got = depth(f"{p}output_blocks.{up_level * (layers_per_block + 1) + j}")
            if got != expected:
                raise fail(f"output level {up_level} has transformer depth {got}, input level has {expected}")

    mid_depth = depth(p + "middle_block")
    if mid_depth is None:
        raise fail("the middle block has no transformer")
    transformer_layers = [d if d is not None else 1 for d in level_depths]
    if level_depths[-1] is None:
        transformer_layers[-1] = mid_depth
    elif level_depths[-1] != mid_depth:
        raise fail(f"middle block depth {mid_depth} differs from the last level's {level_depths[-1]}")

    attn_key = next((k for k in keys if k.endswith(".attn2.to_k.weight")), None)
    proj_in_key = next((k for k in keys if k.endswith(".proj_in.weight")), None)
    if attn_key is None or proj_in_key is None:
        raise fail("no cross-attention layers")
    cross_attention_dim = index.shape(attn_key)[1]
    use_linear = len(index.shape(proj_in_key)) == 2

    config = family_config(family, "unet")
    config.update(
        in_channels=in_channels,
        out_channels=out_channels,
        block_out_channels=channels,
        layers_per_block=layers_per_block,
        down_block_types=["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in level_depths],
        up_block_types=["CrossAttnUpBlock2D" if d else "UpBlock2D" for d in reversed(level_depths)],
        cross_attention_dim=cross_attention_dim,
        use_linear_projection=use_linear,
        transformer_layers_per_block=(
            transformer_layers[0] if len(set(transformer_layers)) == 1 else transformer_layers
        ),
        attention_head_dim=_SD1_NUM_HEADS if family == "sd15" else [_heads(c) for c in channels],
    )
    time_embed_dim = index.shape(p + "time_embed.0.weight")[0]
    if time_embed_dim != 4 * model_channels:
        config["time_embedding_dim"] = time_embed_dim
    if model_channels != channels[0]:
        raise fail(f"conv_in has {model_channels} channels but the first level has {channels[0]}")
    groups = int(config.get("norm_num_groups", 32))
    if any(c % groups for c in channels):
        raise fail(f"channels {channels} are not divisible by {groups} norm groups")

    label = p + "label_emb.0.0.weight"
    if family == "sdxl":
        if label not in index:
            raise fail("SDXL text encoders but the UNet has no label_emb (size conditioning)")
        adm_in = index.shape(label)[1]
        pooled = adm_pooled_dim if adm_pooled_dim is not None else 1280
        time_dim, rest = divmod(adm_in - pooled, 6)
        if rest or time_dim <= 0:
            raise fail(f"label_emb input {adm_in} does not fit pooled {pooled} + 6 size embeddings")
        config.update(projection_class_embeddings_input_dim=adm_in, addition_time_embed_dim=time_dim)
    elif label in index:
        raise fail("the UNet has class/label embeddings (unCLIP or similar), which are not supported")
    return config


def derive_vae_config(index: TensorIndex, prefix: str, family: Family | None) -> dict[str, Any]:
    """The diffusers ``AutoencoderKL`` config of an original-layout VAE under ``prefix``."""
    keys = [k for k in index.keys() if k.startswith(prefix)]
    e = prefix + "encoder."
    levels = _int_children(keys, e + "down.")
    if not levels:
        raise CheckpointError(index.path, "VAE encoder has no down blocks")
    layers_per_block = len(_int_children(keys, e + "down.0.block."))
    channels = [index.shape(f"{e}down.{i}.block.{layers_per_block - 1}.conv2.weight")[0] for i in levels]
    dec_layers = len(_int_children(keys, prefix + "decoder.up.0.block."))
    if dec_layers != layers_per_block + 1:
        raise CheckpointError(index.path, f"unsupported VAE: decoder has {dec_layers} res blocks per level")
    latent = index.shape(prefix + "decoder.conv_in.weight")[1]
    config = family_config(family or "sd15", "vae")
    config.update(
        in_channels=index.shape(e + "conv_in.weight")[1],
        out_channels=index.shape(prefix + "decoder.conv_out.weight")[0],
        block_out_channels=channels,
        layers_per_block=layers_per_block,
        latent_channels=latent,
        down_block_types=["DownEncoderBlock2D"] * len(channels),
        up_block_types=["UpDecoderBlock2D"] * len(channels),
        use_quant_conv=prefix + "quant_conv.weight" in index,
        use_post_quant_conv=prefix + "post_quant_conv.weight" in index,
        mid_block_add_attention=e + "mid.attn_1.q.weight" in index,
        scaling_factor=VAE_SCALING_FACTOR[family or "sd15"],
    )
    return config


def _clip_config(
    family_cfg: Mapping[str, Any],
    hidden: int,
    inter: int,
    layers: int,
    vocab: int,
    positions: int,
    proj: int | None,
) -> dict[str, Any]:
    config = {k: v for k, v in family_cfg.items() if k not in ("architectures", "model_type")}
    config.update(
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=_heads(hidden),
        vocab_size=vocab,
        max_position_embeddings=positions,
        projection_dim=proj if proj is not None else hidden,
    )
    return config


def family_text_layer(family: Family) -> tuple[int, bool]:
    """(hidden layer, final layer norm applied) a family conditions on, ComfyUI numbering: SD1 the last
    layer normed; SD2 the penultimate of all 24 layers, normed; SDXL the penultimate, not normed."""
    if family == "sd15":
        return -1, True
    if family == "sd2":
        return -2, True
    return -2, False


def derive_text_encoder(
    index: TensorIndex,
    prefix: str,
    layout: TextEncoderLayout,
    *,
    family: Family,
    name: str,
) -> TextEncoderInfo:
    """Config of the text encoder stored under ``prefix`` in ``layout``."""
    keys = [k for k in index.keys() if k.startswith(prefix)]
    try:
        if layout == "clip_l":
            t = prefix + "text_model."
            vocab, hidden = index.shape(t + "embeddings.token_embedding.weight")
            positions = index.shape(t + "embeddings.position_embedding.weight")[0]
            layers = len(_int_children(keys, t + "encoder.layers."))
            inter = index.shape(t + "encoder.layers.0.mlp.fc1.weight")[0]
            proj = None
        else:
            vocab, hidden = index.shape(prefix + "token_embedding.weight")
            positions = index.shape(prefix + "positional_embedding")[0]
            layers = len(_int_children(keys, prefix + "transformer.resblocks."))
            inter = index.shape(prefix + "transformer.resblocks.0.mlp.c_fc.weight")[0]
            proj_key = prefix + "text_projection"
            proj = index.shape(proj_key)[1] if proj_key in index else None
    except (KeyError, IndexError, ValueError):
        raise CheckpointError(index.path, f"text encoder under {prefix}* is incomplete") from None
    component = "text_encoder_2" if name == "text_encoder_2" else "text_encoder"
    with_projection = family == "sdxl" and name == "text_encoder_2"
    config = _clip_config(family_config(family, component), hidden, inter, layers, vocab, positions, proj)
    default_layer, final_ln = family_text_layer(family)
    return TextEncoderInfo(
        name=name,
        layout=layout,
        model_class="CLIPTextModelWithProjection" if with_projection else "CLIPTextModel",
        key_prefix=prefix,
        hidden_size=hidden,
        num_layers=layers,
        projection_dim=proj if with_projection else None,
        pad_token="!" if layout == "open_clip" else "<|endoftext|>",
        default_layer=default_layer,
        final_layer_norm=final_ln,
        config=config,
    )


_YAML_V = re.compile(r"^\s*parameterization\s*:\s*[\"']?v[\"']?\s*(#.*)?$", re.MULTILINE)


def _sibling_yaml_says_v(path: Path) -> bool:
    for candidate in (path.with_suffix(".yaml"), path.with_suffix(".yml")):
        if candidate.is_file():
            try:
                text = candidate.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            return bool(_YAML_V.search(text))
    return False


def _dominant_dtype(index: TensorIndex, prefix: str) -> str:
    counts = Counter(index.dtype(k) for k in index.keys() if k.startswith(prefix))
    floats = [(n, d) for d, n in counts.items() if d.startswith(("float", "bfloat"))]
    return max(floats)[1] if floats else "unknown"


def normalise_sd1_clip_keys(index: TensorIndex) -> TensorIndex:
    """Very old SD1 files store CLIP as ``cond_stage_model.transformer.encoder.*`` (no ``text_model.``)."""
    old = [
        k
        for k in index.keys()
        if k.startswith(SD1_CLIP_PREFIX) and not k.startswith(SD1_CLIP_PREFIX + "text_model.")
    ]
    if not old or any(k.startswith(SD1_CLIP_PREFIX + "text_model.") for k in index.keys()):
        return index
    rename = {k: SD1_CLIP_PREFIX + "text_model." + k[len(SD1_CLIP_PREFIX) :] for k in old}
    entries = {rename.get(k, k): v for k, v in index.entries.items()}
    back = {v: k for k, v in rename.items()}
    return TensorIndex(index.path, index.source_format, entries, lambda key: index.read(back.get(key, key)))


def detect_index(index: TensorIndex) -> CheckpointInfo:
    """Detect the family and configs of a single-file checkpoint given its tensor index."""
    try:
        return _detect_index(index)
    except (KeyError, IndexError, ValueError) as exc:
        raise CheckpointError(
            index.path,
            f"incomplete or unsupported model: {type(exc).__name__} {exc} while reading its layout",
        ) from None


def _detect_index(index: TensorIndex) -> CheckpointInfo:
    path = index.path
    keys = index.keys()
    if UNET_PREFIX + "input_blocks.0.0.weight" not in index:
        if any(k.startswith(UNET_PREFIX) for k in keys):
            raise CheckpointError(
                path, f"{UNET_PREFIX}* keys present but not an SD1/SD2/SDXL UNet; {_describe_unknown(index)}"
            )
        raise CheckpointError(path, f"no {UNET_PREFIX}* keys; {_describe_unknown(index)}")

    has = {
        "sd1_clip": SD1_CLIP_PREFIX + "text_model.embeddings.token_embedding.weight" in index,
        "sd2_clip": SD2_CLIP_PREFIX + "token_embedding.weight" in index,
        "xl_l": SDXL_CLIP_L_PREFIX + "text_model.embeddings.token_embedding.weight" in index,
        "xl_g": SDXL_CLIP_G_PREFIX + "token_embedding.weight" in index,
        "xl_refiner_g": "conditioner.embedders.0.model.token_embedding.weight" in index,
    }
    context_key = next(
        (k for k in keys if k.startswith(UNET_PREFIX) and k.endswith("attn2.to_k.weight")), None
    )
    context = index.shape(context_key)[1] if context_key else None
    has_label = UNET_PREFIX + "label_emb.0.0.weight" in index

    family: Family
    encoders: list[tuple[str, TextEncoderLayout, str]] = []
    if has["xl_refiner_g"] and not has["xl_g"]:
        raise CheckpointError(
            path, "this looks like an SDXL refiner (OpenCLIP-G only), which is not supported"
        )
    if has["xl_l"] or has["xl_g"]:
        family = "sdxl"
        if not (has["xl_l"] and has["xl_g"]):
            raise CheckpointError(path, "SDXL checkpoint with only one of its two text encoders")
        encoders = [
            (SDXL_CLIP_L_PREFIX, "clip_l", "text_encoder"),
            (SDXL_CLIP_G_PREFIX, "open_clip", "text_encoder_2"),
        ]
    elif has["sd2_clip"]:
        family = "sd2"
        encoders = [(SD2_CLIP_PREFIX, "open_clip", "text_encoder")]
    elif has["sd1_clip"]:
        family = "sd15"
        encoders = [(SD1_CLIP_PREFIX, "clip_l", "text_encoder")]
    elif has_label:
        family = "sdxl"
    elif context == 1024:
        family = "sd2"
    elif context == 768:
        family = "sd15"
    else:
        raise CheckpointError(
            path, f"UNet without text encoders and context dim {context}: cannot tell the family"
        )

    text_encoders = [derive_text_encoder(index, p, lay, family=family, name=n) for p, lay, n in encoders]
    if text_encoders and context is not None:
        expected = sum(te.hidden_size for te in text_encoders)
        if context != expected:
            raise CheckpointError(
                path,
                f"UNet cross-attention dim {context} does not match the text encoder width(s) "
                f"{[te.hidden_size for te in text_encoders]} of a {family} checkpoint",
            )
    pooled = text_encoders[1].projection_dim if family == "sdxl" and len(text_encoders) == 2 else None
    unet_config = derive_unet_config(index, family, pooled)

    has_vae = (
        VAE_PREFIX + "encoder.conv_in.weight" in index and VAE_PREFIX + "decoder.conv_in.weight" in index
    )
    vae_config = derive_vae_config(index, VAE_PREFIX, family) if has_vae else None

    prediction: Prediction = "eps"
    source = "default"
    if "v_pred" in index:
        prediction, source = "v", "v_pred key"
    elif _sibling_yaml_says_v(path):
        prediction, source = "v", "yaml"
    elif family == "sd2":
        last = max(_int_children(keys, UNET_PREFIX + "output_blocks."))
        probe = f"{UNET_PREFIX}output_blocks.{last}.1.transformer_blocks.0.norm1.bias"
        if probe in index and float(index.read(probe).float().std()) > _SD2_VPRED_STD:
            prediction, source = "v", "sd2 heuristic"

    components = ["unet"] + (["vae"] if has_vae else []) + [te.name for te in text_encoders]
    return CheckpointInfo(
        path=str(path),
        source_format=index.source_format,
        family=family,
        prediction=prediction,
        prediction_source=source,
        zero_terminal_snr="ztsnr" in index,
        dtype=_dominant_dtype(index, UNET_PREFIX),
        components=components,
        unet_config=unet_config,
        vae_config=vae_config,
        text_encoders=text_encoders,
        vae_scaling_factor=VAE_SCALING_FACTOR[family],
        tensor_count=len(index),
    )


# ---------------------------------------------------------------------------------------------------------
# diffusers folders


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


def detect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Detect what a checkpoint file or diffusers folder holds, reading only headers where possible."""
    path = Path(path)
    if path.is_dir():
        return detect_diffusers_folder(path)
    index = open_single_file(path)
    return detect_index(index)
