"""What a checkpoint holds (``CheckpointInfo``), and the per-family facts that shapes cannot reveal.

Detection (``detect.py``, ``diffusers_folder.py``) produces these records; building and loading
(``build.py``, ``load.py``) and the tiny test models (``tiny.py``) consume them. Settings no tensor shape
shows (activation functions, the attention head convention, the VAE scaling factor, which CLIP layer a
family conditions on) come from the family configs shipped in ``configs/`` and the tables here.
"""

import json
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

#: ``sdxl_refiner``: SDXL's refiner (its own UNet, OpenCLIP-G only, aesthetic-score conditioning)
Family = Literal["sd15", "sd2", "sdxl", "sdxl_refiner"]
Prediction = Literal["eps", "v"]
SourceFormat = Literal["safetensors", "torch", "diffusers"]
TextEncoderLayout = Literal["clip_l", "open_clip"]

CONFIG_DIR = Path(__file__).parent / "configs"
TOKENIZER_DIR = CONFIG_DIR / "clip_tokenizer"
VAE_SCALING_FACTOR: dict[str, float] = {
    "sd15": 0.18215,
    "sd2": 0.18215,
    "sdxl": 0.13025,
    "sdxl_refiner": 0.13025,
}
#: families whose UNet takes a pooled text embedding and size conditioning
SDXL_FAMILIES = ("sdxl", "sdxl_refiner")
#: how many 256-wide size embeddings each such UNet takes: SDXL's six sizes, the refiner's four and an aesthetic score
SIZE_EMBEDDINGS: dict[str, int] = {"sdxl": 6, "sdxl_refiner": 5}
#: what an inpainting UNet takes besides the latent: a mask channel and the masked picture's latent
INPAINT_EXTRA_CHANNELS = 5


def unet_input_kind(in_channels: int, out_channels: int) -> Literal["plain", "inpaint"] | None:
    """What a UNet's input channel count says: a plain model takes the latent, an inpainting model the
    latent plus a mask and the masked picture's latent (9 for SD); anything else (InstructPix2Pix's 8,
    depth models' 5) is None."""
    if in_channels == out_channels:
        return "plain"
    if in_channels == out_channels + INPAINT_EXTRA_CHANNELS:
        return "inpaint"
    return None


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


class UnclipInfo(BaseModel):
    """What makes a checkpoint a Stable unCLIP one (SD2.1 unCLIP H/L): the UNet's image-embedding input
    (``label_emb``, ``2 * embed_dim`` wide: the noised image embedding and its noise level's embedding),
    the noise augmentor's schedule length and statistics, and the CLIP vision tower stored beside it."""

    model_config = ConfigDict(frozen=True)

    embed_dim: int  # width of the image embedding (1024 for ViT-H, 768 for ViT-L)
    noise_levels: int  # length of the augmentor's noise schedule (its max noise level)
    has_stats: bool  # the file carries the embedding statistics (data_mean / data_std)
    embedder_prefix: str | None  # where the CLIP vision tower is stored, None when the file has none


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
    #: set for a Stable unCLIP checkpoint (``unclip.py``)
    unclip: UnclipInfo | None = None

    @property
    def text_encoder_configs(self) -> list[dict[str, Any]]:
        return [te.config for te in self.text_encoders]

    @property
    def is_sdxl(self) -> bool:
        return self.family == "sdxl"

    @property
    def is_inpaint(self) -> bool:
        """An inpainting UNet (9 input channels for SD): sampled with a mask and masked picture
        concatenated to its input (``engine/models/inpaint.py``)."""
        c = self.unet_config
        return unet_input_kind(int(c.get("in_channels", 4)), int(c.get("out_channels", 4))) == "inpaint"


@cache
def _family_config_text(family: str, component: str) -> str:
    folder = "sdxl" if family == "sdxl_refiner" else family  # the refiner's settings are SDXL's
    path = CONFIG_DIR / folder / component / "config.json"
    return path.read_text(encoding="utf-8")


def family_config(family: str, component: str) -> dict[str, Any]:
    """The shipped full-size config of a family's component (unet, vae, text_encoder, text_encoder_2);
    a fresh dict each call, so callers may change it."""
    config: dict[str, Any] = json.loads(_family_config_text(family, component))
    return config


def family_text_layer(family: Family) -> tuple[int, bool]:
    """(hidden layer, final layer norm applied) a family conditions on, ComfyUI numbering: SD1 the last
    layer normed; SD2 the penultimate of all 24 layers, normed; SDXL the penultimate, not normed."""
    if family == "sd15":
        return -1, True
    if family == "sd2":
        return -2, True
    return -2, False
