"""Graph tools in a real browser: bypass and mute, link styles, the minimap, node colours, Reroute and Note."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.test_browser_canvas import PIXELS_AROUND, drag, empty_spot, workflow


def title_point(page: Any, node: str) -> dict:
    rect = page.evaluate(f"window.atelier.nodeRect('{node}')")
    return {"x": rect["x"] + rect["width"] / 2, "y": rect["y"] + rect["titleHeight"] / 2}


def select(page: Any, node: str) -> None:
    p = title_point(page, node)
    page.mouse.click(p["x"], p["y"])
    page.wait_for_function(
        f"Object.values(window.atelier.app.canvas.selected_nodes).map(n => n.properties.aid).join() === '{node}'"
    )


def context_menu(page: Any, node: str, *entries: str) -> None:
    p = title_point(page, node)
    page.mouse.click(p["x"], p["y"], button="right")
    for entry in entries:
        page.click(f".litecontextmenu .litemenu-entry:text-is('{entry}')")


def pixel_mean(page: Any, node: str) -> tuple[float, float, float]:
    """The mean colour the canvas shows in the middle of a node's body (below its widgets' labels)."""
    page.evaluate("window.atelier.app.canvas.draw(true, true)")
    rect = page.evaluate(f"window.atelier.nodeRect('{node}')")
    point = [rect["x"] + rect["width"] - 12, rect["y"] + rect["height"] - 8]
    px = page.evaluate(PIXELS_AROUND, point)
    return tuple(sum(p[i] for p in px) / len(px) for i in range(3))  # type: ignore[return-value]


def mode_of(page: Any, node: str) -> str | None:
    return workflow(page)["nodes"][node].get("mode")


def test_bypass_and_mute_with_keys_and_menu_saved_and_undone(page: Any) -> None:
    plain = pixel_mean(page, "decode")
    select(page, "decode")
    page.keyboard.press("Control+b")
    page.wait_for_function("window.atelier.toWorkflow().nodes.decode.mode === 'bypass'")
    tinted = pixel_mean(page, "decode")
    # purple: more red and blue than green, unlike the plain grey body
    assert tinted[0] > tinted[1] + 15 and tinted[2] > tinted[1] + 15, (plain, tinted)
    assert abs(plain[0] - plain[2]) < 15
    page.shot("decode bypassed")
    page.keyboard.press("Control+m")  # bypassed -> muted
    page.wait_for_function("window.atelier.toWorkflow().nodes.decode.mode === 'mute'")
    muted = pixel_mean(page, "decode")
    assert sum(muted) < sum(plain), (plain, muted)
    page.shot("decode muted")
    page.keyboard.press("Control+m")  # muted again: back to active
    page.wait_for_function("!('mode' in window.atelier.toWorkflow().nodes.decode)")
    # the node menu does it too, and says what it will do
    context_menu(page, "sampler", "Bypass (Ctrl+B)")
    assert mode_of(page, "sampler") == "bypass"
    context_menu(page, "sampler")
    page.wait_for_selector(".litecontextmenu .litemenu-entry:text-is('Stop bypassing (Ctrl+B)')")
    page.keyboard.press("Escape")
    page.mouse.click(5, 5)
    # undo walks back through the changes
    page.evaluate("window.atelier.undo()")
    assert mode_of(page, "sampler") is None
    page.evaluate("window.atelier.undo()")
    assert mode_of(page, "decode") == "mute"
    # the mode survives a reload (the session keeps the workflow)
    page.reload()
    page.wait_for_selector("body.ready")
    assert mode_of(page, "decode") == "mute"
    assert page.evaluate("window.atelier.findNode('decode').mode") == 2
    # and the server sees it: muting the decoder leaves the save node nothing to run
    check = page.evaluate(
        "fetch('/atelier/v1/validate', {method: 'POST', headers: {'content-type': 'application/json'},"
        " body: JSON.stringify({workflow: window.atelier.toWorkflow()})}).then(r => r.json())"
    )
    assert any(e.get("code") == "not_run" and e.get("node") == "save" for e in check.get("errors", [])), check
    page.shot("muted after reload")


def background_menu(page: Any, *entries: str, at: tuple[float, float] | None = None) -> None:
    """Right-click the canvas background and pick the entries in turn."""
    x, y = at or empty_spot(page)
    page.mouse.click(x, y, button="right")
    for entry in entries:
        page.click(f".litecontextmenu .litemenu-entry:text-is('{entry}')")


def virtual_ids(page: Any, type_name: str) -> list[str]:
    return page.evaluate(
        f"window.atelier.app.graph._nodes.filter(n => n.type === '{type_name}').map(n => n.properties.aid)"
    )


def slot_of(page: Any, node: str, kind: str, index: int) -> dict:
    """Screen position of a canvas-only node's socket (they have no names to look up)."""
    return page.evaluate(
        """([id, kind, i]) => {
          const n = window.atelier.app.graph._nodes.find(n => n.properties.aid === id)
          const p = kind === 'input' ? n.getInputPos(i) : n.getOutputPos(i)
          const c = window.atelier.app.canvas
          const [x, y] = c.ds.convertOffsetToCanvas(p)
          const r = c.canvas.getBoundingClientRect()
          return {x: r.left + x, y: r.top + y}
        }""",
        [node, kind, index],
    )


