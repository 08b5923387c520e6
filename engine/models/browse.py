"""What a model file says about itself, for the canvas's model browser: its base model family and the
training metadata a safetensors header carries (kohya's ``ss_*`` keys, Stability's ``modelspec.*``).

Only headers are read: tensor names, shapes and the ``__metadata__`` strings. Checkpoints go through the
loader's own detection (``detect.py``), which decides from names and shapes (an SD2 file's prediction type
is the one exception: it reads one small norm bias). LoRAs, ControlNets and embeddings are told apart by
the width of what they condition on (the cross-attention context or the token embedding: 768 for SD1.x,
1024 for SD2.x, 2048 for SDXL, 1280 for SDXL's refiner), then by what their metadata says. Torch pickles
(``.ckpt``, ``.pt``) are never opened here: their family is ``unknown``.

Metadata values are strings, some of them JSON (``ss_tag_frequency``); they are parsed defensively: a
value that does not parse is left out, never an error of the whole file.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from atelier.engine.models.detect import detect_checkpoint, detect_index
from atelier.engine.models.errors import CheckpointError
from atelier.engine.models.files import (
    SAFETENSORS_SUFFIXES,
    TORCH_SUFFIXES,
    open_single_file,
    read_safetensors_header,
    sniff_format,
)

FamilyId = Literal["sd15", "sd2", "sdxl", "sdxl_refiner", "unknown"]
FileFormat = Literal["safetensors", "torch", "diffusers", "other"]

FAMILY_LABELS: dict[str, str] = {
    "sd15": "SD1.x",
    "sd2": "SD2.x",
    "sdxl": "SDXL",
    "sdxl_refiner": "SDXL refiner",
    "unknown": "unknown",
}
#: model kinds that belong to one base model family; the others (upscalers, face detectors, styles) do not
FAMILY_KINDS = ("checkpoints", "loras", "vae", "controlnet", "embeddings", "hypernetworks")
#: the width of the text conditioning (cross-attention context, token embeddings) of each family
CONTEXT_WIDTHS: dict[int, FamilyId] = {768: "sd15", 1024: "sd2", 2048: "sdxl", 1280: "sdxl_refiner"}
#: sibling images a preview may be, tried in order (A1111's NAME.png, civitai helpers' NAME.preview.png)
PREVIEW_SUFFIXES = (
    ".preview.png",
    ".preview.jpg",
    ".preview.jpeg",
    ".preview.webp",
    ".png",
    ".jpg",
    ".jpeg",
    ".webp",
)
MAX_TRIGGER_WORDS = 12
MAX_TAGS = 40
MAX_TEXT = 2000

# LoRA down-projection parts: their second dimension is the width of what the adapted layer takes in
_DOWN_PARTS = ("lora_down.weight", "lora_A.weight", "lora.down.weight", "hada_w1_b", "hada_w2_b")
_TE_PREFIXES = ("lora_te_", "text_encoder.")
_SDXL_TE_PREFIXES = ("lora_te1_", "lora_te2_", "text_encoder_2.", "lora_te2.")


class ModelFileInfo(BaseModel):
    """What the browser shows of one file besides its name, size and time."""

    #: None for kinds without a base model (upscalers, face detectors, styles)
    family: FamilyId | None = None
    #: what decided the family: ``tensors`` (names and shapes), ``configs`` (a diffusers folder), ``metadata``,
    #: or ``""`` when unknown
    family_source: str = ""
    format: FileFormat = "other"
    #: the trigger phrase and the most frequent training tags, best first
    trigger_words: list[str] = Field(default_factory=list)
    #: training tags with how many captions carried them, most frequent first
    tags: list[tuple[str, int]] = Field(default_factory=list)
    #: the known metadata fields, cleaned (title, description, network dim/alpha, resolution, ...)
    details: dict[str, str] = Field(default_factory=dict)
    #: every ``__metadata__`` entry, long values shortened (only asked for one file at a time)
    metadata: dict[str, str] = Field(default_factory=dict)
    #: the file cannot be read (not a valid safetensors file, ...): what is wrong
    error: str | None = None
    #: something worth knowing that is not an error (why the family is unknown)
    note: str | None = None


def family_label(family: str | None) -> str | None:
    return FAMILY_LABELS.get(family, family) if family is not None else None


def preview_candidates(name: str) -> list[str]:
    """Relative names of the sibling images that may preview model ``name`` (``sub/x.safetensors`` ->
    ``sub/x.preview.png``, ``sub/x.png``, ...), in the order they are tried."""
    stem = name[: -len(Path(name).suffix)] if Path(name).suffix else name
    return [stem + s for s in PREVIEW_SUFFIXES]


def describe_file(kind: str, path: Path) -> ModelFileInfo:
    """Family, format and metadata of the model file (or diffusers folder) at ``path`` of ``kind``."""
    has_family = kind in FAMILY_KINDS
    if path.is_dir():
        return _describe_folder(kind, path, has_family)
    suffix = path.suffix.lower()
    try:
        sniffed = sniff_format(path)
    except OSError as exc:
        return ModelFileInfo(error=f"cannot read the file: {exc}", family="unknown" if has_family else None)
    is_safetensors = suffix in SAFETENSORS_SUFFIXES or (suffix in TORCH_SUFFIXES and sniffed == "safetensors")
    if not is_safetensors:
        fmt: FileFormat = "torch" if suffix in TORCH_SUFFIXES else "other"
        note = (
            "a PyTorch pickle: it is not opened to browse (only safetensors headers are read)"
            if fmt == "torch"
            else None
        )
        return ModelFileInfo(format=fmt, family="unknown" if has_family else None, note=note)
    try:
        entries, metadata = read_safetensors_header(path)
    except CheckpointError as exc:
        return ModelFileInfo(
            format="safetensors", family="unknown" if has_family else None, error=exc.problem
        )
    info = ModelFileInfo(format="safetensors", metadata=_shortened(metadata))
    _read_training_metadata(info, metadata)
    if not has_family:
        return info
    shapes = {name: shape for name, (shape, _dtype) in entries.items()}
    if kind == "checkpoints":
        family, note = _checkpoint_family(path)
    else:
        family, note = _family_from_shapes(kind, shapes), None
    if family is not None:
        info.family, info.family_source = family, "tensors"
    else:
        meta_family = family_from_metadata(metadata)
        info.family, info.family_source = (meta_family, "metadata") if meta_family else ("unknown", "")
        if meta_family is None:
            info.note = note or "neither its tensors nor its metadata say which base model it is for"
    return info


def _describe_folder(kind: str, path: Path, has_family: bool) -> ModelFileInfo:
    if kind != "checkpoints":
        return ModelFileInfo(family="unknown" if has_family else None, note="a folder")
    try:
        detected = detect_checkpoint(path)
    except CheckpointError as exc:
        return ModelFileInfo(format="diffusers", family="unknown", error=exc.problem)
    return ModelFileInfo(format="diffusers", family=detected.family, family_source="configs")


def _checkpoint_family(path: Path) -> tuple[FamilyId | None, str | None]:
    """The loader's own detection: the family it would build, or why it cannot tell."""
    try:
        detected = detect_index(open_single_file(path))
    except CheckpointError as exc:
        return None, f"not a checkpoint Atelier loads: {exc.problem}"
    return detected.family, None


