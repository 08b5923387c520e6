"""``atelier pipelines list|show|install|export``: the pipeline library from the command line.

``show`` prints a pipeline's interface (inputs and outputs with types, defaults and descriptions) as JSON, so
other programs can call it; ``atelier run NAME --set input=value`` runs one headless (see ``cli.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .pipeline import interface
from .pipeline_library import PipelineError
from .runtime import add_engine_arguments


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
        out.write_text(entry.path.read_text(encoding="utf-8"), encoding="utf-8")
        print(f"wrote {out}")
        return 0
    except (LookupError, PipelineError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1