def move_node(page: Any, node: str, x: float, y: float) -> None:
    """Put a node at (x, y) relative to the bottom left corner of the workflow, and fit the view."""
    wf = workflow(page)
    bottom = max(p[1] + wf["ui"]["sizes"][i][1] for i, p in wf["ui"]["positions"].items())
    left = min(p[0] for p in wf["ui"]["positions"].values())
    x, y = left + x, bottom + 60 + y
    page.evaluate(
        "([id, x, y]) => { const n = window.atelier.app.graph._nodes.find(n => n.properties.aid === id);"
        " n.pos = [x, y]; window.atelier.app.canvas.setDirty(true, true) }",
        [node, x, y],
    )
    page.evaluate(
        "import('/static/js/graphio.js').then(m => { m.fitView(); window.atelier.app.canvas.draw(true, true) })"
    )


def validate(page: Any) -> dict:
    return page.evaluate(
        "fetch('/atelier/v1/validate', {method: 'POST', headers: {'content-type': 'application/json'},"
        " body: JSON.stringify({workflow: window.atelier.toWorkflow()})}).then(r => r.json())"
    )


def test_reroute_note_and_primitive_are_canvas_only_and_survive_a_reload(page: Any) -> None:
    # a Reroute between the decoder and the save node, added from the canvas menu and wired by dragging
    background_menu(page, "Add Reroute")
    [reroute] = virtual_ids(page, "Reroute")
    move_node(page, reroute, 900, 0)
    drag(
        page,
        page.evaluate("window.atelier.slotPos('decode', 'output', 'IMAGE')"),
        slot_of(page, reroute, "input", 0),
    )
    drag(
        page,
        slot_of(page, reroute, "output", 0),
        page.evaluate("window.atelier.slotPos('save', 'input', 'images')"),
    )
    wf = workflow(page)
    assert reroute not in wf["nodes"]
    assert wf["nodes"]["save"]["inputs"]["images"] == {"node": "decode", "output": "IMAGE"}
    assert wf["ui"]["virtual"][reroute]["input"] == {"node": "decode", "output": "IMAGE"}
    assert wf["ui"]["virtual"][reroute]["targets"] == [["save", "images"]]
    assert (
        page.evaluate(
            f"window.atelier.app.graph._nodes.find(n => n.properties.aid === '{reroute}').outputs[0].type"
        )
        == "IMAGE"
    )
    # a Note with text typed into it
    background_menu(page, "Add Note")
    [note] = virtual_ids(page, "Note")
    move_node(page, note, 0, 0)
    page.wait_for_timeout(100)
    box = page.locator(".node-textarea").last
    box.click()
    page.keyboard.type("keep the light soft", delay=10)
    page.mouse.click(*empty_spot(page))
    page.wait_for_function(f"window.atelier.toWorkflow().ui.virtual['{note}'].text === 'keep the light soft'")
    # a Primitive feeding one value to two INT widgets; it takes the first one's type and refuses a FLOAT
    background_menu(page, "Add Primitive")
    [prim] = virtual_ids(page, "PrimitiveNode")
    move_node(page, prim, 380, 0)
    drag(
        page,
        slot_of(page, prim, "output", 0),
        page.evaluate("window.atelier.slotPos('sampler', 'input', 'steps')"),
    )
    drag(
        page,
        slot_of(page, prim, "output", 0),
        page.evaluate("window.atelier.slotPos('latent', 'input', 'batch_size')"),
    )
    drag(
        page,
        slot_of(page, prim, "output", 0),
        page.evaluate("window.atelier.slotPos('sampler', 'input', 'cfg')"),
    )
    page.evaluate(
        f"(() => {{ const n = window.atelier.app.graph._nodes.find(n => n.properties.aid === '{prim}');"
        " n.widgets.find(w => w.name === 'value').value = 3; window.atelier.app.changed() })()"
    )
    wf = workflow(page)
    assert prim not in wf["nodes"] and note not in wf["nodes"]
    assert wf["nodes"]["sampler"]["inputs"]["steps"] == 3
    assert wf["nodes"]["latent"]["inputs"]["batch_size"] == 3
    assert isinstance(wf["nodes"]["sampler"]["inputs"]["cfg"], float)  # not linked: a FLOAT is not an INT
    assert sorted(wf["ui"]["virtual"][prim]["targets"]) == [["latent", "batch_size"], ["sampler", "steps"]]
    assert wf["ui"]["virtual"][prim]["value"] == 3
    # the primitive carries the first widget's limits
    assert page.evaluate(
        f"window.atelier.app.graph._nodes.find(n => n.properties.aid === '{prim}').widgets[0].options.min"
    ) == page.evaluate("window.atelier.findNode('sampler').widgets.find(w => w.name === 'steps').options.min")
    # a primitive on a seed gets the seed's control after generate
    background_menu(page, "Add Primitive")
    seed = next(i for i in virtual_ids(page, "PrimitiveNode") if i != prim)
    move_node(page, seed, 680, 0)
    drag(
        page,
        slot_of(page, seed, "output", 0),
        page.evaluate("window.atelier.slotPos('sampler', 'input', 'seed')"),
    )
    names = page.evaluate(
        f"window.atelier.app.graph._nodes.find(n => n.properties.aid === '{seed}').widgets.map(w => w.name)"
    )
    assert names == ["value", "control_after_generate"]
    page.evaluate("window.atelier.app.canvas.draw(true, true)")
    page.shot("reroute note and primitives")
    assert validate(page)["ok"]
    # all of it comes back after a reload (the session keeps the workflow), and through undo
    before = workflow(page)
    page.reload()
    page.wait_for_selector("body.ready")
    after = workflow(page)
    assert after["nodes"] == before["nodes"]
    assert after["ui"]["virtual"] == before["ui"]["virtual"]
    assert (
        page.evaluate(
            f"window.atelier.app.graph._nodes.find(n => n.properties.aid === '{reroute}').outputs[0].links.length"
        )
        == 1
    )
    page.evaluate("window.atelier.app.canvas.draw(true, true)")
    page.shot("after reload")


