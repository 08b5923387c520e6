"""Review polish in the browser: the first view, the node menu, internal node categories, notices shown once,
out-of-range values refused, the status line after a refused queue, shipped layouts, icons."""

from __future__ import annotations

import re
from typing import Any

RECTS = """() => {
  const T = window.LiteGraph ? window.LiteGraph.NODE_TITLE_HEIGHT : 30
  return window.atelier.app.graph._nodes.map(n => ({id: n.properties.aid, title: n.title,
    x0: n.pos[0], y0: n.pos[1] - 30, x1: n.pos[0] + n.size[0], y1: n.pos[1] + n.size[1]}))
}"""


def test_first_view_fits_the_workflow_at_a_legible_zoom(page: Any) -> None:
    scale = page.evaluate("window.atelier.app.canvas.ds.scale")
    assert scale >= 0.65, scale
    canvas = page.locator("#graph-canvas").bounding_box()
    bar = page.locator(".wf-tabs").bounding_box()
    for node in page.evaluate("Object.keys(window.atelier.toWorkflow().nodes)"):
        r = page.evaluate("(id) => window.atelier.nodeRect(id)", node)
        assert r["x"] >= canvas["x"] and r["x"] + r["width"] <= canvas["x"] + canvas["width"], node
        assert (
            r["y"] >= bar["y"] + bar["height"] and r["y"] + r["height"] <= canvas["y"] + canvas["height"]
        ), node
    page.shot("first view")
    # a workflow too large for a legible fit shows its start at the smallest legible zoom
    page.evaluate("window.atelier.app.tabs.open()")
    page.evaluate("""async () => {
      const wf = await (await fetch('/atelier/v1/workflows/_shipped')).json()
      const big = Object.values(wf).reduce((a, b) => Object.keys(b.nodes).length > Object.keys(a.nodes).length ? b : a)
      const { loadIntoGraph } = await import('/static/js/graphio.js')
      loadIntoGraph(big, { fixChoices: true })
    }""")
    assert abs(page.evaluate("window.atelier.app.canvas.ds.scale") - 0.65) < 1e-9
    page.shot("large workflow from its start")


def menu_problems(page: Any) -> dict:
    """Every catalogue node type's context menu, alone and with several nodes selected: entries named twice,
    separators that do not stand between entries."""
    return page.evaluate("""async () => {
      const { LiteGraph } = await import('litegraph')
      const app = window.atelier.app
      const bad = {}
      const check = (n, label) => {
        const names = app.canvas.getNodeMenuOptions(n).map(o => o ? o.content : null)
        const dup = names.filter((x, i) => x !== null && names.indexOf(x) !== i)
        const stray = names.some((x, i) => x === null && (i === 0 || i === names.length - 1 || names[i + 1] === null))
        if (dup.length || stray) bad[label] = names
      }
      for (const type of Object.keys(app.catalogue)) {
        const n = LiteGraph.createNode(type)
        app.graph.add(n)
        check(n, type)
        app.canvas.selectNodes(app.graph._nodes.slice(0, 3))
        check(n, type + ' (several selected)')
        app.canvas.deselectAll()
        app.graph.remove(n)
      }
      // an output node with pictures has more entries
      const save = window.atelier.findNode('save')
      window.atelier.runtimeOf('save').images = [{filename: 'a.png'}, {filename: 'b.png'}]
      check(save, 'SaveImage with pictures')
      window.atelier.runtimeOf('save').images = []
      return bad
    }""")


def test_node_menu_has_no_duplicate_entries(page: Any) -> None:
    assert menu_problems(page) == {}
    # and as the user sees it
    r = page.evaluate("window.atelier.nodeRect('sampler')")
    page.mouse.click(r["x"] + 40, r["y"] + 10, button="right")
    page.wait_for_selector(".litecontextmenu")
    labels = page.eval_on_selector_all(
        ".litecontextmenu .litemenu-entry:not(.separator)", "els => els.map(e => e.textContent)"
    )
    assert len(labels) == len(set(labels)), labels
    assert "Remove" in labels and "Expose as parameter" in labels
    # a separator is one thin line
    heights = page.eval_on_selector_all(
        ".litecontextmenu .litemenu-entry.separator", "els => els.map(e => e.getBoundingClientRect().height)"
    )
    assert heights and all(h <= 1.5 for h in heights), heights
    page.shot("node menu")


