"""Executor overhead benchmark: ``python bench/executor.py``.

Builds workflows of cheap nodes (a 1,000-node layered DAG and a 10-node chain) and times, each as the
median of several repetitions in this one process:
  * validate + plan,
  * a full run (every node executes),
  * a fully cached rerun,
and the same node functions called directly in a loop (the floor no executor can beat), so the per-node
overhead is measured side by side. Targets (2-core CPU): fully cached rerun of 10 nodes < 2 ms; per-node
overhead < 50 us.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atelier.engine.cache import OutputCache  # noqa: E402
from atelier.engine.executor import Executor  # noqa: E402
from atelier.engine.node import Context, Float, Int, Node, Output, Socket  # noqa: E402
from atelier.engine.registry import Registry  # noqa: E402
from atelier.engine.validate import check  # noqa: E402


class Const(Node):
    inputs = (Float("value", 0.0), Int("salt", 0))
    outputs = (Output("NUM"),)

    def run(self, ctx: Context, value: float, salt: int) -> float:
        return value


class Sum(Node):
    inputs = (Socket("a", "NUM"), Socket("b", "NUM"), Float("k", 1.0))
    outputs = (Output("NUM"),)

    def run(self, ctx: Context, a: float, b: float, k: float) -> float:
        return (a + b) * k


class Out(Node):
    output_node = True
    inputs = (Socket("x", "NUM"),)

    def run(self, ctx: Context, x: float) -> None:
        return None


def layered(n: int, width: int = 10) -> dict:
    """n nodes: a layer of constants, layers of sums over the previous layer, a layer of outputs."""
    nodes: dict[str, dict] = {}
    prev = []
    for i in range(width):
        nid = f"c{i}"
        nodes[nid] = {"type": "Const", "inputs": {"value": float(i), "salt": i}}
        prev.append(nid)
    count = width
    layer = 0
    while count < n - width:
        cur = []
        for j in range(min(width, n - width - count)):
            nid = f"s{layer}_{j}"
            a, b = prev[j % len(prev)], prev[(j + 1) % len(prev)]
            nodes[nid] = {
                "type": "Sum",
                "inputs": {"a": {"node": a, "output": 0}, "b": {"node": b, "output": 0}, "k": 0.5},
            }
            cur.append(nid)
            count += 1
        prev = cur
        layer += 1
    for j, src in enumerate(prev):  # every node is an ancestor of some output
        nodes[f"out{j}"] = {"type": "Out", "inputs": {"x": {"node": src, "output": 0}}}
    return {"format": "atelier/workflow", "version": 1, "nodes": nodes}


def chain(n: int) -> dict:
    nodes: dict[str, dict] = {"c": {"type": "Const", "inputs": {"value": 1.0, "salt": 0}}}
    prev = "c"
    for i in range(n - 2):
        nodes[f"s{i}"] = {
            "type": "Sum",
            "inputs": {"a": {"node": prev, "output": 0}, "b": {"node": "c", "output": 0}},
        }
        prev = f"s{i}"
    nodes["out"] = {"type": "Out", "inputs": {"x": {"node": prev, "output": 0}}}
    return {"format": "atelier/workflow", "version": 1, "nodes": nodes}


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def direct_calls(workflow: dict, reg: Registry) -> float:
    """Run the same node functions in topological order with plain Python, no engine."""
    graph = check(workflow, reg).graph
    order = Executor(reg).plan(graph).order
    inst = {name: reg.instance(name) for name in ("Const", "Sum", "Out")}
    ctx = Context("j", "n", "t")
    nodes = graph.nodes

    def go() -> None:
        vals: dict[str, tuple] = {}
        for nid in order:
            node = nodes[nid]
            kw = dict(node.literals)
            for name, (src, idx) in node.links.items():
                kw[name] = vals[src][idx]
            vals[nid] = (inst[node.type.spec.type].run(ctx, **kw),)

    return median_time(go, 20)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    reg = Registry([Const, Sum, Out])
    big = layered(args.nodes)
    small = chain(10)
    n = len(big["nodes"])

    t_validate = median_time(lambda: check(big, reg), args.repeat)
    graph = check(big, reg).graph
    t_plan = median_time(lambda: Executor(reg).plan(graph), args.repeat)

    def full_run(events: bool) -> float:
        def go() -> None:
            ex = Executor(reg, OutputCache())
            sink = [] if events else None
            res = ex.run(graph, on_event=sink.append if events else None)
            assert res.ok and len(res.executed) == n

        return median_time(go, args.repeat)

    t_full = full_run(False)
    t_full_events = full_run(True)
    warm = Executor(reg, OutputCache())
    warm.run(graph)
    t_cached_big = median_time(lambda: warm.run(graph), args.repeat)
    t_direct = direct_calls(big, reg)

    small_ex = Executor(reg, OutputCache())
    small_ex.run(small)
    t_cached_small = median_time(lambda: small_ex.run(small), 200)
    small_graph = check(small, reg).graph
    t_cached_small_graph = median_time(lambda: small_ex.run(small_graph), 200)
    events: list = []
    t_cached_small_events = median_time(lambda: small_ex.run(small, on_event=events.append), 200)

    per_node = (t_full - t_direct) / n * 1e6
    per_node_events = (t_full_events - t_direct) / n * 1e6
    print(f"workflow of {n} nodes (layered DAG), median of {args.repeat} runs; 10-node chain, median of 200")
    print(
        f"  validate                        {t_validate * 1e3:8.2f} ms  ({t_validate / n * 1e6:.1f} us/node)"
    )
    print(f"  plan (topo sort + signatures)   {t_plan * 1e3:8.2f} ms  ({t_plan / n * 1e6:.1f} us/node)")
    print(f"  full run, no listeners          {t_full * 1e3:8.2f} ms")
    print(f"  full run, collecting events     {t_full_events * 1e3:8.2f} ms")
    print(f"  node functions called directly  {t_direct * 1e3:8.2f} ms  (floor)")
    print(
        f"  fully cached rerun              {t_cached_big * 1e3:8.2f} ms  ({t_cached_big / n * 1e6:.1f} us/node)"
    )
    print(
        f"  per-node overhead               {per_node:8.1f} us   (target < 50 us: {50 / per_node:.1f}x under)"
    )
    print(
        f"  per-node overhead with events   {per_node_events:8.1f} us   ({50 / per_node_events:.1f}x under target)"
    )
    print(f"  executor / direct calls         {t_full / t_direct:8.1f}x")
    print("10-node chain, fully cached rerun:")
    print(
        f"  from JSON (validate+plan+run)   {t_cached_small * 1e3:8.3f} ms  (target < 2 ms: {2e-3 / t_cached_small:.1f}x under)"
    )
    print(f"  from a checked graph            {t_cached_small_graph * 1e3:8.3f} ms")
    print(f"  from JSON, collecting events    {t_cached_small_events * 1e3:8.3f} ms")
    ok = per_node < 50 and t_cached_small < 2e-3
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