def test_link_styles_minimap_and_node_colours(page: Any) -> None:
    # link style from the canvas menu, remembered
    background_menu(page, "Canvas", "Straight links")
    assert page.evaluate("window.atelier.app.canvas.links_render_mode") == 0
    page.shot("straight links")
    background_menu(page, "Canvas", "Linear links")
    assert page.evaluate("window.atelier.app.canvas.links_render_mode") == 1
    page.reload()
    page.wait_for_selector("body.ready")
    assert page.evaluate("window.atelier.app.canvas.links_render_mode") == 1
    background_menu(page, "Canvas", "Hidden links")
    assert page.evaluate("window.atelier.app.canvas.links_render_mode") == -1
    page.shot("hidden links")
    background_menu(page, "Canvas", "Spline links")
    # node colours from the node menu, saved in the layout
    context_menu(page, "sampler", "Colors")
    page.click(".litecontextmenu .litemenu-entry span:text-is('red')")
    wf = workflow(page)
    assert wf["ui"]["colors"]["sampler"]["bgcolor"]
    red = wf["ui"]["colors"]["sampler"]
    # the minimap: a click moves the view so that the graph point under it is in the middle
    mini = page.locator("#minimap")
    assert mini.is_visible()
    box = mini.bounding_box()
    centre_js = (
        "(() => { const c = window.atelier.app.canvas;"
        " return c.ds.convertCanvasToOffset([c.canvas.clientWidth / 2, c.canvas.clientHeight / 2]) })()"
    )
    c0 = page.evaluate(centre_js)
    # the map shows the whole view, its middle in the map's middle: a click right and below it moves there
    page.mouse.click(box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.8)
    c1 = page.evaluate(centre_js)
    assert c1[0] > c0[0] + 100 and c1[1] > c0[1] + 50, (c0, c1)
    o0 = page.evaluate("[...window.atelier.app.canvas.ds.offset]")
    drag(
        page,
        {"x": box["x"] + box["width"] * 0.8, "y": box["y"] + box["height"] * 0.5},
        {"x": box["x"] + box["width"] * 0.3, "y": box["y"] + box["height"] * 0.5},
    )
    o1 = page.evaluate("[...window.atelier.app.canvas.ds.offset]")
    assert o1[0] > o0[0] + 50  # dragged left on the map: the view went left, the offset grew
    page.evaluate("window.atelier.app.canvas.draw(true, true)")
    page.wait_for_timeout(50)
    page.shot("minimap moved the view, sampler red")
    # switched off from the canvas menu, remembered
    background_menu(page, "Canvas", "● Minimap")
    assert not mini.is_visible()
    page.reload()
    page.wait_for_selector("body.ready")
    assert not page.locator("#minimap").is_visible()
    assert workflow(page)["ui"]["colors"]["sampler"] == red


