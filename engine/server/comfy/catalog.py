"""ComfyUI's shapes of the catalogue and the machine: ``/object_info`` entries and ``/system_stats``."""

from __future__ import annotations

from typing import Any

from atelier.engine import types as T


def object_info_entry(desc: dict[str, Any]) -> dict[str, Any]:
    """One node type (as ``Registry.describe`` gives it) in ``/object_info``'s shape: combo inputs are
    their choice lists, options ride in the second element."""
    required: dict[str, Any] = {}
    optional: dict[str, Any] = {}
    for i in desc["inputs"]:
        opts = {k: i[k] for k in ("default", "min", "max", "step", "multiline", "tooltip") if k in i}
        if i.get("description"):
            opts["tooltip"] = i["description"]
        if i.get("control_after_generate"):
            opts["control_after_generate"] = True
        kind: Any = i.get("choices", []) if i["type"] == T.COMBO else i["type"]
        (optional if i["optional"] else required)[i["name"]] = [kind, opts] if opts else [kind]
    return {
        "input": {"required": required, "optional": optional},
        "input_order": {
            "required": [i["name"] for i in desc["inputs"] if not i["optional"]],
            "optional": [i["name"] for i in desc["inputs"] if i["optional"]],
        },
        "output": [o["type"] for o in desc["outputs"]],
        "output_is_list": desc.get("output_is_list") or [False for _ in desc["outputs"]],
        "output_name": [o["name"] for o in desc["outputs"]],
        "name": desc["type"],
        "display_name": desc["display_name"],
        "description": desc["description"],
        "python_module": "atelier",
        "category": desc["category"],
        "output_node": desc["output_node"],
        "deprecated": desc["deprecated"],
    }


def system_stats(info: dict[str, Any], argv: list[str] | None = None) -> dict[str, Any]:
    """``/system_stats`` from the system service's ``info()``. ``argv``: the ComfyUI-style command-line
    switches the server runs with (ComfyUI's frontend reads ``--multi-user`` there); never the real
    command line, which may hold the token."""
    if "gpu" in info:
        g = info["gpu"]
        device = {
            "name": g["name"],
            "type": "cuda",
            "index": 0,
            "vram_total": g["vram_total"],
            "vram_free": g["vram_free"],
            "torch_vram_total": g["vram_total"],
            "torch_vram_free": g["vram_free"],
        }
    else:
        device = {
            "name": "cpu",
            "type": "cpu",
            "index": None,
            "vram_total": 0,
            "vram_free": 0,
            "torch_vram_total": 0,
            "torch_vram_free": 0,
        }
    return {
        "system": {
            "os": "posix",
            "python_version": info["python"],
            "pytorch_version": info["torch"],
            "ram_total": info.get("ram", {}).get("total", 0),
            "ram_free": info.get("ram", {}).get("free", 0),
            "embedded_python": False,
            "comfyui_version": "atelier",
            "required_frontend_version": _frontend_version(),
            "argv": ["main.py", *(argv or [])],
        },
        "devices": [device],
    }


def _frontend_version() -> str:
    """The installed comfyui-frontend-package's version (the one Atelier serves), else 0.0.0."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("comfyui-frontend-package")
    except PackageNotFoundError:
        return "0.0.0"
