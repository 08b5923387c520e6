"""Model folders and the model manager: which files exist, and loaded models kept for reuse.

Folders: a models root (``--models-dir`` or ``ATELIER_MODELS``, default ``./models``) with subfolders
``checkpoints, vae, loras, upscale_models, controlnet, embeddings``, plus extra roots or per-kind folders from
a TOML config file (``--config`` or ``ATELIER_CONFIG``), so an existing ComfyUI or A1111 models folder can be
used as it is (A1111's folder names ``Stable-diffusion``, ``Lora``, ``VAE``, ``ESRGAN`` are recognised)::

    [models]
    roots = ["/home/me/ComfyUI/models", "/home/me/stable-diffusion-webui/models"]
    [models.paths]
    loras = ["/data/loras"]
"""

from __future__ import annotations

import os
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from atelier.engine import folders as F

MODEL_KINDS = ("checkpoints", "vae", "loras", "upscale_models", "controlnet", "embeddings")
ALIASES: dict[str, tuple[str, ...]] = {
    "checkpoints": ("checkpoints", "Stable-diffusion"),
    "vae": ("vae", "VAE"),
    "loras": ("loras", "Lora", "LyCORIS"),
    "upscale_models": ("upscale_models", "ESRGAN", "RealESRGAN"),
    "controlnet": ("controlnet", "ControlNet"),
    "embeddings": ("embeddings",),
}
WEIGHT_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


def model_folders(roots: list[Path], extra: dict[str, list[Path]] | None = None) -> dict[str, list[Path]]:
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
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"config file {path}: {exc}") from exc
    models = data.get("models", {})
    base = path.parent
    roots = [(base / Path(r).expanduser()) for r in models.get("roots", [])]
    extra = {k: [(base / Path(p).expanduser()) for p in v] for k, v in models.get("paths", {}).items()}
    return roots, extra


def configure_models(models_dir: Path | None = None, config: Path | None = None) -> dict[str, list[Path]]:
    """Set the model folders of the active :class:`engine.folders.Folders` and return them."""
    root = models_dir or Path(os.environ.get("ATELIER_MODELS", "models"))
    roots = [root]
    extra: dict[str, list[Path]] = {}
    config = config or (Path(os.environ["ATELIER_CONFIG"]) if os.environ.get("ATELIER_CONFIG") else None)
    if config is not None:
        more, extra = read_config(config)
        roots += more
    folders = F.active()
    folders.models = model_folders(roots, extra)
    return folders.models


def list_models(kind: str) -> list[str]:
    """Files (and, for checkpoints, diffusers folders) of a kind, as names relative to their folder."""
    names: list[str] = []
    for folder in F.active().models.get(kind, []):
        if not folder.is_dir():
            continue
        for root, dirs, files in os.walk(folder, followlinks=True):
            rel_root = Path(root).relative_to(folder)
            if kind == "checkpoints" and "model_index.json" in files:
                names.append(rel_root.as_posix())
                dirs[:] = []
                continue
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in files:
                if f.lower().endswith(WEIGHT_EXTENSIONS) and not f.startswith("."):
                    names.append((rel_root / f).as_posix())
    return sorted(dict.fromkeys(names))


def find_model(kind: str, name: str) -> Path:
    """The path of model ``name`` of ``kind``; never outside the kind's folders."""
    searched = F.active().models.get(kind, [])
    for folder in searched:
        path = F.resolve_inside(folder, name)
        if path.exists():
            return path
    where = ", ".join(str(p) for p in searched) or "(no folders configured)"
    raise FileNotFoundError(f"{kind[:-1] if kind.endswith('s') else kind} {name!r} not found in {where}")


@dataclass
class ModelManager:
    """Loads checkpoints onto a device once and hands out the same modules while the file is unchanged."""

    device: str = "cpu"
    dtype: torch.dtype | None = None
    max_loaded: int = 2

    def __post_init__(self) -> None:
        self._loaded: dict[tuple[str, int, int, str], Any] = {}
        self._lock = threading.Lock()

    def load_checkpoint(self, path: Path) -> Any:
        from .checkpoint import load_checkpoint

        key = _file_key(path, self.device)
        with self._lock:
            hit = self._loaded.pop(key, None)
            if hit is None:
                hit = load_checkpoint(path, device=self.device, dtype=self.dtype, vae_dtype=self.vae_dtype())
            self._loaded[key] = hit
            while len(self._loaded) > self.max_loaded:
                self._loaded.pop(next(iter(self._loaded)))
            return hit

    def vae_dtype(self) -> torch.dtype | None:
        """fp16 VAEs overflow (SDXL's notably): on CUDA decode in bf16 where supported, else fp32."""
        if not str(self.device).startswith("cuda"):
            return self.dtype
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32

    def unload_all(self) -> None:
        with self._lock:
            self._loaded.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _file_key(path: Path, device: str) -> tuple[str, int, int, str]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, device)


_default: ModelManager | None = None


def manager_for(ctx: Any) -> ModelManager:
    """The context's model manager (``services["models"]``), or a per-process one for its device."""
    services = getattr(ctx, "services", {}) or {}
    mm = services.get("models")
    if mm is not None:
        return mm
    global _default
    if _default is None or _default.device != ctx.device:
        _default = ModelManager(device=ctx.device)
    return _default
