"""CLIP vision encoders (``models/clip_vision``): the image encoders IP-Adapters, unCLIP and style models read.

A file is a ``CLIPVisionModelWithProjection`` state dict in the Hugging Face layout (``vision_model.*``,
``visual_projection.weight``), as people download it for IP-Adapters (``CLIP-ViT-H-14-laion2B-s32B-b79K``,
``CLIP-ViT-bigG-14-laion2B-39B-b160k``, h94/IP-Adapter's ``image_encoder/model.safetensors``), or the same
under a ``clip_vision.`` / ``model.`` prefix. The architecture is read from the tensor shapes; the widths of
the released encoders (ViT-L/14, ViT-H/14, ViT-bigG/14) take the rest of their settings (heads, activation)
from the configs shipped in ``configs/clip_vision``, any other width gets 64-wide heads and GELU (the tiny
test encoders). Images are prepared with torch only: resized (shorter side, bicubic) and centre-cropped to
the encoder's size, or squashed to it, then normalised with CLIP's mean and deviation.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from atelier.engine.model_loader import LoadOptions

if TYPE_CHECKING:  # transformers and diffusers (through .build) load when a model does, not at start-up
    from atelier.engine.models.libraries import CLIPVisionConfig, CLIPVisionModelWithProjection
from .errors import CheckpointError
from .files import TensorIndex, open_single_file

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "ClipVisionHandle",
    "ClipVisionOutput",
    "clip_vision_config",
    "clip_vision_loader",
    "load_clip_vision",
    "preprocess",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_CONFIGS = Path(__file__).parent / "configs" / "clip_vision"
#: hidden width -> shipped config of the released encoder of that width
KNOWN_WIDTHS = {1024: "vit-l-14", 1280: "vit-h-14", 1664: "vit-bigg-14"}
_PREFIXES = ("clip_vision.", "model.", "")
_LAYER = re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.")


@dataclass(frozen=True)
class ClipVisionOutput:
    """CLIP_VISION_OUTPUT: what an encoder gives for a batch of images (ComfyUI's fields).

    ``image_embeds`` [B, projection_dim] (the projected class token), ``last_hidden_state`` and
    ``penultimate_hidden_states`` [B, tokens, hidden] (the second-to-last layer's output, as IP-Adapter
    Plus reads it)."""

    image_embeds: Tensor
    last_hidden_state: Tensor
    penultimate_hidden_states: Tensor


def _strip_prefix(keys: list[str], path: Path) -> str:
    for prefix in _PREFIXES:
        if f"{prefix}vision_model.embeddings.patch_embedding.weight" in keys:
            return prefix
    if any(k.startswith(("visual.transformer.", "embedder.model.visual.")) for k in keys):
        raise CheckpointError(
            path,
            "is an open_clip / unCLIP checkpoint layout (visual.transformer.*); CLIPVisionLoader reads the "
            "Hugging Face layout (vision_model.*, visual_projection.weight) that IP-Adapter encoders ship in",
        )
    raise CheckpointError(path, "not a CLIP vision model (no vision_model.embeddings.patch_embedding.weight)")


def clip_vision_config(shape: Any, keys: list[str], prefix: str = "") -> CLIPVisionConfig:
    from atelier.engine.models.libraries import CLIPVisionConfig

    """The encoder's config from its tensor shapes (``shape(key) -> tuple``) and names."""
    patch = tuple(shape(f"{prefix}vision_model.embeddings.patch_embedding.weight"))
    positions = tuple(shape(f"{prefix}vision_model.embeddings.position_embedding.weight"))
    hidden, patch_size = int(patch[0]), int(patch[-1])
    grid = round((int(positions[0]) - 1) ** 0.5)
    layers = 1 + max(
        (int(m.group(1)) for k in keys if (m := _LAYER.match(k[len(prefix) :]))),
        default=-1,
    )
    intermediate = int(shape(f"{prefix}vision_model.encoder.layers.0.mlp.fc1.weight")[0])
    proj_key = f"{prefix}visual_projection.weight"
    projection = int(shape(proj_key)[0]) if proj_key in keys else hidden
    base: dict[str, Any] = {"hidden_act": "gelu", "num_attention_heads": max(1, hidden // 64)}
    if hidden in KNOWN_WIDTHS:
        base = json.loads((_CONFIGS / f"{KNOWN_WIDTHS[hidden]}.json").read_text())
    base.update(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        patch_size=patch_size,
        image_size=grid * patch_size,
        projection_dim=projection,
    )
    base.pop("model_type", None)
    return CLIPVisionConfig(**base)


@dataclass(frozen=True, eq=False)
class ClipVisionHandle:
    """CLIP_VISION: a loaded image encoder."""

    model: CLIPVisionModelWithProjection
    name: str = ""

    def __atelier_nbytes__(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.model.parameters(), *self.model.buffers()))

    @property
    def image_size(self) -> int:
        return int(self.model.config.image_size)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def projection_dim(self) -> int:
        return int(self.model.config.projection_dim)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def encode(self, image: Tensor, crop: Literal["center", "none"] = "center") -> ClipVisionOutput:
        """Encode IMAGE [B, H, W, C] in 0..1."""
        pixels = preprocess(image, self.image_size, crop).to(self.device, self.dtype)
        with torch.inference_mode():
            out = self.model(pixel_values=pixels, output_hidden_states=True)
        return ClipVisionOutput(
            image_embeds=out.image_embeds.float(),
            last_hidden_state=out.last_hidden_state.float(),
            penultimate_hidden_states=out.hidden_states[-2].float(),
        )


def preprocess(image: Tensor, size: int, crop: Literal["center", "none"] = "center") -> Tensor:
    """IMAGE [B, H, W, C] in 0..1 -> normalised pixels [B, 3, size, size]: the shorter side resized to
    ``size`` (bicubic, antialiased) and the centre cropped, or (``crop="none"``) the whole image squashed."""
    x = image[..., :3].movedim(-1, 1).float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    h, w = x.shape[-2:]
    if crop == "center":
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    else:
        nh, nw = size, size
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[:, :, top : top + size, left : left + size].clamp(0.0, 1.0)
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def load_clip_vision(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> CLIPVisionModelWithProjection:
    """A CLIP vision encoder from a single file (see the module's docstring for the layouts)."""
    from atelier.engine.models.libraries import CLIPVisionModelWithProjection

    from .build import assign_weights, build_empty, guard, resolve_dtype

    path = Path(path)
    index: TensorIndex = open_single_file(path)
    keys = index.keys()
    prefix = _strip_prefix(keys, path)
    config = guard(path, "clip_vision", lambda: clip_vision_config(index.shape, keys, prefix))
    names = {k[len(prefix) :]: k for k in keys if k.startswith(prefix)}
    if "visual_projection.weight" not in names:
        raise CheckpointError(path, "CLIP vision model without visual_projection.weight (image embeds)")
    model = build_empty(lambda: CLIPVisionModelWithProjection(config))
    state = {name: index.read(full) for name, full in names.items()}
    return assign_weights(
        model,
        state,
        device=device,
        dtype=resolve_dtype(device, dtype),
        path=path,
        component="clip_vision",
    )


def clip_vision_loader(path: Path, options: LoadOptions) -> CLIPVisionModelWithProjection:
    """``ctx.models`` loader of a CLIP vision file."""
    return load_clip_vision(path, device=options.device, dtype=options.dtype)