def test_internal_node_categories_are_not_offered(page: Any) -> None:
    internal = page.evaluate(
        "Object.values(window.atelier.app.catalogue).filter(d => d.category.startsWith('_')).map(d => d.type)"
    )
    assert internal, (
        "the catalogue should have internal (_-prefixed) categories for this test to mean anything"
    )
    cats = page.eval_on_selector_all(
        "#palette .palette-cat summary span:first-child", "els => els.map(e => e.textContent)"
    )
    assert cats and not any("testing" in c.lower() for c in cats), cats
    listed = page.eval_on_selector_all("#palette .palette-item", "els => els.map(e => e.textContent)")
    assert listed
    # the search box does not offer them for words of their names, only for their exact type name
    page.fill("#palette-filter", "tiled")
    found = page.eval_on_selector_all("#palette .palette-item", "els => els.map(e => e.textContent)")
    assert not any("Tiled" in f for f in found), found
    page.fill("#palette-filter", internal[0])
    page.wait_for_function("document.querySelectorAll('#palette .palette-item').length > 0")
    page.fill("#palette-filter", "")
    # nor litegraph's Add Node menu
    menu_cats = page.evaluate(
        "(async () => (await import('litegraph')).LiteGraph.getNodeTypesCategories())()"
    )
    assert menu_cats and not any(c.startswith("_") for c in menu_cats), menu_cats
    page.shot("palette without internal categories")


def notices(page: Any) -> list[str]:
    return page.eval_on_selector_all(".toast", "els => els.map(e => e.textContent)")


def test_demo_checkpoint_notice_only_once(page: Any) -> None:
    # the first visit loaded the default workflow, whose checkpoint this server lacks: said once
    seen = page.evaluate("JSON.parse(localStorage.getItem('atelier.notices-seen') || '[]')")
    assert any("not available, using" in s for s in seen), seen
    page.reload()
    page.wait_for_selector("body.ready")
    page.click("#btn-file")
    page.click("[data-action='default']")
    page.wait_for_function("document.querySelectorAll('.wf-tab').length === 2")
    page.click("#btn-open")
    page.click('.library-item[data-name="Portrait"] .library-open')
    page.wait_for_function("document.querySelectorAll('.wf-tab').length === 3")
    page.wait_for_timeout(300)
    assert not [t for t in notices(page) if "not available" in t], notices(page)
    page.shot("no notice on later loads")


def prompt_value(page: Any, node: str, widget: str, value: str) -> None:
    """Click the middle of a number widget on the canvas and type a value into litegraph's prompt."""
    w = page.evaluate("([n, w]) => window.atelier.widgetRect(n, w)", [node, widget])
    page.mouse.click(w["x"] + w["width"] / 2, w["y"] + w["height"] / 2)
    page.wait_for_selector(".graphdialog input")
    page.fill(".graphdialog input", value)
    page.keyboard.press("Enter")


def node_input(page: Any, node: str, name: str) -> Any:
    return page.evaluate("([n, k]) => window.atelier.toWorkflow().nodes[n].inputs[k]", [node, name])


