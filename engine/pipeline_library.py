"""The pipeline library: versioned workflows on disk that other workflows use as nodes (``pipeline:NAME``).

A library is a list of folders (``Folders.pipelines``): the user's own first (where ``install`` writes), then
those plugins ship (Atelier's portrait workflows). A pipeline file is ``NAME.json`` or ``NAME@VERSION.json``
holding a workflow whose ``metadata.version`` is its semantic version; the same name may be present in several
versions. Nothing here knows Stable Diffusion.

Versions: a node pins the version it was built with. The highest installed version with the same major
number, at least the pinned one, is used (a newer minor or patch is compatible by promise); when only another
major is installed the reference is refused, naming how that version's interface differs from what the node
uses; a newer major next to the compatible one used is reported as a warning with its interface changes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from .folders import Folders
from .pipeline import PREFIX, Resolved, interface, is_socket, wired_inside
from .registry import Registry
from .workflow import Workflow, WorkflowFormatError, parse_workflow

NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


class PipelineError(ValueError):
    """A file or name that cannot be a library pipeline (the message says why)."""


class AlreadyInstalled(PipelineError):
    """``install`` of a name and version the library holds already (versions are never replaced)."""


@dataclass(frozen=True)
class Entry:
    name: str
    version: Version
    path: Path
    workflow: Workflow

    @property
    def description(self) -> str:
        return self.workflow.metadata.description


def valid_name(name: str) -> bool:
    return 0 < len(name) <= 100 and set(name) <= NAME_CHARS and not name.startswith(".")


def parse_version(text: str | None, what: str) -> Version:
    if not text:
        raise PipelineError(f'{what} has no version: set metadata.version (for example "1.0.0")')
    try:
        return Version(text)
    except InvalidVersion as exc:
        raise PipelineError(f"{what}: version {text!r} is not a semantic version like 1.2.0") from exc


def interface_changes(old: Workflow, new: Workflow) -> list[str]:
    """What a caller of ``old`` meets in ``new``: inputs and outputs added, removed or retyped."""
    before, after = interface(old), interface(new)
    changes: list[str] = []
    for side in ("inputs", "outputs"):
        a, b = before[side], after[side]
        for name in a.keys() - b.keys():
            changes.append(f"{side[:-1]} {name!r} removed")
        for name in b.keys() - a.keys():
            extra = " (required)" if side == "inputs" and b[name]["required"] else ""
            changes.append(f"{side[:-1]} {name!r} added{extra}")
        for name in a.keys() & b.keys():
            if a[name]["type"] != b[name]["type"]:
                changes.append(f"{side[:-1]} {name!r} retyped {a[name]['type']} → {b[name]['type']}")
    return sorted(changes)


class PipelineLibrary:
    """The pipelines in ``folders`` (the first is the user's, where installs go)."""

    def __init__(self, folders: list[Path]) -> None:
        self.folders = folders
        self._parsed: dict[Path, tuple[float, Workflow | None]] = {}

    # -- reading -----------------------------------------------------------------------------------

    def entries(self) -> list[Entry]:
        """Every readable pipeline, by name then version (files that are not pipelines are skipped; a name
        and version found in two folders is taken from the first)."""
        seen: dict[tuple[str, Version], Entry] = {}
        for folder in self.folders:
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob("*.json")):
                entry = self._entry(path)
                if entry is not None:
                    seen.setdefault((entry.name, entry.version), entry)
        return sorted(seen.values(), key=lambda e: (e.name, e.version))

    def _entry(self, path: Path) -> Entry | None:
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        cached = self._parsed.get(path)
        if cached is None or cached[0] != mtime:
            try:
                wf: Workflow | None = parse_workflow(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, WorkflowFormatError):
                wf = None
            self._parsed[path] = cached = (mtime, wf)
        wf = cached[1]
        if wf is None:
            return None
        name = path.stem.split("@", 1)[0]
        try:
            version = Version(wf.metadata.version or "0.0.0")
        except InvalidVersion:
            return None
        return Entry(name, version, path, wf)

    def versions(self, name: str) -> list[Entry]:
        return [e for e in self.entries() if e.name == name]

    def get(self, name: str, version: str | None = None) -> Entry:
        """The entry a reference to ``name`` pinned at ``version`` uses (see the module's description)."""
        return self._pick(name, version, {})[0]

    def _pick(self, name: str, version: str | None, node_inputs: dict[str, Any]) -> tuple[Entry, list[str]]:
        found = self.versions(name)
        if not found:
            known = ", ".join(sorted({e.name for e in self.entries()})) or "none"
            raise LookupError(f"no pipeline {name!r} in the library (installed: {known})")
        newest = found[-1]
        if version is None:
            return newest, []
        pinned = parse_version(version, f"the reference to pipeline {name!r}")
        compatible = [e for e in found if e.version.major == pinned.major and e.version >= pinned]
        if not compatible:
            have = ", ".join(str(e.version) for e in found)
            changes = self._changes_for(newest, node_inputs)
            detail = f": {'; '.join(changes)}" if changes else ""
            raise LookupError(
                f"pipeline {name!r} {pinned} is not installed and no compatible version is "
                f"(installed: {have}); {newest.version} is a major change{detail}"
            )
        chosen = compatible[-1]
        warnings = []
        if newest.version.major > chosen.version.major:
            changes = interface_changes(chosen.workflow, newest.workflow)
            warnings.append(
                f"pipeline {name!r} {newest.version} is installed, a major change from {chosen.version} "
                f"used here" + (f": {'; '.join(changes)}" if changes else "")
            )
        return chosen, warnings

    @staticmethod
    def _changes_for(entry: Entry, node_inputs: dict[str, Any]) -> list[str]:
        """How ``entry``'s interface fails a node that gives ``node_inputs``."""
        desc = interface(entry.workflow)
        problems = [f"it has no input {n!r}" for n in node_inputs if n not in desc["inputs"]]
        problems += [
            f"input {n!r} ({d['type']}) is new and required"
            for n, d in desc["inputs"].items()
            if n not in node_inputs and d["required"]
        ]
        return problems

    def resolve(self, name: str, version: str | None, node_inputs: dict[str, Any] | None = None) -> Resolved:
        """The resolver expansion uses (engine/pipeline.py): raises ``LookupError`` naming what is missing."""
        entry, warnings = self._pick(name, version, node_inputs or {})
        return Resolved(entry.workflow, str(entry.version), warnings)

    # -- writing -----------------------------------------------------------------------------------

    def install(self, source: Path | dict[str, Any], name: str | None = None) -> Entry:
        """Copy a pipeline (a file, or its data) into the user's folder as ``NAME@VERSION.json``. The name is
        ``name``, else the file's name (without ``@version``); an installed version is never replaced."""
        if not self.folders:
            raise PipelineError("no pipeline folder is configured")
        if isinstance(source, Path):
            try:
                data = json.loads(source.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise PipelineError(f"{source}: not a readable JSON file ({exc})") from exc
            name = name or source.stem.split("@", 1)[0]
        else:
            data = source
        if not name or not valid_name(name):
            raise PipelineError(
                f"pipeline name {name!r}: use letters, digits, '_', '-' and '.' (at most 100)"
            )
        try:
            wf = parse_workflow(data)
        except (WorkflowFormatError, ValueError) as exc:
            raise PipelineError(f"pipeline {name!r} is not a workflow: {exc}") from exc
        version = parse_version(wf.metadata.version, f"pipeline {name!r}")
        target = self.folders[0] / f"{name}@{version}.json"
        if any(e.version == version for e in self.versions(name)):
            raise AlreadyInstalled(f"pipeline {name!r} {version} is already installed; raise its version")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, target)
        entry = self._entry(target)
        assert entry is not None
        return entry


