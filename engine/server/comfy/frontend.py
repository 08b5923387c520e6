"""Where ComfyUI's web frontend is: the ``comfyui-frontend-package`` wheel (``pip install
'atelier[comfyui]'``), whose ``static`` folder is the built frontend ``atelier serve --frontend comfyui``
serves at ``/``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE = "comfyui_frontend_package"
INSTALL_HINT = "pip install 'atelier[comfyui]' (or: pip install comfyui-frontend-package)"


class FrontendMissing(RuntimeError):
    """ComfyUI's frontend is not installed (or its package holds no built frontend)."""


def comfyui_frontend_dir() -> Path:
    """The built frontend's folder (it holds ``index.html``); ``FrontendMissing`` saying how to install
    it when the package is absent."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FrontendMissing(f"ComfyUI's web frontend is not installed: {INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        static = Path(location) / "static"
        if (static / "index.html").is_file():
            return static
    raise FrontendMissing(
        f"the {PACKAGE} package holds no built frontend (no static/index.html): {INSTALL_HINT}"
    )


def comfyui_frontend_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("comfyui-frontend-package")
    except PackageNotFoundError:
        return None
