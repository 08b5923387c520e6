"""The canvas editor in a real browser: loading, adding nodes, links, widgets, shortcuts."""

from __future__ import annotations

from typing import Any

PORTRAIT_NODES = {"loader", "positive", "negative", "latent", "sampler", "decode", "save"}


def workflow(page: Any) -> dict:
    return page.evaluate("window.atelier.toWorkflow()")


def node_count(page: Any) -> int:
    return page.evaluate("window.atelier.app.graph._nodes.length")


def canvas_box(page: Any) -> dict:
    return page.locator("#graph-canvas").bounding_box()


def empty_spot(page: Any) -> tuple[float, float]:
    """A point of the canvas with no node under it (bottom left of the visible area)."""
    box = canvas_box(page)
    x, y = box["x"] + 60, box["y"] + box["height"] - 90
    assert page.evaluate(
        "([x, y]) => { const c = window.atelier.app.canvas; const p = c.convertEventToCanvasOffset({clientX: x, clientY: y});"
        " return !c.graph.getNodeOnPos(p[0], p[1]) }",
        [x, y],
    )
    return x, y


def dblclick(page: Any, x: float, y: float) -> None:
    """Two clicks a human moment apart (the canvas ignores two presses within the same millisecond)."""
    page.mouse.click(x, y)
    page.wait_for_timeout(60)
    page.mouse.click(x, y)


def drag(page: Any, a: dict, b: dict, steps: int = 12) -> None:
    page.mouse.move(a["x"], a["y"])
    page.mouse.down()
    page.mouse.move(b["x"], b["y"], steps=steps)
    page.mouse.up()


def new_workflow(page: Any) -> None:
    page.click("#btn-new")
    page.wait_for_function("window.atelier.app.graph._nodes.length === 0")


def add_by_search(page: Any, query: str, at: tuple[float, float]) -> str:
    """Double-click the canvas at `at`, search, press Enter; returns the new node's workflow id."""
    before = set(workflow(page)["nodes"])
    dblclick(page, *at)
    page.wait_for_selector("#node-search .search-input")
    page.keyboard.type(query, delay=15)
    page.wait_for_selector("#node-search .search-item.active")
    page.keyboard.press("Enter")
    page.wait_for_selector("#node-search", state="detached")
    new = set(workflow(page)["nodes"]) - before
    assert len(new) == 1, new
    return new.pop()


def test_page_loads_with_the_portrait_workflow(page: Any) -> None:
    wf = workflow(page)
    assert set(wf["nodes"]) == PORTRAIT_NODES
    assert wf["nodes"]["sampler"]["inputs"]["model"] == {"node": "loader", "output": "MODEL"}
    # the only checkpoint the server has replaces the portrait's default file name
    assert wf["nodes"]["loader"]["inputs"]["ckpt_name"] == "tiny15.safetensors"
    assert page.input_value("#wf-name") == "Portrait"
    # the parameters panel shows the exposed parameters
    for name in ("prompt", "negative", "seed", "steps", "cfg", "width", "height", "checkpoint"):
        assert page.locator(f'.param[data-param="{name}"]').count() == 1
    assert "portrait of a woman" in page.input_value('.param[data-param="prompt"] textarea')
    # the palette comes from the catalogue
    page.wait_for_selector(".palette-cat summary")
    page.fill("#palette-filter", "ksampler")
    assert page.locator('.palette-item[data-type="KSampler"]').count() == 1
    page.fill("#palette-filter", "")
    # prompt boxes sit over their nodes
    assert page.locator(".node-textarea:visible").count() == 2
    page.wait_for_selector("#conn-dot.up")
    page.shot("default workflow")


def test_add_nodes_from_search_and_palette(page: Any) -> None:
    new_workflow(page)
    at = empty_spot(page)
    dblclick(page, *at)
    page.wait_for_selector("#node-search")
    page.keyboard.type("empty lat", delay=15)
    page.wait_for_selector('#node-search .search-item.active[data-type="EmptyLatentImage"]')
    page.shot("search box")
    page.keyboard.press("Enter")
    page.wait_for_selector("#node-search", state="detached")
    assert [n["type"] for n in workflow(page)["nodes"].values()] == ["EmptyLatentImage"]
    # fuzzy search by display name and a click on the result
    box = canvas_box(page)
    dblclick(page, box["x"] + 500, box["y"] + 150)
    page.keyboard.type("vae dec", delay=15)
    page.click('#node-search .search-item[data-type="VAEDecode"]')
    # a click in the palette adds a node too
    page.fill("#palette-filter", "save")
    page.click('.palette-item[data-type="SaveImage"]')
    # and so does dragging from the palette onto the canvas
    page.fill("#palette-filter", "upscale by")
    page.drag_and_drop(
        '.palette-item[data-type="LatentUpscaleBy"]', "#graph-canvas", target_position={"x": 120, "y": 420}
    )
    types = sorted(n["type"] for n in workflow(page)["nodes"].values())
    assert types == ["EmptyLatentImage", "LatentUpscaleBy", "SaveImage", "VAEDecode"]
    page.shot("nodes added")


