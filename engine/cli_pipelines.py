"""``atelier pipelines list|show|install|export`` and ``atelier check``: sharing pipelines from the command line.

``show`` prints a pipeline's interface (inputs and outputs with types, defaults and descriptions) as JSON, so
other programs can call it; ``atelier run NAME --set input=value`` runs one headless (see ``cli.py``).
``export`` writes the pipeline with its manifest (models by kind, name, sha256, size; node versions);
``check`` reads a shared workflow (JSON or the PNG it made) and says what is here, what is missing and what
is here under another name, and can write the workflow over to the local names.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .manifest import (
    HashIndex,
    Manifest,
    build_manifest,
    check_manifest,
    manifest_from_png_metadata,
    manifest_from_workflow,
    rewrite_names,
)
from .pipeline import interface
from .pipeline_library import PipelineError
from .pnginfo import read_metadata, workflow_from_metadata
from .runtime import Engine, add_engine_arguments
from .workflow import IMAGE_SUFFIXES, WorkflowFormatError, read_workflow_data


def add_pipeline_commands(sub: Any) -> None:
    p = sub.add_parser("pipelines", help="the pipeline library: list, show, install, export")
    verbs = p.add_subparsers(dest="verb", required=True)
    v = verbs.add_parser("list", help="installed pipelines and their versions")
    v.add_argument("--json", action="store_true")
    v = verbs.add_parser("show", help="a pipeline's interface as JSON")
    v.add_argument("name", help="NAME or NAME@VERSION")
    v = verbs.add_parser("install", help="copy a pipeline file into your library")
    v.add_argument("file", type=Path)
    v.add_argument("--name", help="install under this name (default: the file's name)")
    v = verbs.add_parser("export", help="write a pipeline to a file to share")
    v.add_argument("name", help="NAME or NAME@VERSION")
    v.add_argument("--out", type=Path, help="file to write (default NAME@VERSION.json here)")
    for parser in verbs.choices.values():
        add_engine_arguments(parser)
    p.set_defaults(func=cmd_pipelines)

    p = sub.add_parser("check", help="which models and node types a shared workflow needs are here")
    p.add_argument("workflow", help="a workflow JSON file (with its manifest) or a PNG Atelier made")
    p.add_argument("--rewrite", type=Path, metavar="OUT", help="write the workflow with local model names")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    add_engine_arguments(p)
    p.set_defaults(func=cmd_check)


def hash_index(engine: Engine) -> HashIndex:
    """The engine's persistent hash index (under the models root)."""
    store = engine.folders.hashes.store
    if isinstance(store, HashIndex):
        return store  # one object per file: two would each save their own view
    root = engine.config.models_dir
    return HashIndex(root / ".atelier" / "hashes.json" if root is not None else None)


def manifest_of(engine: Engine, data: Any) -> Manifest:
    """A workflow's manifest: the one it carries, else built from it (hashes where the models are here)."""
    if isinstance(data, dict) and isinstance(data.get("manifest"), dict):
        return Manifest.model_validate(data["manifest"])
    checked = engine.check(data)
    if checked.graph is not None:
        return build_manifest(checked.graph, engine.folders, hash_index(engine))
    return manifest_from_workflow(data, engine.registry)


def cmd_check(args: argparse.Namespace) -> int:
    from .cli import engine_for

    engine = engine_for(args)
    if engine is None:
        return 2
    path = Path(args.workflow)
    try:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            meta = read_metadata(path)
            if "comfyui_prompt" in meta:
                data: Any = meta["comfyui_prompt"]
                manifest = manifest_from_workflow(data, engine.registry)
            elif "comfyui_workflow" in meta:  # ComfyUI's UI format only: converted by the check
                data = meta["comfyui_workflow"]
                manifest = manifest_of(engine, data)
            else:
                data = workflow_from_metadata(meta, str(path))
                manifest = manifest_from_png_metadata(meta, engine.registry)
        else:
            data = read_workflow_data(path)
            manifest = manifest_of(engine, data)
    except (OSError, WorkflowFormatError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = check_manifest(manifest, engine.folders, engine.registry, hash_index(engine))
    if args.json:
        print(json.dumps(report.model_dump(mode="json"), indent=2))
    else:
        for m in report.models:
            print(f"{m.status:<10} {m.message}")
        for n in report.nodes:
            detail = f" (here: {n.local_version})" if n.local_version else ""
            print(f"{n.status:<10} node {n.type} {n.version}{detail}")
    if args.rewrite is not None:
        rewritten, overrides = rewrite_names(data, report)
        args.rewrite.write_text(json.dumps(rewritten, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {args.rewrite}", file=sys.stderr)
        for o in overrides:
            print(f"inside a pipeline, run with: --set {o}", file=sys.stderr)
    return 0 if report.ok else 1


def cmd_pipelines(args: argparse.Namespace) -> int:
    from .cli import engine_for

    engine = engine_for(args)
    if engine is None:
        return 2
    library = engine.pipelines
    try:
        if args.verb == "list":
            entries = library.entries()
            if args.json:
                rows = [{"name": e.name, "version": str(e.version), "path": str(e.path)} for e in entries]
                print(json.dumps(rows, indent=2))
            for e in [] if args.json else entries:
                print(f"{e.name:<24} {e.version!s:<10} {e.description}")
            return 0
        name, _, version = args.name.partition("@") if args.verb in ("show", "export") else ("", "", "")
        if args.verb == "show":
            entry = library.get(name, version or None)
            desc = interface(entry.workflow)
            desc.update(name=entry.name, version=str(entry.version), title=entry.workflow.metadata.name)
            print(json.dumps(desc, indent=2, ensure_ascii=False))
            return 0
        if args.verb == "install":
            entry = library.install(args.file, args.name)
            print(f"installed {entry.name} {entry.version} -> {entry.path}")
            return 0
        entry = library.get(name, version or None)
        out = args.out or Path(f"{entry.name}@{entry.version}.json")
        data = json.loads(entry.path.read_text(encoding="utf-8"))
        data["manifest"] = manifest_of(engine, data).model_dump(mode="json")
        out.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {out}")
        return 0
    except (LookupError, PipelineError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1
