"""ComfyUI's feature flags: what the server tells a client in the websocket's ``feature_flags`` handshake
(and on ``GET /features``), and what it reads from the flags a client announces."""

from __future__ import annotations

from typing import Any

from ..settings import Settings


def server_features(settings: Settings) -> dict[str, Any]:
    """The server's flags, as ComfyUI names them: previews with metadata (binary event 4) are supported,
    and the largest upload in bytes."""
    return {"supports_preview_metadata": True, "max_upload_size": settings.max_upload_bytes}


def supports(features: dict[str, Any], name: str) -> bool:
    """Whether a client announced ``name``; as ComfyUI, only a literal ``true`` counts."""
    return features.get(name) is True
