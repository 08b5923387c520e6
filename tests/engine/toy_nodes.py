"""Toy node types for engine tests: cheap, observable, and deliberately simple.

Every node records its executions in a shared ledger so tests can tell exactly what ran.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

from atelier.engine.node import Boolean, Choice, Context, Float, Int, Node, NodeResult, Output, Socket, String
from atelier.engine.registry import Registry
from atelier.engine.types import SocketType

RUNS: Counter[str] = Counter()

#: the toys' own socket type, tied to its carrier like any node library's
NUMBER = SocketType("NUMBER", "a number", "#ffcc00", (int, float))


class Number(Node):
    """A constant number."""

    category = "toy"
    inputs = (Float("value", 0.0, min=-1e9, max=1e9),)
    outputs = (Output(NUMBER),)

    def run(self, ctx: Context, value: float) -> float:
        RUNS[ctx.node_id] += 1
        return value


class Add(Node):
    category = "toy"
    inputs = (Socket("a", NUMBER), Socket("b", NUMBER))
    outputs = (Output(NUMBER, "sum"),)

    def run(self, ctx: Context, a: float, b: float) -> float:
        RUNS[ctx.node_id] += 1
        return a + b


class Scale(Node):
    category = "toy"
    version = "1.2.0"
    inputs = (
        Socket("x", NUMBER),
        Float("factor", 1.0, min=-100, max=100),
        Choice("mode", ["multiply", "divide"]),
        Boolean("negate", False, optional=True),
    )
    outputs = (Output(NUMBER),)

    def run(self, ctx: Context, x: float, factor: float, mode: str, negate: bool = False) -> float:
        RUNS[ctx.node_id] += 1
        y = x * factor if mode == "multiply" else x / factor
        return -y if negate else y


class Split(Node):
    category = "toy"
    inputs = (Socket("x", NUMBER),)
    outputs = (Output(NUMBER, "half"), Output(NUMBER, "double"))

    def run(self, ctx: Context, x: float) -> tuple[float, float]:
        RUNS[ctx.node_id] += 1
        return x / 2, x * 2


class Text(Node):
    category = "toy"
    inputs = (String("text", "", multiline=True), Int("repeat", 1, min=1, max=10))
    outputs = (Output("TEXT"),)

    def run(self, ctx: Context, text: str, repeat: int) -> str:
        RUNS[ctx.node_id] += 1
        return text * repeat


class Sink(Node):
    """An output node that records what it received."""

    category = "toy"
    output_node = True
    inputs = (Socket("value", "*"), String("label", "out"))
    outputs = ()
    received: list[Any] = []

    def run(self, ctx: Context, value: Any, label: str) -> NodeResult:
        RUNS[ctx.node_id] += 1
        Sink.received.append((label, value))
        return NodeResult(ui={"value": [value] if isinstance(value, (int, float, str)) else [repr(value)]})


class Fail(Node):
    category = "toy"
    inputs = (Socket("x", NUMBER), String("message", "boom"))
    outputs = (Output(NUMBER),)

    def run(self, ctx: Context, x: float, message: str) -> float:
        RUNS[ctx.node_id] += 1
        raise RuntimeError(message)


class Slow(Node):
    """Counts up in steps, reporting progress; stops when interrupted."""

    category = "toy"
    inputs = (Socket("x", NUMBER), Int("steps", 10, min=1, max=100000))
    outputs = (Output(NUMBER),)
    started = threading.Event()
    gate = threading.Event()

    def run(self, ctx: Context, x: float, steps: int) -> float:
        RUNS[ctx.node_id] += 1
        Slow.started.set()
        for i in range(steps):
            Slow.gate.wait(5)
            ctx.progress(i + 1, steps)
        return x + steps


class Blob(Node):
    """Produces a byte blob of a given size (for cache-budget tests)."""

    category = "toy"
    inputs = (Int("size", 1000, min=0, max=10**9), Int("fill", 0, min=0, max=255))
    outputs = (Output("BLOB"),)

    def run(self, ctx: Context, size: int, fill: int) -> bytes:
        RUNS[ctx.node_id] += 1
        return bytes([fill]) * size


class BlobLen(Node):
    category = "toy"
    inputs = (Socket("blob", "BLOB"),)
    outputs = (Output(NUMBER),)

    def run(self, ctx: Context, blob: bytes) -> float:
        RUNS[ctx.node_id] += 1
        return float(len(blob) + (blob[0] if blob else 0))


class ReadFile(Node):
    """Reads a text file; its signature includes the file's content."""

    category = "toy"
    inputs = (String("path", ""),)
    outputs = (Output("TEXT"),)

    @classmethod
    def fingerprint(cls, ctx: Context, path: str) -> Any:
        return Path(path).read_bytes().hex()

    def run(self, ctx: Context, path: str) -> str:
        RUNS[ctx.node_id] += 1
        return Path(path).read_text()


TOY_TYPES = [Number, Add, Scale, Split, Text, Sink, Fail, Slow, Blob, BlobLen, ReadFile]


def toy_registry() -> Registry:
    return Registry(TOY_TYPES)


def wf(nodes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"format": "atelier/workflow", "version": 1, "nodes": nodes, **extra}


def link(node: str, output: str | int = 0) -> dict[str, Any]:
    return {"node": node, "output": output}