def test_out_of_range_values_are_refused_with_a_message(page: Any) -> None:
    # the panel's limits are the node input's, narrowed by the parameter's (steps: node 1..10000, parameter 1..200)
    field = '.param[data-param="steps"] input'
    assert page.get_attribute(field, "min") == "1"
    assert page.get_attribute(field, "max") == "200"
    page.fill(field, "500")
    page.keyboard.press("Tab")
    page.wait_for_selector(".toast-error:has-text('steps: 500 is above the maximum 200')")
    assert page.input_value(field) == "20"
    assert node_input(page, "sampler", "steps") == 20
    page.shot("panel refuses")
    page.fill(field, "0")
    page.keyboard.press("Tab")
    page.wait_for_selector(".toast-error:has-text('steps: 0 is below the minimum 1')")
    assert node_input(page, "sampler", "steps") == 20
    page.fill(field, "33")
    page.keyboard.press("Tab")
    page.wait_for_function("window.atelier.toWorkflow().nodes.sampler.inputs.steps === 33")
    # a widget on the canvas: the typed value is refused, not clamped
    prompt_value(page, "latent", "batch_size", "100000")
    page.wait_for_selector(".toast-error:has-text('batch_size: 100000 is above the maximum')")
    assert node_input(page, "latent", "batch_size") == 1
    page.shot("widget refuses")
    prompt_value(page, "sampler", "steps", "201")
    page.wait_for_selector(".toast-error:has-text('steps: 201 is above the maximum 200')")
    assert node_input(page, "sampler", "steps") == 33
    prompt_value(page, "latent", "batch_size", "3")
    page.wait_for_function("window.atelier.toWorkflow().nodes.latent.inputs.batch_size === 3")


def test_status_line_resets_after_a_refused_queue(page: Any) -> None:
    page.evaluate("window.atelier.app.graph.remove(window.atelier.findNode('loader'))")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector(".toast-error:has-text('Not queued')")
    assert page.text_content("#run-status") == "Not queued"
    page.shot("refused")
    page.wait_for_function("document.getElementById('run-status').textContent === 'Idle'", timeout=8000)
    assert page.evaluate("document.getElementById('btn-interrupt').disabled")


def test_shipped_workflows_open_without_overlapping_nodes(page: Any) -> None:
    keys = page.evaluate(
        "(async () => Object.keys(await (await fetch('/atelier/v1/workflows/_shipped')).json()))()"
    )
    assert len(keys) >= 5
    for key in keys:
        page.evaluate(
            """async (key) => {
              const wf = (await (await fetch('/atelier/v1/workflows/_shipped')).json())[key]
              const { openWorkflow } = await import('/static/js/workflows.js')
              openWorkflow(wf, { fixChoices: true, source: key })
              window.atelier.app.canvas.draw(true, true)
            }""",
            key,
        )
        rects = page.evaluate(RECTS)
        overlaps = [
            (a["id"], b["id"])
            for i, a in enumerate(rects)
            for b in rects[i + 1 :]
            if a["x0"] < b["x1"] and b["x0"] < a["x1"] and a["y0"] < b["y1"] and b["y0"] < a["y1"]
        ]
        assert not overlaps, f"{key}: {overlaps}"
        if key in ("restyle_photo", "portrait_face_detail"):
            page.shot(f"shipped {key}")


EMOJI_OR_SYMBOL = re.compile("[\u2190-\u2bff\u2300-\u23ff\U0001f000-\U0001faff\u2700-\u27bf]")


def test_icons_do_not_depend_on_an_emoji_font(page: Any) -> None:
    # the buttons of the page, the library's and the panel's: no symbol or emoji characters, SVG instead
    page.click("#btn-open")
    page.wait_for_selector(".library-item")
    texts = page.eval_on_selector_all("button, .caret, label.batch", "els => els.map(e => e.textContent)")
    bad = [t for t in texts if EMOJI_OR_SYMBOL.search(t or "")]
    assert not bad, bad
    icons = page.eval_on_selector_all("[data-icon]", "els => els.map(e => !!e.querySelector('svg.ico'))")
    assert icons and all(icons)
    assert page.locator(".modal-head .icon-btn svg.ico").count() == 1
    page.keyboard.press("Escape")
    assert page.locator('.param[data-param="seed"] .dice svg.ico').count() == 1
    page.shot("icons")
