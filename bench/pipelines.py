"""Pipeline planning overhead: ``python bench/pipelines.py``.

A 3-level nested pipeline (an outer graph of pipeline nodes, each using pipelines that use pipelines) whose
expansion is 300 cheap nodes, against the same 300 nodes written flat, side by side in one process: validate
(+ expand) + plan, each the median CPU time of repetitions alternated between the two, and a fully cached rerun. Target: the nested
graph within 10% of the flat one's planning time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atelier.engine.executor import Executor  # noqa: E402
from atelier.engine.node import Context, Float, Int, Node, Output, Socket  # noqa: E402
from atelier.engine.registry import Registry  # noqa: E402
from atelier.engine.validate import check  # noqa: E402
from atelier.engine.workflow import parse_workflow  # noqa: E402

NUM = "NUM"


class Seed(Node):
    output_node = False
    inputs = (Float("value", 0.0, min=-1e9, max=1e9), Int("salt", 0))
    outputs = (Output(NUM),)

    def run(self, ctx: Context, value: float, salt: int) -> float:
        return value


class Step(Node):
    inputs = (Socket("x", NUM), Float("k", 1.0, min=-1e9, max=1e9))
    outputs = (Output(NUM),)

    def run(self, ctx: Context, x: float, k: float) -> float:
        return x * k + 1.0


class Keep(Node):
    output_node = True
    inputs = (Socket("x", NUM),)
    outputs = ()

    def run(self, ctx: Context, x: float) -> None:
        return None


REG = Registry([Seed, Step, Keep])
FANOUT = 5  # pipelines per level: 1 outer graph -> 5 -> 5 -> leaves of 12 steps = 300 nodes


def link(node: str, output: str | int = 0) -> dict[str, Any]:
    return {"node": node, "output": output}


def leaf() -> dict[str, Any]:
    nodes = {f"s{i}": {"type": "Step", "inputs": {"k": 1.0 + i / 100}} for i in range(12)}
    for i in range(1, 12):
        nodes[f"s{i}"]["inputs"]["x"] = link(f"s{i - 1}")
    return {
        "format": "atelier/workflow",
        "nodes": nodes,
        "parameters": {
            "x": {"type": NUM, "targets": ["s0.x"]},
            "k": {"type": "FLOAT", "targets": ["s0.k"], "default": 1.0},
        },
        "outputs": {"y": {"type": NUM, "node": "s11", "output": 0}},
    }


def middle(child: str) -> dict[str, Any]:
    nodes: dict[str, Any] = {}
    for i in range(FANOUT):
        x = link(f"p{i - 1}", "y") if i else None
        nodes[f"p{i}"] = {
            "type": f"pipeline:{child}",
            "inputs": {"k": 1.0 + i / 10, **({"x": x} if x else {})},
        }
    return {
        "format": "atelier/workflow",
        "nodes": nodes,
        "parameters": {
            "x": {"type": NUM, "targets": ["p0.x"]},
            "k": {"type": "FLOAT", "targets": [], "default": 1.0},
        },
        "outputs": {"y": {"type": NUM, "node": f"p{FANOUT - 1}", "output": "y"}},
    }


def nested() -> dict[str, Any]:
    top = middle("mid")
    top["nodes"]["seed"] = {"type": "Seed", "inputs": {"value": 1.0}}
    top["nodes"]["p0"]["inputs"]["x"] = link("seed")
    top["nodes"]["keep"] = {"type": "Keep", "inputs": {"x": link(f"p{FANOUT - 1}", "y")}}
    del top["parameters"], top["outputs"]
    top["definitions"] = {"mid": middle("leaf"), "leaf": leaf()}
    return top


def flat_of(data: dict[str, Any]) -> dict[str, Any]:
    """The same graph written flat: the expansion the engine makes, saved as a plain workflow."""
    checked = check(data, REG)
    assert checked.graph is not None, [str(e) for e in checked.errors]
    from atelier.engine.pipeline import expand

    wf = parse_workflow(data)
    return expand(wf).workflow.to_dict()


def paired_ms(fn_a: Any, fn_b: Any, reps: int) -> tuple[float, float]:
    """Median CPU milliseconds of each, measured alternately (a, b, a, b, ...) so that other work on the
    machine weighs on both alike; CPU time of this process, not wall time, for the same reason."""
    a, b = [], []
    for _ in range(reps):
        for fn, times in ((fn_a, a), (fn_b, b)):
            t0 = time.process_time()
            fn()
            times.append((time.process_time() - t0) * 1000)
    return statistics.median(a), statistics.median(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=31)
    args = ap.parse_args()
    deep = nested()
    flat = flat_of(deep)
    n_inner = len(flat["nodes"])
    ex_deep, ex_flat = Executor(REG), Executor(REG)

    def plan(ex: Executor, data: dict[str, Any]) -> None:
        graph = check(data, REG).graph
        assert graph is not None
        ex.plan(graph)

    rows = []
    for label, fn_deep, fn_flat in (
        ("validate + plan", lambda: plan(ex_deep, deep), lambda: plan(ex_flat, flat)),
        ("fully cached rerun", lambda: ex_deep.run(deep), lambda: ex_flat.run(flat)),
    ):
        fn_deep(), fn_flat()  # warm: the cache for the rerun row
        d, f = paired_ms(fn_deep, fn_flat, args.reps)
        rows.append((label, d, f))
    print(
        f"3-level nested pipeline, {n_inner} inner nodes, vs the same graph flat (median CPU ms of {args.reps}, alternated)"
    )
    print(f"{'':22}{'nested ms':>11}{'flat ms':>10}{'ratio':>8}")
    for label, d, f in rows:
        print(f"{label:22}{d:11.2f}{f:10.2f}{d / f:8.2f}")
    ratio = rows[0][1] / rows[0][2]
    print(f"planning overhead of nesting: {100 * (ratio - 1):+.1f}% (target: within +10%)")


if __name__ == "__main__":
    main()
