"""The catalogue service: node types, socket types and model files, as the engine describes them.

Describing nodes lists model files and input images for their choice inputs (folder walks): call from a
worker thread, never on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from atelier.engine.pipeline_library import describe_as_node
from atelier.engine.runtime import Engine


@dataclass(frozen=True)
class ModelFiles:
    kind: str
    files: list[str]


@dataclass(frozen=True)
class UnknownModelKind:
    kind: str
    kinds: list[str]


class CatalogService:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def nodes(self, pipelines: bool = False) -> dict[str, Any]:
        """Every node type with its inputs, outputs and current choices; with ``pipelines``, the library's
        pipelines too, as ``pipeline:NAME`` node types (Atelier's canvas offers them like any node)."""
        described = self.engine.describe()
        if pipelines:
            newest = {e.name: e for e in self.engine.pipelines.entries()}  # entries come oldest first
            for entry in newest.values():
                d = describe_as_node(entry, self.engine.registry, self.engine.folders)
                described[d["type"]] = d
        return described

    def node(self, type_name: str) -> dict[str, Any] | None:
        """One node type, or None when there is no such type."""
        if type_name not in self.engine.registry:
            return None
        return self.engine.describe(type_name)

    def socket_types(self) -> dict[str, dict[str, str]]:
        return self.engine.registry.describe_types()

    def model_kinds(self) -> dict[str, list[str]]:
        """Every model kind with its files."""
        files = self.engine.folders
        return {kind: files.list_models(kind) for kind in files.models}

    def files_of(self, kind: str) -> list[str]:
        """The files of a model kind; none for a kind no folder is configured for."""
        return self.engine.folders.list_models(kind)

    def models(self, kind: str) -> ModelFiles | UnknownModelKind:
        files = self.engine.folders
        if kind not in files.models:
            return UnknownModelKind(kind, list(files.models))
        return ModelFiles(kind, files.list_models(kind))
