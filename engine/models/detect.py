"""Checkpoint detection: which model family a file holds and the exact module configs to build it.

Everything is decided from tensor names and shapes (never the file name): the family from the text
encoder layout, widths and depths from the shapes (``derive.py``), the prediction type from marker keys,
a sibling ``.yaml`` or, for SD2, the weights themselves. Reading the file is ``files.py``'s job; diffusers
folders are detected by ``diffusers_folder.py``.
"""

import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import torch

from atelier.engine.models.derive import (
    derive_text_encoder,
    derive_unet_config,
    derive_vae_config,
    int_children,
)
from atelier.engine.models.describe import describe_unknown
from atelier.engine.models.diffusers_folder import detect_diffusers_folder
from atelier.engine.models.errors import CheckpointError
from atelier.engine.models.files import (
    TensorIndex,
    index_state_dict,
    normalise_sd1_clip_keys,
    open_single_file,
)
from atelier.engine.models.info import (
    SDXL_FAMILIES,
    VAE_SCALING_FACTOR,
    CheckpointInfo,
    Family,
    Prediction,
    TextEncoderLayout,
)
from atelier.engine.models.names import (
    SD1_CLIP_PREFIX,
    SD2_CLIP_PREFIX,
    SDXL_CLIP_G_PREFIX,
    SDXL_CLIP_L_PREFIX,
    SDXL_REFINER_CLIP_G_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
)
from atelier.engine.models.unclip import detect_unclip

# SD2 files carry no prediction marker. ComfyUI's heuristic: the spread of one norm bias in the last output
# block is above this in v-prediction models (768-v) and below it in eps ones (512-base).
_SD2_VPRED_STD = 0.09


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
                path, f"{UNET_PREFIX}* keys present but not an SD1/SD2/SDXL UNet; {describe_unknown(index)}"
            )
        raise CheckpointError(path, f"no {UNET_PREFIX}* keys; {describe_unknown(index)}")

    has = {
        "sd1_clip": SD1_CLIP_PREFIX + "text_model.embeddings.token_embedding.weight" in index,
        "sd2_clip": SD2_CLIP_PREFIX + "token_embedding.weight" in index,
        "xl_l": SDXL_CLIP_L_PREFIX + "text_model.embeddings.token_embedding.weight" in index,
        "xl_g": SDXL_CLIP_G_PREFIX + "token_embedding.weight" in index,
        "xl_refiner_g": SDXL_REFINER_CLIP_G_PREFIX + "token_embedding.weight" in index,
    }
    context_key = next(
        (k for k in keys if k.startswith(UNET_PREFIX) and k.endswith("attn2.to_k.weight")), None
    )
    context = index.shape(context_key)[1] if context_key else None
    has_label = UNET_PREFIX + "label_emb.0.0.weight" in index

    family: Family
    encoders: list[tuple[str, TextEncoderLayout, str]] = []
    if has["xl_refiner_g"] and not (has["xl_l"] or has["xl_g"]):
        family = "sdxl_refiner"  # OpenCLIP-G alone, first embedder: SDXL's refiner
        encoders = [(SDXL_REFINER_CLIP_G_PREFIX, "open_clip", "text_encoder_2")]
    elif has["xl_l"] or has["xl_g"]:
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
    pooled = text_encoders[-1].projection_dim if family in SDXL_FAMILIES and text_encoders else None
    unet_config = derive_unet_config(index, family, pooled)
    unclip = detect_unclip(index, unet_config) if family == "sd2" else None

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
        last = max(int_children(keys, UNET_PREFIX + "output_blocks."))
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
        unclip=unclip,
    )


def detect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Detect what a checkpoint file or diffusers folder holds, reading only headers where possible."""
    path = Path(path)
    if path.is_dir():
        return detect_diffusers_folder(path)
    index = open_single_file(path)
    return detect_index(index)


def detect_state_dict(
    state_dict: Mapping[str, torch.Tensor], path: str | Path = "<memory>"
) -> CheckpointInfo:
    """Detect a single-file state dict already in memory."""
    return detect_index(normalise_sd1_clip_keys(index_state_dict(state_dict, Path(path))))