def _family_from_shapes(kind: str, shapes: Mapping[str, tuple[int, ...]]) -> FamilyId | None:
    """A LoRA's, ControlNet's or embedding's family from the widths its tensors take in."""
    keys = list(shapes)
    if kind == "embeddings":
        return _embedding_family(shapes)
    if any(k.startswith(_SDXL_TE_PREFIXES) for k in keys):
        return "sdxl"
    for key in keys:
        shape = shapes[key]
        if "attn2" in key and "to_k" in key and len(shape) >= 2:
            if key.endswith(_DOWN_PARTS) or key.endswith("to_k.weight"):
                family = CONTEXT_WIDTHS.get(shape[1])
                if family is not None:
                    return family
    # text-encoder-only LoRAs: the width of a text encoder layer's input
    for key in keys:
        shape = shapes[key]
        if key.startswith(_TE_PREFIXES) and key.endswith(_DOWN_PARTS) and len(shape) == 2:
            if "q_proj" in key or "fc1" in key:
                return {768: "sd15", 1024: "sd2"}.get(shape[1])
    return None


def _embedding_family(shapes: Mapping[str, tuple[int, ...]]) -> FamilyId | None:
    if "clip_g" in shapes or "clip_l" in shapes:
        return "sdxl"  # SDXL embeddings carry a vector per text encoder
    shape = shapes.get("emb_params") or (next(iter(shapes.values())) if len(shapes) == 1 else None)
    return {768: "sd15", 1024: "sd2"}.get(shape[-1]) if shape else None


_ARCHITECTURES: tuple[tuple[str, FamilyId], ...] = (
    ("stable-diffusion-xl-v1-refiner", "sdxl_refiner"),
    ("stable-diffusion-xl", "sdxl"),
    ("stable-diffusion-v2", "sd2"),
    ("stable-diffusion-v1", "sd15"),
)


