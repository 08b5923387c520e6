"""Traits flowing through a graph at validation (engine/traits.py), with toy node types: what a node
declares, the default pass-through by socket type, a need meeting another value refused once on the node
it came from, and a broken declaration ignored."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from atelier.engine.folders import Folders
from atelier.engine.node import Choice, Context, Node, Output, Socket
from atelier.engine.registry import Registry
from atelier.engine.traits import Declared, Trait, Traits, pass_through
from atelier.engine.types import SocketType
from atelier.engine.validate import check
from tests.engine.toy_nodes import link, wf

ENGINE = SocketType("ENGINE", "a toy engine", "#888888", (str,))
FUEL = SocketType("FUEL", "a toy fuel", "#444444", (str,))


class MakeEngine(Node):
    inputs = (Choice("kind", ["diesel", "petrol", "broken"]),)
    outputs = (Output(ENGINE),)

    @classmethod
    def traits(
        cls, files: Folders, upstream: Mapping[str, Traits], node_id: str, **literals: Any
    ) -> Declared:
        if literals["kind"] == "broken":
            raise RuntimeError("cannot read the file")
        return {0: [Trait("toy.kind", literals["kind"], node_id, f"engine {literals['kind']!r}", "kind")]}

    def run(self, ctx: Context, kind: str) -> str:
        return kind


class MakeFuel(Node):
    inputs = (Choice("kind", ["diesel", "petrol"]),)
    outputs = (Output(FUEL),)

    @classmethod
    def traits(
        cls, files: Folders, upstream: Mapping[str, Traits], node_id: str, **literals: Any
    ) -> Declared:
        trait = Trait("toy.kind", literals["kind"], node_id, f"fuel {literals['kind']!r}", "kind", "Kind")
        return {0: [trait.as_need()]}

    def run(self, ctx: Context, kind: str) -> str:
        return kind


class Tune(Node):
    """Declares nothing: its ENGINE output carries its ENGINE input's traits, not the FUEL's."""

    inputs = (Socket("engine", ENGINE), Socket("fuel", FUEL, optional=True))
    outputs = (Output(ENGINE), Output(FUEL))

    def run(self, ctx: Context, engine: str, fuel: str | None = None) -> tuple[str, str | None]:
        return engine, fuel


class Mix(Node):
    inputs = (Socket("a", FUEL), Socket("b", FUEL))
    outputs = (Output(FUEL),)

    @classmethod
    def traits(
        cls, files: Folders, upstream: Mapping[str, Traits], node_id: str, **literals: Any
    ) -> Declared:
        return {0: pass_through(upstream, "a", "b")}

    def run(self, ctx: Context, a: str, b: str) -> str:
        return a + b


class Drive(Node):
    output_node = True
    inputs = (Socket("engine", ENGINE), Socket("fuel", FUEL))
    outputs = ()

    def run(self, ctx: Context, engine: str, fuel: str) -> None:
        return None


REGISTRY = Registry([MakeEngine, MakeFuel, Tune, Mix, Drive])


def graph(engine: str, fuel: str, fuel2: str | None = None) -> dict[str, Any]:
    nodes: dict[str, Any] = {
        "e": {"type": "MakeEngine", "inputs": {"kind": engine}},
        "f": {"type": "MakeFuel", "inputs": {"kind": fuel}},
        "t": {"type": "Tune", "inputs": {"engine": link("e")}},
        "d": {"type": "Drive", "inputs": {"engine": link("t", 0), "fuel": link("f")}},
    }
    if fuel2 is not None:
        nodes["f2"] = {"type": "MakeFuel", "inputs": {"kind": fuel2}}
        nodes["m"] = {"type": "Mix", "inputs": {"a": link("f"), "b": link("f2")}}
        nodes["d"]["inputs"]["fuel"] = link("m")
    return wf(nodes)


def errors(data: dict[str, Any], files: Folders | None = None) -> list[tuple[Any, ...]]:
    res = check(data, REGISTRY, files=files if files is not None else Folders())
    return [(e.code, e.node, e.input, e.message) for e in res.errors if e.severity == "error"]


def test_a_need_meeting_another_value_is_refused_on_the_node_it_came_from() -> None:
    assert errors(graph("diesel", "diesel")) == []
    [(code, node, input_name, message)] = errors(graph("diesel", "petrol"))
    assert (code, node, input_name) == ("incompatible", "f", "kind")
    # names the source of the need and its value, where they meet, and the other source and its value
    assert "fuel 'petrol' is for Kind" in message and "node d (Drive)" in message
    assert "engine 'diesel'" in message and "(node e)" in message


def test_pass_through_nodes_carry_traits_by_socket_type_and_each_pair_is_reported_once() -> None:
    [(_, node, _, _)] = errors(graph("petrol", "diesel", "petrol"))
    assert node == "f"  # the petrol fuel that came through Mix fits; the diesel one is refused once
    found = errors(graph("petrol", "diesel", "diesel"))
    assert [e[1] for e in found] == ["f", "f2"]


def test_without_folders_or_with_a_broken_declaration_nothing_is_refused() -> None:
    assert check(graph("diesel", "petrol"), REGISTRY).ok  # no folders: no file to read, no traits
    assert errors(graph("broken", "petrol")) == []  # the run will report what the declaration could not


def test_file_memo_computes_once_per_file_version(tmp_path: Path) -> None:
    from atelier.engine.hashing import FileMemo

    f = tmp_path / "model.bin"
    f.write_bytes(b"one")
    calls: list[Path] = []

    def size(p: Path) -> int:
        calls.append(p)
        return p.stat().st_size

    memo = FileMemo(max_entries=2)
    assert memo.get("size", f, size) == 3 and memo.get("size", f, size) == 3 and len(calls) == 1
    f.write_bytes(b"three")
    os.utime(f, ns=(1, 10**18))  # a new version even within the file system's time resolution
    assert memo.get("size", f, size) == 5 and len(calls) == 2
    assert memo.get("other", f, size) == 5 and len(calls) == 3  # another kind of value, computed apart