BIG_WORKFLOW = """async (copies) => {
  const m = await import('/static/js/graphio.js')
  const base = window.atelier.toWorkflow()
  const nodes = {}
  const positions = {}
  for (let k = 0; k < copies; k++) {
    for (const [id, n] of Object.entries(base.nodes)) {
      const inputs = {}
      for (const [name, v] of Object.entries(n.inputs || {})) {
        inputs[name] = v && typeof v === 'object' && 'node' in v ? {node: `${v.node}_${k}`, output: v.output} : v
      }
      nodes[`${id}_${k}`] = {...n, inputs}
      const p = base.ui.positions[id]
      positions[`${id}_${k}`] = [p[0] + (k % 6) * 1100, p[1] + Math.floor(k / 6) * 700]
    }
  }
  m.loadIntoGraph({...base, parameters: {}, nodes, ui: {positions}})
  window.atelier.app.canvas.draw(true, true)
  return Object.keys(nodes).length
}"""


DRAW_TIMES = """async () => {
  const { app } = window.atelier
  const modes = await import('/static/js/modes.js')
  const minimap = await import('/static/js/minimap.js')
  const median = (f) => {
    const t = []
    for (let i = 0; i < 9; i++) { const a = performance.now(); f(); t.push(performance.now() - a) }
    return t.sort((x, y) => x - y)[4]
  }
  const setAll = (m) => { for (const n of app.graph._nodes) n.mode = m }
  const out = {}
  setAll(0)
  out["draw active"] = median(() => app.canvas.draw(true, true))
  setAll(modes.BYPASS)
  out["draw bypassed"] = median(() => app.canvas.draw(true, true))
  setAll(modes.NEVER)
  out["draw muted"] = median(() => app.canvas.draw(true, true))
  setAll(0)
  out["minimap"] = median(() => minimap.drawMinimap())
  const nodes = app.graph._nodes
  out["toggle bypass (301 nodes)"] = median(() => modes.toggleMode(nodes, modes.BYPASS))
  setAll(0)
  return out
}"""


def _trace_durations(path: Any) -> dict[str, float]:
    """Per interaction (performance.mark "gt:NAME" before each), the longest main-thread task, input event
    or animation frame in a Chromium trace until the next mark (ms)."""
    import json

    events = json.loads(path.read_text())
    events = events["traceEvents"] if isinstance(events, dict) else events
    marks = sorted((e["ts"], e["name"][3:]) for e in events if str(e.get("name", "")).startswith("gt:"))
    worst: dict[str, float] = {name: 0.0 for _, name in marks}
    for e in events:
        if e.get("ph") != "X" or "dur" not in e:
            continue
        if e["name"] not in (
            "RunTask",
            "ThreadControllerImpl::RunTask",
            "EventDispatch",
            "FireAnimationFrame",
            "TimerFire",
        ):
            continue
        current = [name for ts, name in marks if ts <= e["ts"]]
        if current:
            worst[current[-1]] = max(worst[current[-1]], e["dur"] / 1000)
    return worst


def _mark(page: Any, name: str) -> None:
    page.evaluate(f"performance.mark('gt:{name}')")