def test_connect_compatible_sockets_and_refuse_incompatible(page: Any) -> None:
    new_workflow(page)
    box = canvas_box(page)
    loader = add_by_search(page, "checkpoint loader", (box["x"] + 120, box["y"] + 200))
    decode = add_by_search(page, "vaedecode", (box["x"] + 560, box["y"] + 260))
    slot = "([id, kind, name]) => window.atelier.slotPos(id, kind, name)"
    # VAE -> vae: accepted
    drag(page, page.evaluate(slot, [loader, "output", "VAE"]), page.evaluate(slot, [decode, "input", "vae"]))
    assert workflow(page)["nodes"][decode]["inputs"]["vae"] == {"node": loader, "output": "VAE"}
    page.shot("compatible link made")
    # MODEL -> samples (LATENT): refused while dragging; the socket is greyed out, nothing is linked
    a = page.evaluate(slot, [loader, "output", "MODEL"])
    b = page.evaluate(slot, [decode, "input", "samples"])
    page.mouse.move(a["x"], a["y"])
    page.mouse.down()
    page.mouse.move(b["x"], b["y"], steps=12)
    valid = page.evaluate(
        "([id]) => { const n = window.atelier.findNode(id); const c = window.atelier.app.canvas;"
        " const from = c.linkConnector.renderLinks[0]?.fromSlot;"
        " return n.inputs.filter(s => !s.widget).map(s => [s.name, !!from && n.canConnectTo(c.linkConnector.renderLinks[0].node, s, from)]) }",
        [decode],
    )
    assert dict(valid) == {"samples": False, "vae": False}
    page.shot("incompatible link refused while dragging")
    page.mouse.up()
    page.keyboard.press("Escape")
    inputs = workflow(page)["nodes"][decode]["inputs"]
    assert "samples" not in inputs
    assert inputs["vae"] == {"node": loader, "output": "VAE"}
    assert page.locator("#node-search").count() == 0 or page.evaluate(
        "!!document.querySelector('#node-search')"
    )
    page.keyboard.press("Escape")
    # dropping a link on empty canvas offers the nodes that take that type, and connects the chosen one
    a = page.evaluate(slot, [loader, "output", "CLIP"])
    page.mouse.move(a["x"], a["y"])
    page.mouse.down()
    page.mouse.move(box["x"] + 420, box["y"] + box["height"] - 200, steps=10)
    page.mouse.up()
    page.wait_for_selector("#node-search .search-filter")
    assert "CLIP" in page.inner_text("#node-search .search-filter")
    page.keyboard.type("clip text encode", delay=10)
    page.wait_for_selector('#node-search .search-item.active[data-type="CLIPTextEncode"]')
    page.shot("link dropped on empty canvas")
    page.keyboard.press("Enter")
    enc = [k for k, n in workflow(page)["nodes"].items() if n["type"] == "CLIPTextEncode"]
    assert len(enc) == 1
    assert workflow(page)["nodes"][enc[0]]["inputs"]["clip"] == {"node": loader, "output": "CLIP"}
    page.shot("links")


