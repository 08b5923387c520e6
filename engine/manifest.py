"""Manifests: what a shared workflow needs (model files by kind, name, sha256 and size; node types and
versions), and the check of a manifest against this machine.

A manifest is built from a validated graph (every input that chooses a model file, declared with
``model_files(kind)``, names one) and travels in the workflow as ``"manifest"``; a PNG's Atelier metadata
holds the same facts (each loader's inputs and sha256, the node versions) and is read as one. Checking
tells, per model, whether it is here under its name with the same content, here under another name (found
by hash), here with other content, or missing; per node type, whether it is installed and at which version.
Hashing every model file on each check would take minutes, so a :class:`HashIndex` remembers each file
version's sha256 on disk (``<models root>/.atelier/hashes.json``) and reads only new or changed files.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from .folders import Folders
from .hashing import FileVersion, file_version, sha256_of_file
from .pipeline import SEP
from .registry import Registry
from .validate import Graph

log = logging.getLogger(__name__)


class ModelRef(BaseModel):
    kind: str
    name: str
    sha256: str | None = None
    size: int | None = None
    #: where the workflow names it: ``node_id.input`` (ids inside pipelines are paths)
    used_by: list[str] = Field(default_factory=list)


class Manifest(BaseModel):
    models: list[ModelRef] = Field(default_factory=list)
    #: node type -> version
    nodes: dict[str, str] = Field(default_factory=dict)


class ModelStatus(BaseModel):
    ref: ModelRef
    status: Literal["present", "renamed", "changed", "missing", "unverified"]
    #: the local name holding the same content (``renamed``), else None
    local_name: str | None = None
    message: str


class NodeStatus(BaseModel):
    type: str
    version: str
    status: Literal["present", "other_version", "missing"]
    local_version: str | None = None


class CheckReport(BaseModel):
    models: list[ModelStatus] = Field(default_factory=list)
    nodes: list[NodeStatus] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(m.status in ("present", "unverified") for m in self.models) and all(
            n.status != "missing" for n in self.nodes
        )


class HashIndex:
    """sha256 per file version, kept in a JSON file so a later check reads only new or changed files."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._known: dict[str, tuple[int, int, str]] = {}
        self._dirty = False
        if path is not None and path.is_file():
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
                self._known = {k: (int(v[0]), int(v[1]), str(v[2])) for k, v in raw.get("files", {}).items()}
            except (OSError, ValueError, TypeError, IndexError, AttributeError):
                self._known = {}  # a damaged index is rebuilt, not trusted

    def sha256(self, path: Path) -> str:
        version = file_version(path)
        hit = self.known(version)
        if hit is not None:
            return hit
        digest = sha256_of_file(Path(version[0]))
        with self._lock:
            self._known[version[0]] = (version[1], version[2], digest)
            self._dirty = True
        return digest

    def known(self, version: FileVersion) -> str | None:
        """The sha256 recorded for this file version, else None (nothing read)."""
        name, size, mtime = version
        with self._lock:
            hit = self._known.get(name)
        if hit is not None and hit[0] == size and hit[1] == mtime:
            return hit[2]
        return None

    def record(self, version: FileVersion, sha256: str) -> None:
        """Remember a hash computed elsewhere (``FileHashes``) and save the index, unless the folder above
        the index's own (the models root) does not exist: then it is kept for this process only."""
        name, size, mtime = version
        with self._lock:
            if self._known.get(name) == (size, mtime, sha256):
                return
            self._known[name] = (size, mtime, sha256)
            self._dirty = True
        if self.path is None or not self.path.parent.parent.is_dir():
            return
        try:
            self.save()
        except OSError as exc:  # a read-only models folder: the hash is still used in this process
            log.warning("could not save the hash index %s: %s", self.path, exc)

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        with self._lock:
            data = {"files": {k: list(v) for k, v in sorted(self._known.items())}}
            self._dirty = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, self.path)


def build_manifest(graph: Graph, folders: Folders, hashes: HashIndex | None = None) -> Manifest:
    """The models and node types a checked graph uses (hashes of the files present here)."""
    refs: dict[tuple[str, str], ModelRef] = {}
    versions: dict[str, str] = {}
    for nid, node in graph.nodes.items():
        spec = node.type.spec
        versions[spec.type] = spec.version
        for ispec in spec.inputs:
            kind = ispec.model_kind
            name = node.literals.get(ispec.name)
            if kind is None or not isinstance(name, str):
                continue
            ref = refs.get((kind, name))
            if ref is None:
                ref = refs[(kind, name)] = ModelRef(kind=kind, name=name)
                try:
                    path = folders.find_model(kind, name)
                    if path.is_file():
                        ref.size = path.stat().st_size
                        # the persistent index when given, else the engine's own per-version hash cache
                        ref.sha256 = hashes.sha256(path) if hashes is not None else folders.sha256(path)
                except (OSError, ValueError):
                    pass  # recorded by name only: the author does not have it either
            ref.used_by.append(f"{nid}.{ispec.name}")
    if hashes is not None:
        hashes.save()
    return Manifest(
        models=sorted(refs.values(), key=lambda r: (r.kind, r.name)), nodes=dict(sorted(versions.items()))
    )


