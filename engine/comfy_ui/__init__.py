"""ComfyUI's UI format (the canvas's save files, and the ``workflow`` ComfyUI embeds in its images).

One converter, used by the CLI, the server and the canvas (through the server): :func:`from_comfy_ui`
turns a UI-format workflow into Atelier's workflow using only the node registry's input declarations.
"""

from .convert import UiFormatError, UiProblem, from_comfy_ui, is_ui_format

__all__ = ["UiFormatError", "UiProblem", "from_comfy_ui", "is_ui_format"]