def test_edit_widgets_on_the_canvas(page: Any) -> None:
    # a number widget: click its value, type, Enter
    r = page.evaluate("window.atelier.widgetRect('sampler', 'steps')")
    page.mouse.click(r["x"] + r["width"] / 2, r["y"] + r["height"] / 2)
    page.wait_for_selector(".graphdialog input")
    page.fill(".graphdialog input", "7")
    page.shot("number prompt")
    page.keyboard.press("Enter")
    page.wait_for_function("window.atelier.toWorkflow().nodes.sampler.inputs.steps === 7")
    # the arrows step it, within min/max
    page.mouse.click(r["x"] + 14, r["y"] + r["height"] / 2)
    page.wait_for_function("window.atelier.toWorkflow().nodes.sampler.inputs.steps === 6")
    # steps is an exposed parameter: the panel follows
    page.wait_for_function("document.querySelector('.param[data-param=\"steps\"] input').value === '6'")
    # a combo widget: click, pick from the menu
    r = page.evaluate("window.atelier.widgetRect('sampler', 'sampler_name')")
    page.mouse.click(r["x"] + r["width"] / 2, r["y"] + r["height"] / 2)
    page.wait_for_selector(".litecontextmenu")
    page.shot("combo menu")
    page.click(".litecontextmenu .litemenu-entry:text-is('euler_ancestral')")
    assert workflow(page)["nodes"]["sampler"]["inputs"]["sampler_name"] == "euler_ancestral"
    # the prompt box on the canvas
    box = page.locator('.node-textarea[data-input="text"]').first
    box.fill("a cat in a hat")
    page.mouse.click(*empty_spot(page))
    wf = workflow(page)
    assert wf["nodes"]["positive"]["inputs"]["text"] == "a cat in a hat"
    assert wf["parameters"]["prompt"]["default"] == "a cat in a hat"
    page.wait_for_function(
        "document.querySelector('.param[data-param=\"prompt\"] textarea').value === 'a cat in a hat'"
    )
    # and the other way: the parameters panel writes into the graph
    page.fill('.param[data-param="cfg"] input', "3.5")
    page.keyboard.press("Tab")
    page.wait_for_function("window.atelier.toWorkflow().nodes.sampler.inputs.cfg === 3.5")
    page.shot("widgets edited")


def test_select_move_copy_paste_delete_group_undo(page: Any) -> None:
    n0 = node_count(page)
    rect = page.evaluate("window.atelier.nodeRect('latent')")
    title = {"x": rect["x"] + rect["width"] / 2, "y": rect["y"] + rect["titleHeight"] / 2}
    before = workflow(page)["ui"]["positions"]["latent"]
    drag(page, title, {"x": title["x"] + 80, "y": title["y"] + 60})
    after = workflow(page)["ui"]["positions"]["latent"]
    assert after[0] > before[0] + 20 and after[1] > before[1] + 20
    assert page.evaluate("Object.keys(window.atelier.app.canvas.selected_nodes).length") == 1
    # copy and paste
    page.keyboard.press("Control+c")
    page.mouse.move(title["x"] + 300, title["y"] + 260)
    page.keyboard.press("Control+v")
    page.wait_for_function(f"window.atelier.app.graph._nodes.length === {n0 + 1}")
    ids = workflow(page)["nodes"]
    assert sum(1 for n in ids.values() if n["type"] == "EmptyLatentImage") == 2
    page.shot("pasted")
    # group the selection
    page.keyboard.press("Control+g")
    assert len(workflow(page)["ui"]["groups"]) == 1
    page.shot("grouped")
    # delete the pasted node
    page.keyboard.press("Delete")
    page.wait_for_function(f"window.atelier.app.graph._nodes.length === {n0}")
    # undo brings it back, redo removes it again
    page.keyboard.press("Control+z")
    page.wait_for_function(f"window.atelier.app.graph._nodes.length === {n0 + 1}")
    page.keyboard.press("Control+y")
    page.wait_for_function(f"window.atelier.app.graph._nodes.length === {n0}")
    for _ in range(4):
        page.keyboard.press("Control+z")
    page.wait_for_function("window.atelier.toWorkflow().ui.positions.latent[0] < %f" % (before[0] + 1))
    # zoom with the wheel and pan by dragging the background
    s0 = page.evaluate("window.atelier.app.canvas.ds.scale")
    at = empty_spot(page)
    page.mouse.move(*at)
    page.mouse.wheel(0, -300)
    page.wait_for_function(f"window.atelier.app.canvas.ds.scale > {s0}")
    o0 = page.evaluate("[...window.atelier.app.canvas.ds.offset]")
    drag(page, {"x": at[0], "y": at[1]}, {"x": at[0] + 120, "y": at[1] - 40})
    o1 = page.evaluate("[...window.atelier.app.canvas.ds.offset]")
    assert o1[0] > o0[0]
    page.shot("zoomed and panned")