def manifest_from_workflow(workflow: Any, registry: Registry) -> Manifest:
    """Names only, for a workflow that carries no manifest and does not validate here (its models are
    missing, say): each model-file input of its top-level nodes, after its parameters' defaults."""
    from .workflow import parse_workflow

    wf = parse_workflow(workflow)
    values = {nid: dict(n.inputs) for nid, n in wf.nodes.items()}
    for param in wf.parameters.values():
        if param.default is not None:
            for nid, input_name in param.target_pairs():
                if nid in values:
                    values[nid][input_name] = param.default
    refs: dict[tuple[str, str], ModelRef] = {}
    nodes: dict[str, str] = {}
    for nid, node in wf.nodes.items():
        cls = registry.get(node.type)
        if cls is None:
            nodes[node.type] = node.version or ""
            continue
        nodes[node.type] = cls.spec.version
        for ispec in cls.spec.inputs:
            kind, name = ispec.model_kind, values[nid].get(ispec.name)
            if kind is not None and isinstance(name, str):
                refs.setdefault((kind, name), ModelRef(kind=kind, name=name)).used_by.append(
                    f"{nid}.{ispec.name}"
                )
    return Manifest(
        models=sorted(refs.values(), key=lambda r: (r.kind, r.name)), nodes=dict(sorted(nodes.items()))
    )


def manifest_from_png_metadata(meta: dict[str, Any], registry: Registry) -> Manifest:
    """The manifest a PNG's Atelier metadata holds: each model-file input of the nodes it records (with the
    file's sha256), and the node versions."""
    refs: dict[tuple[str, str], ModelRef] = {}
    for nid, entry in (meta.get("files") or {}).items():
        if not isinstance(entry, dict):
            continue
        cls = registry.get(str(entry.get("type")))
        inputs = entry.get("inputs") or {}
        if cls is None or not isinstance(inputs, dict):
            continue
        for ispec in cls.spec.inputs:
            kind, name = ispec.model_kind, inputs.get(ispec.name)
            if kind is None or not isinstance(name, str):
                continue
            ref = refs.setdefault((kind, name), ModelRef(kind=kind, name=name, sha256=entry.get("sha256")))
            ref.used_by.append(f"{nid}.{ispec.name}")
    nodes = {str(k): str(v) for k, v in (meta.get("node_versions") or {}).items()}
    return Manifest(models=sorted(refs.values(), key=lambda r: (r.kind, r.name)), nodes=nodes)


def check_manifest(
    manifest: Manifest, folders: Folders, registry: Registry, hashes: HashIndex
) -> CheckReport:
    """How this machine meets a manifest (see the module's description)."""
    report = CheckReport()
    by_hash: dict[str, dict[str, str]] = {}  # kind -> sha256 -> local name, built when first needed

    def local_hashes(kind: str) -> dict[str, str]:
        if kind not in by_hash:
            table: dict[str, str] = {}
            for name in folders.list_models(kind):
                try:
                    path = folders.find_model(kind, name)
                    if path.is_file():
                        table.setdefault(hashes.sha256(path), name)
                except (OSError, ValueError):
                    continue
            by_hash[kind] = table
        return by_hash[kind]

    for ref in manifest.models:
        try:
            path: Path | None = folders.find_model(ref.kind, ref.name)
        except (OSError, ValueError):
            path = None
        if ref.sha256 is None:
            status = "present" if path is not None else "missing"
            report.models.append(
                ModelStatus(
                    ref=ref,
                    status="unverified" if path is not None else "missing",
                    message=f"{ref.kind}/{ref.name}: "
                    + ("here (the manifest has no hash to compare)" if status == "present" else "not found"),
                )
            )
            continue
        if path is not None and path.is_file() and hashes.sha256(path) == ref.sha256:
            report.models.append(
                ModelStatus(ref=ref, status="present", message=f"{ref.kind}/{ref.name}: here")
            )
            continue
        other = local_hashes(ref.kind).get(ref.sha256)
        if other is not None:
            report.models.append(
                ModelStatus(
                    ref=ref,
                    status="renamed",
                    local_name=other,
                    message=f"{ref.kind}/{ref.name}: here as {other!r} (same sha256)",
                )
            )
        elif path is not None:
            report.models.append(
                ModelStatus(
                    ref=ref,
                    status="changed",
                    message=f"{ref.kind}/{ref.name}: here, but with other content (sha256 differs)",
                )
            )
        else:
            report.models.append(
                ModelStatus(
                    ref=ref,
                    status="missing",
                    message=f"{ref.kind}/{ref.name}: missing (sha256 {ref.sha256[:10]})",
                )
            )
    hashes.save()
    for type_name, version in sorted(manifest.nodes.items()):
        cls = registry.get(type_name)
        if cls is None:
            report.nodes.append(NodeStatus(type=type_name, version=version, status="missing"))
        elif cls.spec.version != version:
            report.nodes.append(
                NodeStatus(
                    type=type_name, version=version, status="other_version", local_version=cls.spec.version
                )
            )
        else:
            report.nodes.append(NodeStatus(type=type_name, version=version, status="present"))
    return report


def rewrite_names(workflow: dict[str, Any], report: CheckReport) -> tuple[dict[str, Any], list[str]]:
    """The workflow with each renamed model's local name put where it is used. Inputs of nodes inside
    pipelines cannot be edited in place: they come back as ``--set PATH.INPUT=NAME`` overrides to use."""
    out = json.loads(json.dumps(workflow))
    overrides: list[str] = []
    nodes = out.get("nodes") if isinstance(out.get("nodes"), dict) else None
    for status in report.models:
        if status.status != "renamed" or status.local_name is None:
            continue
        for where in status.ref.used_by:
            nid, _, input_name = where.rpartition(".")
            if SEP in nid or nodes is None or nid not in nodes:
                overrides.append(f"{where}={status.local_name}")
                continue
            nodes[nid].setdefault("inputs", {})[input_name] = status.local_name
            for param in (out.get("parameters") or {}).values():
                if isinstance(param, dict) and where in (param.get("targets") or []):
                    param["default"] = status.local_name
    return out, overrides
