"""The generic admission walk (engine/admission.py) with toy node types: extents flow along links, each
figure is held against its limit and named by node, input and limit, and the memory estimate is the
largest that one node holds while it runs. Nothing here knows about Stable Diffusion."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from atelier.engine.admission import admit, available_ram
from atelier.engine.folders import Folders
from atelier.engine.limits import Estimate, Extent, Limits, Measure
from atelier.engine.node import Context, Int, Node, Output, Socket, String
from atelier.engine.registry import Registry
from atelier.engine.types import SocketType
from atelier.engine.validate import check

GRID = SocketType("GRID", "a batch of float grids", "#888888", (list,))


class Grid(Node):
    """A batch of width x height float32 grids of 2 channels."""

    category = "toy"
    inputs = (Int("width", 8, min=1, max=1 << 20), Int("height", 8, min=1, max=1 << 20), Int("batch", 1))
    outputs = (Output(GRID),)

    @classmethod
    def estimate(
        cls, files: Folders, upstream: Mapping[str, Extent], width: int, height: int, batch: int
    ) -> Estimate:
        side = "width" if width >= height else "height"
        return Estimate(
            [
                Measure("pixels", width * height, side, f"a {width}x{height} grid"),
                Measure("batch", batch, "batch", f"{batch} grids"),
            ],
            {0: Extent(width, height, batch, 2)},
        )

    def run(self, ctx: Context, width: int, height: int, batch: int) -> list:
        return [[0.0] * width * height * 2] * batch


class Grow(Node):
    """Each side times ``factor``; works in ``work`` bytes per output cell."""

    category = "toy"
    inputs = (Socket("grid", GRID), Int("factor", 2, min=1, max=1000), Int("work", 0, min=0, max=1 << 30))
    outputs = (Output(GRID),)

    @classmethod
    def estimate(
        cls, files: Folders, upstream: Mapping[str, Extent], factor: int, work: int
    ) -> Estimate | None:
        src = upstream.get("grid")
        if src is None:
            return None
        w, h = src.width * factor, src.height * factor
        return Estimate(
            [Measure("pixels", w * h, "factor", f"a {w}x{h} grid")],
            {0: Extent(w, h, src.batch, src.channels)},
            work_bytes=w * h * src.batch * work,
        )

    def run(self, ctx: Context, grid: list, factor: int, work: int) -> list:
        return grid


class Steps(Node):
    """Passes the grid through ``steps`` times."""

    category = "toy"
    inputs = (Socket("grid", GRID), Int("steps", 10, min=1, max=1 << 20))
    outputs = (Output(GRID),)

    @classmethod
    def estimate(cls, files: Folders, upstream: Mapping[str, Extent], steps: int) -> Estimate:
        src = upstream.get("grid")
        return Estimate([Measure("steps", steps, "steps", f"{steps} steps")], {0: src} if src else {})

    def run(self, ctx: Context, grid: list, steps: int) -> list:
        return grid


class Note(Node):
    """Text that goes nowhere; its estimate is broken on purpose when the text says so."""

    category = "toy"
    inputs = (String("text", ""),)
    outputs = (Output(GRID),)

    @classmethod
    def estimate(cls, files: Folders, upstream: Mapping[str, Extent], text: str) -> Estimate:
        if text == "break":
            raise RuntimeError("a broken estimate")
        return Estimate([Measure("text", len(text), "text", f"a text of {len(text)} characters")])

    def run(self, ctx: Context, text: str) -> list:
        return []


class Keep(Node):
    category = "toy"
    output_node = True
    inputs = (Socket("grid", GRID),)
    outputs = ()

    def run(self, ctx: Context, grid: list) -> None:
        return None


REGISTRY = Registry([Grid, Grow, Steps, Note, Keep])
BIG = Limits(memory_bytes=1 << 40)  # plenty of memory: only the other limits matter


def job(**nodes: dict[str, Any]) -> Any:
    result = check({"format": "atelier/workflow", "version": 1, "nodes": nodes}, REGISTRY)
    assert result.graph is not None, result.errors
    return result.graph


def link(node: str) -> dict[str, Any]:
    return {"node": node, "output": 0}


def chain(width: int = 64, height: int = 32, batch: int = 2, factor: int = 2, steps: int = 10, work: int = 0):
    return job(
        g={"type": "Grid", "inputs": {"width": width, "height": height, "batch": batch}},
        s={"type": "Steps", "inputs": {"grid": link("g"), "steps": steps}},
        up={"type": "Grow", "inputs": {"grid": link("s"), "factor": factor, "work": work}},
        k={"type": "Keep", "inputs": {"grid": link("up")}},
    )


def test_a_job_within_the_limits_is_admitted() -> None:
    verdict = admit(chain(), BIG)
    assert verdict.ok and verdict.problems == []


def test_sizes_flow_along_links_and_the_node_that_grows_them_is_named() -> None:
    limits = BIG.model_copy(update={"max_image_pixels": 100 * 100})
    assert admit(chain(width=64, height=32, factor=2), limits).ok  # 128x64 after growing
    verdict = admit(chain(width=64, height=32, factor=4), limits)  # 256x128 = 32768 pixels
    [p] = verdict.problems
    assert (p.code, p.node, p.node_type, p.input) == ("over_limit", "up", "Grow", "factor")
    assert p.message == "a 256x128 grid is over the limit max_image_pixels=10000"


def test_a_size_refused_at_its_source_is_not_refused_again_downstream() -> None:
    limits = BIG.model_copy(update={"max_image_pixels": 1000})
    problems = admit(chain(width=64, height=32, factor=1), limits).problems
    assert [(p.node, p.input) for p in problems] == [("g", "width")]
    # growing it further is a new problem, at the node that grows it
    problems = admit(chain(width=64, height=32, factor=3), limits).problems
    assert [(p.node, p.input) for p in problems] == [("g", "width"), ("up", "factor")]


@pytest.mark.parametrize(
    ("field", "value", "node", "input"),
    [("max_batch", 1, "g", "batch"), ("max_steps", 9, "s", "steps")],
)
def test_each_limit_is_configurable_and_named(field: str, value: int, node: str, input: str) -> None:
    assert admit(chain(batch=2, steps=10), BIG).ok
    [p] = admit(chain(batch=2, steps=10), BIG.model_copy(update={field: value})).problems
    assert (p.node, p.input) == (node, input) and f"{field}={value}" in p.message


def test_memory_is_the_most_one_node_holds_while_it_runs() -> None:
    # Grid out: 64*32*2 ch*4 B*batch 2 = 32768; Grow holds its input (32768), its output (4x: 131072) and
    # its work (128*64 cells * 2 batch * 10 B = 163840)
    grid_bytes = 64 * 32 * 2 * 4 * 2
    grown = 128 * 64 * 2 * 4 * 2
    work = 128 * 64 * 2 * 10
    verdict = admit(chain(width=64, height=32, batch=2, factor=2, work=10), BIG)
    assert verdict.peak_node == "up"
    assert verdict.memory_needed == grid_bytes + grown + work


def test_an_injected_small_memory_refuses_a_job_that_fits_the_other_limits() -> None:
    graph = chain(width=64, height=32, batch=2, factor=2, work=10)
    needed = admit(graph, BIG).memory_needed
    # the figure comes from the limits (a server option) or from a probe of the device
    for verdict in (
        admit(graph, Limits(memory_bytes=needed, memory_fraction=0.5)),
        admit(graph, Limits(), memory=lambda device: needed // 2),
    ):
        [p] = verdict.problems
        assert (p.code, p.node, p.node_type) == ("over_memory", "up", "Grow")
        assert "memory_fraction=" in p.message and "cpu memory" in p.message
    assert admit(graph, Limits(memory_bytes=2 * needed, memory_fraction=0.5)).ok
    assert admit(graph, Limits(), memory=lambda device: 4 * needed).ok


def test_an_unknown_memory_figure_skips_the_memory_check_only() -> None:
    verdict = admit(chain(steps=50), Limits(max_steps=10), memory=lambda device: None)
    assert [p.code for p in verdict.problems] == ["over_limit"] and verdict.memory_available is None


def test_only_nodes_the_outputs_need_are_held_and_a_broken_estimate_refuses_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    graph = job(
        g={"type": "Grid", "inputs": {"width": 8, "height": 8, "batch": 1}},
        k={"type": "Keep", "inputs": {"grid": link("g")}},
        unused={"type": "Note", "inputs": {"text": "x" * 500}},
    )
    assert admit(graph, BIG.model_copy(update={"max_prompt_chars": 100})).ok
    graph = job(
        n={"type": "Note", "inputs": {"text": "break"}},
        k={"type": "Keep", "inputs": {"grid": link("n")}},
    )
    assert admit(graph, BIG).ok
    assert "a broken estimate" in caplog.text


def test_available_ram_reads_memavailable(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    1234567 kB\n")
    assert available_ram(meminfo) == 1234567 * 1024
    assert available_ram(tmp_path / "missing") is not None  # falls back to sysconf's free pages
