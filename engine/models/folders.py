"""Model folders for Stable Diffusion: the kinds, their A1111 aliases, and extra folders from a config file.

A models root (``--models-dir`` or ``ATELIER_MODELS``, default ``./models``) has subfolders ``checkpoints,
vae, loras, upscale_models, controlnet, embeddings, styles, face_detectors, hypernetworks, clip_vision, ipadapter, style_models, pose, depth``; more roots or per-kind folders
come from a TOML file (``--config`` or ``ATELIER_CONFIG``), so an existing ComfyUI or A1111 models folder
works as it is (A1111's folder names ``Stable-diffusion``, ``Lora``, ``VAE``, ``ESRGAN`` are recognised, and
face detectors in Impact Pack's ``ultralytics/bbox`` or ADetailer's ``adetailer``)::

    [models]
    roots = ["/home/me/ComfyUI/models", "/home/me/stable-diffusion-webui/models"]
    [models.paths]
    loras = ["/data/loras"]
"""

from __future__ import annotations

import tomllib
from pathlib import Path

MODEL_KINDS = (
    "checkpoints",
    "vae",
    "loras",
    "upscale_models",
    "controlnet",
    "embeddings",
    "styles",
    "face_detectors",
    "hypernetworks",
    "clip_vision",
    "ipadapter",
    "style_models",
    "pose",
    "depth",
)
ALIASES: dict[str, tuple[str, ...]] = {
    "checkpoints": ("checkpoints", "Stable-diffusion"),
    "vae": ("vae", "VAE"),
    "loras": ("loras", "Lora", "LyCORIS"),
    "upscale_models": ("upscale_models", "ESRGAN", "RealESRGAN"),
    "controlnet": ("controlnet", "ControlNet"),
    "embeddings": ("embeddings",),
    # prompt styles (engine/models/styles.py): *.csv (A1111) and *.json; an entry may be a styles.csv itself
    "styles": ("styles",),
    # YOLO/YuNet face detector files; Impact Pack keeps them in ultralytics/bbox, ADetailer in adetailer
    "face_detectors": ("face_detectors", "ultralytics/bbox", "adetailer"),
    "hypernetworks": ("hypernetworks",),
    # CLIP vision encoders and IP-Adapters (ComfyUI's folders; IPAdapter_plus keeps adapters in ipadapter)
    "clip_vision": ("clip_vision",),
    "ipadapter": ("ipadapter",),
    "style_models": ("style_models",),
    # the user's annotator models (engine/imaging/pose_dwpose.py, depth.py): DWPose and depth ONNX files;
    # ComfyUI's controlnet_aux keeps DWPose's beside its own node folder
    "pose": ("pose", "../custom_nodes/comfyui_controlnet_aux/ckpts/yzd-v/DWPose"),
    "depth": ("depth",),
}


def model_folders(roots: list[Path], extra: dict[str, list[Path]] | None = None) -> dict[str, list[Path]]:
    """Folders searched per kind: each root's kind folder (and its aliases that exist), then ``extra``."""
    out: dict[str, list[Path]] = {k: [] for k in MODEL_KINDS}
    for root in roots:
        for kind, names in ALIASES.items():
            for name in names:
                p = root / name
                if p not in out[kind] and (p.is_dir() or name == kind):
                    out[kind].append(p)
    for kind, paths in (extra or {}).items():
        out.setdefault(kind, [])
        for p in paths:
            if p not in out[kind]:
                out[kind].append(p)
    return out


def read_config(path: Path) -> tuple[list[Path], dict[str, list[Path]]]:
    """Extra roots and per-kind folders from a TOML config file (paths relative to the file)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"config file {path}: {exc}") from exc
    models = data.get("models", {})
    base = path.parent
    roots = [(base / Path(r).expanduser()) for r in models.get("roots", [])]
    extra = {k: [(base / Path(p).expanduser()) for p in v] for k, v in models.get("paths", {}).items()}
    return roots, extra


def configured_model_folders(models_dir: Path, config: Path | None) -> dict[str, list[Path]]:
    roots = [models_dir]
    extra: dict[str, list[Path]] = {}
    if config is not None:
        more, extra = read_config(config)
        roots += more
    return model_folders(roots, extra)
