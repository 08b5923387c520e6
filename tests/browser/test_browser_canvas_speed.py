"""A 300-node workflow on the canvas: the interactions of bench/canvas.py do what they should (the node moves,
the view pans and zooms, all nodes get selected, the widget changes and is undoable, tabs switch), and their
figures are printed (no timed assert: the machine's load decides them; bench/canvas.py is the measurement)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_canvas", ROOT / "bench" / "canvas.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow  # a measurement (its figures also come from bench/): --runslow
def test_300_node_workflow_interactions(page: Any) -> None:
    b = bench()
    wf = b.build_workflow(300)
    assert len(wf["nodes"]) == 300
    b.open_workflow(page, wf)
    assert page.evaluate("document.querySelectorAll('.wf-tab').length") == 2
    page.shot("300 nodes, first view")
    before = page.evaluate("[...window.atelier.findNode('sampler_0').pos]")
    scale0 = page.evaluate("window.atelier.app.canvas.ds.scale")
    steps0 = page.evaluate("window.atelier.toWorkflow().nodes.sampler_0.inputs.steps")
    results = b.measure(page, repeats=1)
    print("\n" + b.report(results, 300))
    # what the interactions did: the tab of 300 nodes is back on the canvas
    assert page.evaluate("window.atelier.app.graph._nodes.length") == 300
    after = page.evaluate("[...window.atelier.findNode('sampler_0').pos]")
    assert after[0] > before[0] + 40 and after[1] > before[1] + 20, (before, after)
    assert page.evaluate("window.atelier.app.canvas.ds.scale") not in (scale0, 0.8)
    assert page.evaluate("window.atelier.toWorkflow().nodes.sampler_0.inputs.steps") == steps0 + 1
    # the widget edit is one undo step
    page.click("#btn-undo")
    page.wait_for_function(
        "(s) => window.atelier.toWorkflow().nodes.sampler_0.inputs.steps === s", arg=steps0
    )
    assert set(results) >= {"drag a node", "pan", "zoom (wheel)", "select all", "edit a widget"}
    page.shot("after the interactions")