def describe_as_node(entry: Entry, registry: Registry, files: Folders | None = None) -> dict[str, Any]:
    """A pipeline described like a node type (``pipeline:NAME``), so node menus and canvases offer it as one:
    its parameters are inputs (a value parameter takes its widget details, choices included, from the first
    inner input it targets), its declared outputs are outputs."""
    wf = entry.workflow
    inputs: list[dict[str, Any]] = []
    for pname, param in wf.parameters.items():
        if is_socket(param):
            inputs.append(
                {
                    "name": pname,
                    "type": param.type,
                    "optional": wired_inside(wf, param),
                    "description": param.description,
                }
            )
            continue
        d: dict[str, Any] = {}
        for node_id, input_name in param.target_pairs()[:1]:
            node = wf.nodes.get(node_id)
            cls = registry.get(node.type) if node is not None else None
            spec = cls.spec.input(input_name) if cls is not None else None
            if spec is not None:
                d = spec.describe(files)
        d.update(name=pname, type=param.type, optional=False, widget=True)
        for key in ("default", "min", "max", "step", "choices", "multiline"):
            value = getattr(param, key)
            if value is not None:
                d[key] = value
        if param.description:
            d["description"] = param.description
        inputs.append(d)
    outputs = [
        {"name": name, "type": decl.type, "description": decl.description}
        for name, decl in wf.outputs.items()
    ]
    inner_outputs = any(
        (cls := registry.get(n.type)) is not None and cls.spec.output_node for n in wf.nodes.values()
    )
    return {
        "type": PREFIX + entry.name,
        "display_name": wf.metadata.name or entry.name,
        "version": str(entry.version),
        "category": "pipelines",
        "description": wf.metadata.description,
        "output_node": inner_outputs,
        "deprecated": False,
        "pipeline": True,
        "inputs": inputs,
        "outputs": outputs,
    }
