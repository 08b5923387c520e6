"""The server's settings: what ``atelier serve``'s flags set."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from atelier.engine.limits import Limits

#: ComfyUI's ``--preview-method`` values Atelier has: "auto" picks the only method, latent2rgb
PreviewMethod = Literal["none", "auto", "latent2rgb"]
PREVIEW_METHODS: tuple[PreviewMethod, ...] = ("none", "auto", "latent2rgb")

FRONTEND_DIR = Path(__file__).resolve().parents[2] / "frontend"


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8188
    token: str | None = None
    database: Path = Path("atelier.db")
    max_body_bytes: int = 8 * 1024 * 1024
    max_upload_bytes: int = 32 * 1024 * 1024
    max_image_pixels: int = 64 * 1024 * 1024
    allow_origins: list[str] = field(default_factory=list)
    frontend: Path = FRONTEND_DIR
    #: latent previews while sampling: none unless enabled, as in ComfyUI
    preview_method: PreviewMethod = "none"

    @property
    def previews(self) -> bool:
        return self.preview_method != "none"

    #: warm up in the background at start-up (``engine/warmup.py``: model libraries, checkpoint hashes)
    warmup: bool = True

    #: the most jobs queued or running at once: more are refused (503) until the queue drains
    max_queued: int = 1000
    #: cross-job batching: the most queued jobs run together (their KSamplers as one batch; 1: never), and
    #: how long a job taken alone waits for a partner to be queued
    batch_jobs: int = 8
    batch_window_ms: float = 5.0
    #: what a job may ask for (admission control); None: the engine's (``atelier serve --max-...``)
    limits: Limits | None = None

    #: the static folder of ComfyUI's web frontend, served at ``/`` instead of the canvas (``--frontend
    #: comfyui``); None serves Atelier's canvas
    comfy_frontend: Path | None = None
    #: the users' folders (settings, saved workflows); None: ``user/`` next to the database
    user_dir: Path | None = None
    #: ComfyUI's ``--multi-user``: users are created with ``POST /users`` and chosen by ``Comfy-User``
    multi_user: bool = False
    #: run jobs on Ray worker actors (``atelier serve --ray``): a ``distributed.pool.RaySettings``; None runs
    #: them on one worker thread in this process
    ray: Any = None

    @property
    def users_root(self) -> Path:
        return self.user_dir if self.user_dir is not None else self.database.parent / "user"