@pytest.mark.slow  # a measurement (its figures also come from bench/): --runslow
def test_graph_tools_on_a_300_node_workflow_performance_trace(page: Any, artifacts: Any) -> None:
    """Bypass, mute, the minimap and link styles on 301 nodes, under a performance trace; prints the longest
    main-thread task, input event and frame (the figures to keep under 50 ms), and keeps the trace."""
    count = page.evaluate(BIG_WORKFLOW, 43)
    assert count == 301
    page.wait_for_timeout(300)
    trace = artifacts / "graphtools-300-nodes-trace.json"
    browser = page.context.browser
    browser.start_tracing(
        page=page, path=str(trace), categories=["devtools.timeline", "toplevel", "blink.user_timing"]
    )
    at = empty_spot(page)
    view = page.evaluate("[window.atelier.app.canvas.ds.scale, [...window.atelier.app.canvas.ds.offset]]")
    page.mouse.click(*at)
    page.keyboard.press("Control+a")
    page.wait_for_timeout(300)
    _mark(page, "Ctrl+B on 301 nodes")
    page.keyboard.press("Control+b")  # bypass all 301
    page.wait_for_timeout(400)
    bypassed = page.evaluate("window.atelier.app.graph._nodes.filter(n => n.mode === 4).length")
    _mark(page, "Ctrl+M on 301 nodes")
    page.keyboard.press("Control+m")  # mute all 301
    page.wait_for_timeout(400)
    _mark(page, "Ctrl+M again (active)")
    page.keyboard.press("Control+m")
    page.wait_for_timeout(400)
    box = page.locator("#minimap").bounding_box()
    _mark(page, "minimap click")
    page.mouse.click(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.3)
    page.wait_for_timeout(400)
    _mark(page, "minimap drag (20 moves)")
    drag(
        page,
        {"x": box["x"] + 40, "y": box["y"] + 40},
        {"x": box["x"] + box["width"] - 40, "y": box["y"] + box["height"] - 40},
        steps=20,
    )
    page.wait_for_timeout(400)
    _mark(page, "canvas menu, straight links")
    # the minimap moved the view: back to the one where `at` is background
    page.evaluate(
        "(v) => { const c = window.atelier.app.canvas; c.ds.scale = v[0]; c.ds.offset = v[1]; c.draw(true, true) }",
        view,
    )
    background_menu(page, "Canvas", "Straight links", at=at)
    page.wait_for_timeout(400)
    _mark(page, "end")
    browser.stop_tracing()
    page.shot("after the minimap and straight links")
    assert bypassed == 301
    assert not any("mode" in n for n in workflow(page)["nodes"].values())  # muted, then active again
    worst = _trace_durations(trace)
    assert all(ms > 0 for name, ms in worst.items() if name != "end"), worst
    # the tools' own share, timed in the page: a full redraw with every node active, bypassed, muted; the minimap
    timing = page.evaluate(DRAW_TIMES)
    assert set(timing) == {
        "draw active",
        "draw bypassed",
        "draw muted",
        "minimap",
        "toggle bypass (301 nodes)",
    }
    print("\n300-node graph tools, median in the page (ms):")
    for name, ms in timing.items():
        print(f"  {name:28s} {ms:7.2f}")
    print("300-node graph tools, longest task, event or frame per interaction in the trace (ms):")
    for name, ms in worst.items():
        if name != "end":
            print(f"  {name:28s} {ms:7.1f}")


def test_a_link_dropped_on_a_widget_feeds_it_and_the_widget_comes_back(page: Any) -> None:
    # every widget is an input too: a link dropped on the widget itself (not its socket) feeds it
    background_menu(page, "Add Primitive")
    [prim] = virtual_ids(page, "PrimitiveNode")
    move_node(page, prim, 380, 0)
    cfg = page.evaluate("window.atelier.widgetRect('sampler', 'cfg')")
    drag(
        page,
        slot_of(page, prim, "output", 0),
        {"x": cfg["x"] + cfg["width"] / 2, "y": cfg["y"] + cfg["height"] / 2},
    )
    assert (
        page.evaluate(
            f"window.atelier.app.graph._nodes.find(n => n.properties.aid === '{prim}').outputs[0].type"
        )
        == "FLOAT"
    )
    page.evaluate(
        f"(() => {{ const n = window.atelier.app.graph._nodes.find(n => n.properties.aid === '{prim}');"
        " n.widgets.find(w => w.name === 'value').value = 4.5; window.atelier.app.changed() })()"
    )
    page.wait_for_function("window.atelier.toWorkflow().nodes.sampler.inputs.cfg === 4.5")
    page.evaluate("window.atelier.app.canvas.draw(true, true)")
    page.shot("cfg fed by a primitive")
    # remove the primitive: the widget gives its own value again; undo brings the primitive back, linked
    sel = page.evaluate(
        """(id) => { const n = window.atelier.app.graph._nodes.find(n => n.properties.aid === id)
        const c = window.atelier.app.canvas; const r = c.canvas.getBoundingClientRect()
        const [x, y] = c.ds.convertOffsetToCanvas([n.pos[0] + 40, n.pos[1] - 12]); return [r.left + x, r.top + y] }""",
        prim,
    )
    page.mouse.click(*sel)
    page.keyboard.press("Delete")
    page.wait_for_function("window.atelier.toWorkflow().nodes.sampler.inputs.cfg === 6.5")
    assert "virtual" not in workflow(page)["ui"]
    page.keyboard.press("Control+z")
    page.wait_for_function("window.atelier.toWorkflow().nodes.sampler.inputs.cfg === 4.5")
    assert workflow(page)["ui"]["virtual"][prim]["targets"] == [["sampler", "cfg"]]
    page.evaluate("window.atelier.app.canvas.draw(true, true)")
    page.shot("undone")
