"""The workflow library service: workflows saved by name in the store, and those shipped with Atelier.

Everything here reads files or SQLite, or parses a workflow: call from a worker thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .store import Store

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "workflows"
DEFAULT_WORKFLOW = "portrait"  # the graph a first visit starts from


@dataclass(frozen=True)
class Saved:
    name: str


@dataclass(frozen=True)
class NotSaved:
    """The name or the workflow was refused (``message`` says which and why)."""

    message: str


SaveOutcome = Saved | NotSaved


def valid_name(name: str) -> bool:
    """1-200 characters, no path separators or NUL, no surrounding blanks (names show up in file menus)."""
    return 0 < len(name) <= 200 and not any(c in name for c in "/\\\x00") and name.strip() == name


class LibraryService:
    def __init__(self, store: Store, shipped_dir: Path = SHIPPED_DIR) -> None:
        self.store = store
        self.shipped_dir = shipped_dir

    def list(self) -> list[dict[str, Any]]:
        """``{"name", "updated", "description"}`` per saved workflow, by name."""
        return self.store.list_workflows()

    def get(self, name: str) -> Any | None:
        return self.store.get_workflow(name)

    def save(self, name: str, workflow: dict[str, Any]) -> SaveOutcome:
        """Save under ``name`` (it must parse as a workflow; unknown node types are kept, so a library may
        hold workflows for plugins not installed here)."""
        from atelier.engine.workflow import WorkflowFormatError, parse_workflow

        if not valid_name(name):
            return NotSaved("workflow names are 1-200 characters without / or \\")
        try:
            parse_workflow(workflow)
        except (WorkflowFormatError, ValueError) as exc:
            return NotSaved(f"not a workflow: {exc}")
        self.store.save_workflow(name, workflow)
        return Saved(name)

    def delete(self, name: str) -> bool:
        return self.store.delete_workflow(name)

    def default(self) -> Any:
        return json.loads((self.shipped_dir / f"{DEFAULT_WORKFLOW}.json").read_text(encoding="utf-8"))

    def shipped(self) -> dict[str, Any]:
        """The ready workflows that ship with Atelier, by file name (unreadable files are skipped)."""
        out = {}
        for p in sorted(self.shipped_dir.glob("*.json")):
            try:
                out[p.stem] = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
        return out