def family_from_metadata(metadata: Mapping[str, str]) -> FamilyId | None:
    """The family a file's metadata names: ``modelspec.architecture`` (``stable-diffusion-xl-v1-base/lora``)
    or kohya's ``ss_base_model_version`` (``sdxl_base_v1-0``, ``sd_v1``, ``sd_v2``) and ``ss_v2``."""
    arch = str(metadata.get("modelspec.architecture", "")).lower()
    for prefix, family in _ARCHITECTURES:
        if arch.startswith(prefix):
            return family
    version = str(metadata.get("ss_base_model_version", "")).lower()
    if version.startswith("sdxl"):
        return "sdxl_refiner" if "refiner" in version else "sdxl"
    if version.startswith("sd_v2") or version.startswith("sd_2"):
        return "sd2"
    if version.startswith("sd_v1") or version.startswith("sd_1"):
        return "sd15"
    v2 = str(metadata.get("ss_v2", "")).lower()
    if v2 == "true":
        return "sd2"
    if v2 == "false" and "ss_network_module" in metadata:
        return "sd15"  # kohya before SDXL wrote ss_v2 and nothing else about the base model
    return None


# -- training metadata ---------------------------------------------------------------------------------

#: detail name -> the metadata keys it is read from, first present wins
_DETAILS: dict[str, tuple[str, ...]] = {
    "title": ("modelspec.title", "ss_output_name"),
    "description": ("modelspec.description",),
    "author": ("modelspec.author",),
    "trigger_phrase": ("modelspec.trigger_phrase",),
    "usage_hint": ("modelspec.usage_hint",),
    "date": ("modelspec.date",),
    "license": ("modelspec.license",),
    "resolution": ("modelspec.resolution", "ss_resolution"),
    "network_module": ("ss_network_module",),
    "network_dim": ("ss_network_dim",),
    "network_alpha": ("ss_network_alpha",),
    "base_model": ("ss_sd_model_name",),
    "base_model_version": ("ss_base_model_version",),
    "epochs": ("ss_num_epochs", "ss_epoch"),
    "steps": ("ss_max_train_steps", "ss_steps"),
    "train_images": ("ss_num_train_images",),
    "learning_rate": ("ss_learning_rate",),
    "training_comment": ("ss_training_comment",),
    "output_name": ("ss_output_name",),
}


def _clean(value: str) -> str:
    text = str(value).strip()
    if text.lower() in ("none", "null"):
        return ""
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"


def _shortened(metadata: Mapping[str, str]) -> dict[str, str]:
    return {str(k): _clean(v) for k, v in metadata.items() if not str(k).startswith("modelspec.thumbnail")}


def _read_training_metadata(info: ModelFileInfo, metadata: Mapping[str, str]) -> None:
    for detail, keys in _DETAILS.items():
        for key in keys:
            value = _clean(metadata.get(key, ""))
            if value:
                info.details[detail] = value
                break
    resolution = info.details.get("resolution")
    if resolution:
        info.details["resolution"] = _resolution_text(resolution)
    info.tags = tag_frequency(metadata.get("ss_tag_frequency", ""))[:MAX_TAGS]
    words: list[str] = []
    for phrase in re.split(r"[,\n]", info.details.get("trigger_phrase", "")):
        if phrase.strip():
            words.append(phrase.strip())
    for tag, _count in info.tags:
        if len(words) >= MAX_TRIGGER_WORDS:
            break
        words.append(tag)
    info.trigger_words = list(dict.fromkeys(words))[:MAX_TRIGGER_WORDS]


def _resolution_text(value: str) -> str:
    """``(512, 768)``, ``[512, 768]``, ``512x768`` or ``512`` as ``512x768``."""
    numbers = re.findall(r"\d+", value)
    if len(numbers) == 2:
        return f"{numbers[0]}x{numbers[1]}"
    if len(numbers) == 1:
        return f"{numbers[0]}x{numbers[0]}"
    return value


def tag_frequency(raw: str) -> list[tuple[str, int]]:
    """kohya's ``ss_tag_frequency`` (JSON: dataset folder -> {tag: count}) as (tag, total count), the most
    frequent first (ties by name). Anything that does not parse is left out."""
    if not raw:
        return []
    try:
        data: Any = json.loads(raw)
    except (json.JSONDecodeError, TypeError, ValueError):
        return []
    if isinstance(data, str):  # written twice-encoded by some trainers
        try:
            data = json.loads(data)
        except (json.JSONDecodeError, ValueError):
            return []
    if not isinstance(data, dict):
        return []
    totals: Counter[str] = Counter()
    for folder in data.values():
        if not isinstance(folder, dict):
            continue
        for tag, count in folder.items():
            tag = str(tag).strip()
            if not tag or isinstance(count, bool):
                continue
            try:
                n = int(count)
            except (TypeError, ValueError):
                continue
            if n > 0:
                totals[tag] += n
    return sorted(totals.items(), key=lambda item: (-item[1], item[0]))