def test_expose_a_widget_as_parameter(page: Any) -> None:
    rect = page.evaluate("window.atelier.nodeRect('latent')")
    page.mouse.click(rect["x"] + rect["width"] / 2, rect["y"] + rect["titleHeight"] / 2, button="right")
    page.click(".litecontextmenu .litemenu-entry:text-is('Expose as parameter')")
    page.click(".litecontextmenu .litemenu-entry:text-is('batch_size')")
    page.wait_for_selector(".modal input")
    page.fill(".modal input", "batch")
    page.shot("expose dialog")
    page.keyboard.press("Enter")
    page.wait_for_selector('.param[data-param="batch"]')
    wf = workflow(page)
    assert wf["parameters"]["batch"]["targets"] == ["latent.batch_size"]
    assert wf["parameters"]["batch"]["type"] == "INT"
    page.fill('.param[data-param="batch"] input', "2")
    page.keyboard.press("Tab")
    page.wait_for_function("window.atelier.toWorkflow().nodes.latent.inputs.batch_size === 2")
    page.shot("parameter exposed")


SOCKET_COLOURS = """() => {
  const c = window.atelier.app.canvas
  const out = []
  for (const n of c.graph._nodes) {
    for (const s of [...(n.inputs || []), ...(n.outputs || [])]) {
      if (s.widget) continue
      out.push([s.type, c.colourGetter.getConnectedColor(s.type), c.colourGetter.getDisconnectedColor(s.type)])
    }
  }
  const links = Object.values(c.graph.links).map((l) => [l.type, c.constructor.link_type_colors[l.type]])
  return { sockets: out, links }
}"""

PIXELS_AROUND = """([x, y]) => {
  const el = window.atelier.app.canvas.canvas
  const r = el.getBoundingClientRect()
  const k = el.width / r.width
  const d = el.getContext("2d").getImageData(Math.round((x - r.left) * k) - 2, Math.round((y - r.top) * k) - 2, 5, 5).data
  const out = []
  for (let i = 0; i < d.length; i += 4) out.push([d[i], d[i + 1], d[i + 2]])
  return out
}"""


def rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def drawn_near(page: Any, point: dict, colour: str) -> bool:
    """Whether the canvas shows `colour` (#rrggbb) within two pixels of a screen point."""
    page.evaluate("window.atelier.app.canvas.draw(true, true)")
    want = rgb(colour)
    pixels = page.evaluate(PIXELS_AROUND, [point["x"], point["y"]])
    return any(all(abs(a - b) <= 6 for a, b in zip(p, want, strict=True)) for p in pixels)


def test_socket_colours_come_from_the_server(page: Any) -> None:
    types = page.evaluate("fetch('/atelier/v1/types').then((r) => r.json())")
    assert types["IMAGE"]["color"].startswith("#")
    # every socket and link on the canvas is drawn in its type's colour as the server describes it
    drawn = page.evaluate(SOCKET_COLOURS)
    assert {t for t, _, _ in drawn["sockets"]} >= {"MODEL", "CLIP", "VAE", "CONDITIONING", "LATENT", "IMAGE"}
    for t, on, off in drawn["sockets"]:
        assert on == off == types[t]["color"], t
    assert drawn["links"]
    for t, colour in drawn["links"]:
        assert colour == types[t]["color"], t
    # and so it is on the screen: the Decode node's IMAGE output
    image_out = page.evaluate("window.atelier.slotPos('decode', 'output', 'IMAGE')")
    assert drawn_near(page, image_out, types["IMAGE"]["color"])
    page.shot("socket colours")
    # the colours are the server's, not a table of the page's own: change IMAGE's and look again
    changed = {**types, "IMAGE": {**types["IMAGE"], "color": "#ff00ff"}}
    page.route("**/atelier/v1/types", lambda route: route.fulfill(json=changed))
    page.reload()
    page.wait_for_selector("body.ready")
    drawn = page.evaluate(SOCKET_COLOURS)
    assert {on for t, on, _ in drawn["sockets"] if t == "IMAGE"} == {"#ff00ff"}
    assert {colour for t, colour in drawn["links"] if t == "IMAGE"} == {"#ff00ff"}
    assert page.evaluate("window.atelier.app.types.IMAGE.color") == "#ff00ff"
    image_out = page.evaluate("window.atelier.slotPos('decode', 'output', 'IMAGE')")
    assert drawn_near(page, image_out, "#ff00ff")
    assert not drawn_near(page, image_out, types["IMAGE"]["color"])
    page.shot("image sockets from a changed answer")
