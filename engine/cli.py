"""``atelier run|validate|nodes`` and the subcommands plugins add (``serve``, ``demo``, ...).

Every command that needs an engine builds it through the composition root (``engine/runtime.py``) from
the shared engine options; plugins contribute subcommands as :class:`~atelier.engine.runtime.Command`s.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from . import events as E
from .cli_pipelines import add_pipeline_commands
from .executor import JobResult, JobSpec
from .folders import Folders
from .registry import Registry
from .runtime import Engine, EngineConfig, add_engine_arguments, build_engine, config_from_args, load_plugins
from .validate import CheckResult, NodeError
from .warmup import start_warmup
from .workflow import Workflow, WorkflowFormatError, parse_workflow, read_workflow_data


class UsageError(Exception):
    pass


# -- values from the command line ------------------------------------------------------------------


def parse_value(text: str, type_name: str | None) -> Any:
    """Turn a command-line string into a value of ``type_name`` (INT, FLOAT, BOOLEAN, STRING, COMBO)."""
    if type_name == "INT":
        try:
            return int(text, 0) if text.lower().startswith(("0x", "0b", "0o")) else int(text)
        except ValueError:
            try:
                f = float(text)
            except ValueError:
                raise UsageError(f"{text!r} is not an integer") from None
            if not f.is_integer():
                raise UsageError(f"{text!r} is not an integer") from None
            return int(f)
    if type_name == "FLOAT":
        try:
            return float(text)
        except ValueError:
            raise UsageError(f"{text!r} is not a number") from None
    if type_name == "BOOLEAN":
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"{text!r} is not true or false")
    if type_name in ("STRING", "COMBO"):
        return text
    try:  # unknown target: let validation name the problem, but keep numbers numbers
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def target_type(wf: Workflow, registry: Registry, name: str) -> str | None:
    if name in wf.parameters:
        return wf.parameters[name].type
    node_id, _, input_name = name.rpartition(".")
    node = wf.nodes.get(node_id)
    cls = registry.get(node.type) if node else None
    spec = cls.spec.input(input_name) if cls else None
    return spec.type if spec else None


def split_assignment(text: str, flag: str) -> tuple[str, str]:
    name, eq, value = text.partition("=")
    if not eq or not name:
        raise UsageError(f"{flag} expects NAME=VALUE, got {text!r}")
    return name.strip(), value


def split_sweep(value: str) -> list[str]:
    """Split ``a,b,c`` on commas not escaped with a backslash."""
    parts, cur, esc = [], [], False
    for ch in value:
        if esc:
            cur.append(ch)
            esc = False
        elif ch == "\\":
            esc = True
        elif ch == ",":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def job_points(
    wf: Workflow, registry: Registry, sets: Sequence[str], sweeps: Sequence[str]
) -> list[dict[str, Any]]:
    """The overrides of every job: ``--set`` values, times the cartesian product of ``--sweep`` lists."""
    base: dict[str, Any] = {}
    for s in sets:
        name, value = split_assignment(s, "--set")
        base[name] = parse_value(value, target_type(wf, registry, name))
    axes: list[tuple[str, list[Any]]] = []
    for s in sweeps:
        name, value = split_assignment(s, "--sweep")
        t = target_type(wf, registry, name)
        axes.append((name, [parse_value(v, t) for v in split_sweep(value)]))
    if not axes:
        return [base]
    points = []
    for combo in itertools.product(*(values for _, values in axes)):
        point = dict(base)
        point.update({name: v for (name, _), v in zip(axes, combo, strict=True)})
        points.append(point)
    return points


# -- human output ----------------------------------------------------------------------------------


class HumanReporter:
    """Progress bars and one line per node, for people at a terminal."""

    def __init__(self, stream: IO[str], folders: Folders) -> None:
        self.stream = stream
        self.folders = folders
        self.bar: Any = None
        self.tty = stream.isatty()

    def __call__(self, ev: E.Event) -> None:
        w = self.stream.write
        if isinstance(ev, E.JobStarted):
            w(f"job {ev.job[:8]}: {ev.to_run} of {ev.nodes} nodes to run\n")
        elif isinstance(ev, E.Progress):
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(
                    total=ev.max or None,
                    desc=f"  node {ev.node}",
                    file=self.stream,
                    leave=False,
                    disable=not self.tty,
                )
            self.bar.n = ev.value
            self.bar.refresh()
        elif isinstance(ev, E.NodeFinished):
            self._close_bar()
            w(f"  ran    {ev.node} ({ev.node_type}) in {_ms(ev.elapsed_ms)}\n")
            for ref in (ev.ui or {}).get("images", []):
                w(f"         wrote {_ref_path(self.folders, ref)}\n")
            for line in (ev.ui or {}).get("text", []):  # what a node has to say ("no face found", ...)
                w(f"         {line}\n")
        elif isinstance(ev, E.NodeFailed):
            self._close_bar()
            w(f"  FAILED {ev.node} ({ev.node_type}): {ev.exception_type}: {ev.message}\n")
        elif isinstance(ev, E.JobFinished):
            w(f"done in {_ms(ev.elapsed_ms)}: {ev.executed} ran, {ev.cached} cached\n")
        elif isinstance(ev, E.JobInterrupted):
            self._close_bar()
            w(f"interrupted at node {ev.node}\n")
        elif isinstance(ev, E.JobFailed) and ev.errors:
            w(f"{ev.message}:\n")
            for e in ev.errors:
                from .validate import NodeError

                w(f"  {NodeError.model_validate(e)}\n")
        self.stream.flush()

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _ms(ms: float) -> str:
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.1f} ms"


def _ref_path(folders: Folders, ref: dict[str, str]) -> str:
    root = folders.output if ref.get("type") == "output" else folders.temp
    return str(root / ref.get("subfolder", "") / ref["filename"])


class JsonLines:
    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def __call__(self, ev: E.Event) -> None:
        self.stream.write(ev.to_json() + "\n")
        self.stream.flush()


# -- commands --------------------------------------------------------------------------------------


def engine_for(args: argparse.Namespace, config: EngineConfig | None = None) -> Engine | None:
    """Build the engine the shared options describe, reporting problems on stderr (None: a bad option)."""
    try:
        engine = build_engine(config or config_from_args(args))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    for source, message in engine.load_errors:
        print(f"warning: {source}: {message}", file=sys.stderr)
    return engine


def workflow_or_pipeline(engine: Engine, path: str) -> Any:
    """The workflow data of a file, or of the library pipeline ``NAME`` or ``NAME@VERSION`` when no such file
    exists (a pipeline runs headless like a function: its inputs are its parameters)."""
    if not Path(path).exists() and "/" not in path and not path.lower().endswith((".json", ".png")):
        name, _, version = path.partition("@")
        try:
            return engine.pipelines.get(name, version or None).workflow
        except LookupError as exc:
            raise WorkflowFormatError(f"{path}: no such file, and {exc.args[0]}") from exc
    return read_workflow_data(path)


def admission_warnings(engine: Engine, result: CheckResult) -> list[NodeError]:
    """What the server would refuse the checked job for (its limits, the machine's memory), as warnings:
    the command line runs it anyway."""
    if result.graph is None:
        return []
    return [p.model_copy(update={"severity": "warning"}) for p in engine.admit(result.graph).problems]


def cmd_run(args: argparse.Namespace, engine: Engine | None = None) -> int:
    engine = engine or engine_for(args)
    if engine is None:
        return 2
    registry = engine.registry
    engine.folders.ensure()
    workflows: list[tuple[str, Workflow]] = []
    for path in args.workflows:
        try:
            data = workflow_or_pipeline(engine, path)
        except (OSError, WorkflowFormatError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        try:
            workflows.append((path, parse_workflow(data, registry)))
        except Exception:
            for e in engine.check(data).errors:  # the same messages validation gives
                print(f"{path}: {e}", file=sys.stderr)
            return 2
    jobs: list[tuple[str, Workflow, dict[str, Any]]] = []
    try:
        for path, wf in workflows:
            for point in job_points(wf, registry, args.set, args.sweep):
                jobs.append((path, wf, point))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    event_file: IO[str] | None = None
    sinks: list[E.EventSink] = []
    human_stream = sys.stderr if args.events == "-" else sys.stdout
    if args.events == "-":
        sinks.append(JsonLines(sys.stdout))
    elif args.events:
        event_file = open(args.events, "w", encoding="utf-8")  # noqa: SIM115 - closed below
        sinks.append(JsonLines(event_file))
    if not args.quiet and args.events != "-":
        sinks.append(HumanReporter(human_stream, engine.folders))

    executor = engine.executor

    def on_event(ev: E.Event) -> None:
        for s in sinks:
            s(ev)

    def on_sigint(signum: int, frame: Any) -> None:
        if not executor.interrupt():
            raise KeyboardInterrupt
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl+C kills

    previous = signal.signal(signal.SIGINT, on_sigint)
    results: list[JobResult] = []
    # the model libraries import beside checking, planning and the first nodes (engine/warmup.py); started
    # once the jobs are known to run, and waited for when they are done, so no import outlives the command
    warming = start_warmup(engine.warmup_steps(long_lived=False))
    try:
        # the points of a sweep run in rounds of up to --batch-jobs jobs: their samplers run as one batch
        # when model, size, sampler and steps agree (each job keeps its seed, prompts and cfg)
        for batch in _rounds(jobs, max(1, args.batch_jobs)):
            specs = []
            for path, wf, point in batch:
                if point and not args.quiet and args.events != "-":
                    shown = ", ".join(f"{k}={v!r}" for k, v in point.items())
                    human_stream.write(f"{path} [{shown}]\n")
                for w in admission_warnings(engine, engine.check(wf, point)):
                    print(f"{path}: {w}", file=sys.stderr)
                specs.append(JobSpec(wf, overrides=point, on_event=on_event, source=path))
            done = executor.run_many(specs)
            results.extend(done)
            if any(res.status == "interrupted" for res in done):
                break
    finally:
        signal.signal(signal.SIGINT, previous)
        if event_file is not None:
            event_file.close()
        warming.join()
    if any(r.status == "interrupted" for r in results):
        return 130
    failed = [r for r in results if not r.ok]
    if failed and args.events == "-":
        for r in failed:
            msg = (
                r.failure.message
                if r.failure
                else "; ".join(str(e) for e in r.errors if e.severity == "error")
            )
            print(f"job {r.job[:8]} {r.status}: {msg}", file=sys.stderr)
    return 1 if failed else 0


def _rounds(jobs: list[Any], size: int) -> list[list[Any]]:
    """Consecutive jobs of the same workflow file, ``size`` at most per round."""
    rounds: list[list[Any]] = []
    for job in jobs:
        if rounds and len(rounds[-1]) < size and rounds[-1][0][0] == job[0]:
            rounds[-1].append(job)
        else:
            rounds.append([job])
    return rounds


def cmd_validate(args: argparse.Namespace) -> int:
    engine = engine_for(args)
    if engine is None:
        return 2
    registry = engine.registry
    status = 0
    report: list[dict[str, Any]] = []
    for path in args.workflows:
        try:
            data = workflow_or_pipeline(engine, path)
        except (OSError, WorkflowFormatError) as exc:
            report.append(
                {"workflow": path, "ok": False, "errors": [{"code": "malformed", "message": str(exc)}]}
            )
            if not args.json:
                print(f"{path}: error [malformed] {exc}")
            status = 1
            continue
        overrides: dict[str, Any] = {}
        try:
            overrides = job_points(parse_workflow(data, registry), registry, args.set, [])[0]
        except UsageError as exc:
            report.append(
                {"workflow": path, "ok": False, "errors": [{"code": "invalid_override", "message": str(exc)}]}
            )
            if not args.json:
                print(f"{path}: error [invalid_override] {exc}")
            status = 1
            continue
        except Exception:
            pass  # check() below reports what is wrong with the data
        result = engine.check(data, overrides)
        result.errors.extend(admission_warnings(engine, result))
        ok = result.ok
        report.append({"workflow": path, "ok": ok, "errors": [e.model_dump() for e in result.errors]})
        if not ok:
            status = 1
        if not args.json:
            for e in result.errors:
                print(f"{path}: {e}")
            if ok:
                print(f"{path}: ok" + (f" ({len(result.warnings)} warnings)" if result.warnings else ""))
    if args.json:
        print(json.dumps(report if len(report) != 1 else report[0], indent=2))
    return status


def cmd_nodes(args: argparse.Namespace) -> int:
    engine = engine_for(args)
    if engine is None:
        return 2
    registry = engine.registry
    if args.type:
        if args.type not in registry:
            print(f"error: unknown node type {args.type!r}", file=sys.stderr)
            return 1
        desc = engine.describe(args.type)
        if args.json:
            print(json.dumps(desc, indent=2))
            return 0
        print(
            f"{desc['type']} {desc['version']}  [{desc['category']}]"
            + ("  (output)" if desc["output_node"] else "")
        )
        if desc["description"]:
            print(f"  {desc['description']}")
        print("  inputs:")
        for i in desc["inputs"]:
            extra = []
            for k in ("default", "min", "max", "step"):
                if k in i:
                    extra.append(f"{k}={i[k]!r}")
            if "choices" in i:
                shown = ", ".join(map(str, i["choices"][:8])) + (", ..." if len(i["choices"]) > 8 else "")
                extra.append(f"choices: {shown}")
            opt = " (optional)" if i["optional"] else ""
            print(f"    {i['name']}: {i['type']}{opt} {' '.join(extra)}".rstrip())
        print("  outputs:")
        for o in desc["outputs"]:
            print(f"    {o['name']}: {o['type']}")
        return 0
    if args.json:
        print(json.dumps(engine.describe(), indent=2))
        return 0
    by_cat: dict[str, list[str]] = {}
    for name in registry:
        by_cat.setdefault(registry.get(name).spec.category, []).append(name)  # type: ignore[union-attr]
    for cat in sorted(by_cat):
        print(f"{cat}:")
        for name in by_cat[cat]:
            print(f"  {name}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atelier", description="Atelier: node-graph workflows for Stable Diffusion"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run workflows headless")
    p.add_argument(
        "workflows",
        nargs="+",
        help="workflow JSON files (Atelier, ComfyUI API or UI format), PNG/WEBP images, or library pipelines "
        "(NAME[@VERSION])",
    )
    add_run_arguments(p)
    add_engine_arguments(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check workflows without running them")
    p.add_argument("workflows", nargs="+")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    add_engine_arguments(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("nodes", help="list node types, or describe one")
    p.add_argument("type", nargs="?")
    p.add_argument("--json", action="store_true")
    add_engine_arguments(p)
    p.set_defaults(func=cmd_nodes)

    add_pipeline_commands(sub)

    errors: list[tuple[str, str]] = []
    for plugin in load_plugins(errors):
        for command in plugin.commands():
            p = sub.add_parser(command.name, help=command.help)
            command.add_arguments(p)
            if command.engine_options:
                add_engine_arguments(p)
            p.set_defaults(func=command.run)
    for source, message in errors:
        print(f"warning: {source}: {message}", file=sys.stderr)
    return parser


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """What ``run`` (and ``demo``, which runs a shipped workflow) take besides the engine options."""
    p.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="parameter or NODE_ID.INPUT"
    )
    p.add_argument("--sweep", action="append", default=[], metavar="NAME=V1,V2", help="run once per value")
    p.add_argument(
        "--batch-jobs",
        type=int,
        default=8,
        metavar="N",
        help="run up to N sweep points together, their samplers as one batch (1: one at a time)",
    )
    p.add_argument("--events", metavar="FILE|-", help="write events as JSON lines to FILE, or stdout with -")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # Atelier never downloads models
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
