"""The mask editor in the browser: paint on a Load Image node's picture, save, and the masked copy's alpha
is where the stroke went; queue the inpaint pipeline on it; a gallery image into the editor; pen pressure;
the tools (erase, invert, clear, undo, zoom, pan); and how long painting takes on a 1024² image."""

from __future__ import annotations

import io
import json
import math
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

STATE = "window.atelierMaskEditor.state()"


def picture(size: int, seed: int) -> Image.Image:
    """Smooth colours with some noise: a stand-in portrait whose every pixel can be told apart."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([180 * xx + 40, 160 * yy + 50, 120 * (1 - xx) + 60], axis=-1)
    rgb = rgb + rng.normal(0, 12, rgb.shape)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def upload(page: Any, name: str, im: Image.Image) -> None:
    r = httpx.post(page.base_url + "/atelier/v1/upload", files={"image": (name, png(im), "image/png")})
    assert r.status_code == 200 and r.json()["name"] == name, r.text


def fetch_image(page: Any, ref: dict) -> Image.Image:
    q = urllib.parse.urlencode(
        {
            "filename": ref["filename"],
            "subfolder": ref.get("subfolder", ""),
            "type": ref.get("type", "output"),
        }
    )
    with urllib.request.urlopen(f"{page.base_url}/view?{q}", timeout=10) as r:
        im = Image.open(io.BytesIO(r.read()))
        im.load()
    return im


def open_editor(page: Any, ref: dict) -> None:
    """Open the editor as the gallery does (app.openMaskEditor), without waiting for it to close."""
    page.evaluate("(ref) => { window.__maskSaved = window.atelier.app.openMaskEditor(ref) }", ref)
    page.wait_for_selector(".mask-editor.ready")


def set_range(page: Any, selector: str, value: int) -> None:
    page.evaluate(
        "([sel, v]) => { const el = document.querySelector(sel); el.value = String(v); el.dispatchEvent(new Event('input')) }",
        [selector, value],
    )


def screen(page: Any, x: float, y: float) -> tuple[float, float]:
    """The page position of image pixel (x, y) in the editor's current view."""
    sx, sy = page.evaluate(
        """([x, y]) => {
            const s = window.atelierMaskEditor.state()
            const r = document.querySelector('.me-stage').getBoundingClientRect()
            return [r.left + s.tx + x * s.scale, r.top + s.ty + y * s.scale]
        }""",
        [x, y],
    )
    return sx, sy


def column(page: Any, x: int, y0: int, y1: int) -> list[int]:
    """Mask values (0..255) of image column x, rows y0..y1-1."""
    page.evaluate("new Promise(requestAnimationFrame)")
    return page.evaluate(
        "([x, y0, y1]) => { const s = window.atelierMaskEditor.state(); const out = []; for (let y = y0; y < y1; y++) out.push(s.mask[y * s.width + x]); return out }",
        [x, y0, y1],
    )


def mask_sum(page: Any) -> int:
    return page.evaluate(
        f"(() => {{ const m = {STATE}.mask; let t = 0; for (const v of m) t += v; return t }})()"
    )


def pen(page: Any, kind: str, points: list[tuple[float, float, float]], button: int = 0) -> None:
    """A stroke of pointer events with pressures, dispatched on the stage: (image x, image y, pressure)."""
    for i, (x, y, p) in enumerate(points):
        sx, sy = screen(page, x, y)
        kind_of = "pointerdown" if i == 0 else "pointermove"
        page.dispatch_event(
            ".me-stage",
            kind_of,
            {
                "pointerId": 7,
                "pointerType": kind,
                "pressure": p,
                "clientX": sx,
                "clientY": sy,
                "button": button if i == 0 else -1,
                "buttons": 1,
                "isPrimary": True,
                "bubbles": True,
                "cancelable": True,
            },
        )
    sx, sy = screen(page, *points[-1][:2])
    page.dispatch_event(
        ".me-stage",
        "pointerup",
        {
            "pointerId": 7,
            "pointerType": kind,
            "pressure": 0,
            "clientX": sx,
            "clientY": sy,
            "button": button,
            "bubbles": True,
        },
    )


def width_at(page: Any, x: int, y0: int, y1: int) -> int:
    return sum(1 for v in column(page, x, y0, y1) if v >= 128)


def open_inpaint_workflow(page: Any) -> None:
    page.keyboard.press("Control+o")
    name = "Inpaint a face from a mask"
    page.wait_for_selector(f'.library-item[data-name="{name}"]')
    page.click(f'.library-item[data-name="{name}"] .library-open')
    page.wait_for_selector(".modal", state="detached")
    page.wait_for_function("!!window.atelier.findNode('load') && !!window.atelier.findNode('paste')")


def click_widget(page: Any, node: str, name: str) -> None:
    r = page.evaluate("([n, w]) => window.atelier.widgetRect(n, w)", [node, name])
    assert r, (node, name)
    page.mouse.click(r["x"] + r["width"] / 2, r["y"] + r["height"] / 2)


def test_paint_save_and_queue_the_inpaint_pipeline(page: Any, tmp_path: Path) -> None:
    size = 128
    original = picture(size, seed=1)
    (tmp_path / "face.png").write_bytes(png(original))
    open_inpaint_workflow(page)
    page.select_option('.param[data-param="checkpoint"] select', "tiny15.safetensors")
    page.fill('.param[data-param="steps"] input', "2")
    page.keyboard.press("Tab")
    # the picture goes in through the node's own upload button
    with page.expect_file_chooser() as chooser:
        click_widget(page, "load", "choose image to upload")
    chooser.value.set_files(str(tmp_path / "face.png"))
    page.wait_for_function(
        "window.atelier.findNode('load').widgets.find(w => w.name === 'image').value === 'face.png'"
    )
    click_widget(page, "load", "open in mask editor")
    page.wait_for_selector(".mask-editor.ready")
    assert page.evaluate(f"{STATE}.width") == size and mask_sum(page) == 0
    # a hard round brush 20 px wide, dragged with the mouse across the middle of the face
    set_range(page, ".me-size", 20)
    set_range(page, ".me-hardness", 100)
    a, b = (32.0, 60.0), (96.0, 70.0)
    page.mouse.move(*screen(page, *a))
    page.mouse.down()
    page.mouse.move(*screen(page, *b), steps=25)
    page.mouse.up()
    page.wait_for_timeout(100)
    page.shot("a stroke painted over the picture")
    page.click(".me-save")
    page.wait_for_selector(".mask-editor", state="detached")
    page.wait_for_function(
        "window.atelier.findNode('load').widgets.find(w => w.name === 'image').value === 'face_masked.png'"
    )
    assert page.evaluate("window.atelier.toWorkflow().parameters.image.default") == "face_masked.png"
    page.wait_for_timeout(300)  # the node draws its new picture
    page.shot("the masked copy in the load image node")

    # the saved copy: the original's colours, alpha 0 inside the stroke, 255 outside it
    saved = fetch_image(page, {"filename": "face_masked.png", "type": "input"})
    assert saved.mode == "RGBA" and saved.size == (size, size)
    rgba = np.asarray(saved)
    assert np.array_equal(rgba[..., :3], np.asarray(original))
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    (ax, ay), (bx, by) = a, b
    t = np.clip(((xx - ax) * (bx - ax) + (yy - ay) * (by - ay)) / ((bx - ax) ** 2 + (by - ay) ** 2), 0, 1)
    dist = np.hypot(xx - (ax + t * (bx - ax)), yy - (ay + t * (by - ay)))
    alpha = rgba[..., 3]
    inside, outside = dist <= 10 - 2, dist >= 10 + 1
    assert inside.sum() > 1000 and (alpha[inside] == 0).all()
    assert (alpha[outside] == 255).all()

    # queue the inpaint pipeline on it: only the painted part (grown by 8 px) changes
    page.keyboard.press("Control+Enter")
    page.wait_for_function("window.atelier.runtimeOf('save').images.length > 0", timeout=120000)
    st = page.evaluate("window.atelier.runtimeOf('save').status")
    assert st == "done", st
    result_ref = page.evaluate("window.atelier.runtimeOf('save').images[0]")
    result = np.asarray(fetch_image(page, result_ref).convert("RGB"), dtype=np.int32)
    before = np.asarray(original, dtype=np.int32)
    far = dist >= 10 + 8 + 4
    assert np.abs(result[far] - before[far]).max() <= 1
    assert np.abs(result[inside] - before[inside]).mean() > 10
    page.wait_for_selector("#gallery .tile img")
    page.shot("the inpainted picture on the canvas and in the gallery")

    # an output of the gallery into the editor: the masked copy lands in the input folder and the node
    page.click("#gallery .tile img")
    page.wait_for_selector("#viewer")
    page.shot("the viewer with its mask editor button")
    page.click("#viewer >> text=Mask editor")
    page.wait_for_selector(".mask-editor.ready")
    assert page.evaluate(f"{STATE}.width") == size
    set_range(page, ".me-size", 16)
    page.mouse.move(*screen(page, 20, 100))
    page.mouse.down()
    page.mouse.move(*screen(page, 30, 105), steps=5)
    page.mouse.up()
    page.shot("an output of the gallery in the mask editor")
    page.keyboard.press("Control+s")
    page.wait_for_selector(".mask-editor", state="detached")
    stem = result_ref["filename"].rsplit(".", 1)[0]
    page.wait_for_function(
        "(v) => window.atelier.findNode('load').widgets.find(w => w.name === 'image').value === v",
        arg=f"{stem}_masked.png",
    )
    copy = np.asarray(fetch_image(page, {"filename": f"{stem}_masked.png", "type": "input"}))
    assert copy[100, 20, 3] == 0 and copy[15, 100, 3] == 255
    assert np.abs(copy[..., :3].astype(np.int32) - result).max() == 0

    # the node that shows an image offers the editor in its menu too (brought into view first: the first
    # view is at a legible zoom, which leaves the right end of this workflow off screen)
    page.evaluate(
        "(() => { const c = window.atelier.app.canvas; c.centerOnNode(window.atelier.findNode('save'));"
        " c.setDirty(true, true) })()"
    )
    # litegraph finds the node under the pointer among the nodes it last drew: let it draw the new view
    page.evaluate("new Promise((ok) => requestAnimationFrame(() => requestAnimationFrame(ok)))")
    r = page.evaluate("window.atelier.nodeRect('save')")
    page.mouse.click(r["x"] + 40, r["y"] + r["titleHeight"] / 2, button="right")
    page.click(".litecontextmenu >> text=Paint a mask on this image")
    page.wait_for_selector(".mask-editor.ready")
    page.click(".me-cancel")
    page.wait_for_selector(".mask-editor", state="detached")


def test_pen_pressure_and_the_tools(page: Any) -> None:
    size = 640
    upload(page, "pressure.png", picture(size, seed=2))
    canvas_before = page.evaluate("JSON.stringify(window.atelier.toWorkflow().nodes)")
    open_editor(page, {"filename": "pressure.png", "type": "input"})
    set_range(page, ".me-size", 80)
    set_range(page, ".me-hardness", 100)
    assert page.evaluate(f"{STATE}.settings.pressure") == "size"
    # a pen stroke pressing harder from left to right: its width follows, 80 px at full pressure
    xs = list(range(100, 541, 5))
    pen(page, "pen", [(x, 120, 0.2 + 0.8 * (x - 100) / 440) for x in xs])
    widths = {x: width_at(page, x, 40, 200) for x in (120, 320, 520)}
    for x, w in widths.items():
        expected = 80 * (0.2 + 0.8 * (x - 100) / 440)
        assert abs(w - expected) <= 2.5, (x, w, expected)
    # a light pen stroke and a mouse stroke: the mouse's 0.5 "pressure" is not a pen's, full size
    pen(page, "pen", [(x, 260, 0.25) for x in xs])
    pen(page, "mouse", [(x, 380, 0.5) for x in xs])
    assert abs(width_at(page, 320, 200, 320) - 20) <= 2
    assert abs(width_at(page, 320, 320, 440) - 80) <= 2
    # pressure as opacity: the width stays, the strength follows
    page.select_option(".me-pressure", "opacity")
    pen(page, "pen", [(x, 520, 0.5) for x in xs])
    col = column(page, 320, 460, 600)
    assert abs(max(col) - 128) <= 2 and abs(sum(1 for v in col if v > 0) - 80) <= 2
    page.shot("pen strokes of growing, light and full pressure, and half opacity")

    # erase across the strokes (right button: the other tool), undo it, redo it
    page.select_option(".me-pressure", "size")
    before = column(page, 320, 0, size)
    pen(page, "mouse", [(320, y, 0.5) for y in range(40, 600, 5)], button=2)
    assert max(column(page, 320, 0, size)) == 0
    page.keyboard.press("Control+z")
    assert column(page, 320, 0, size) == before
    page.keyboard.press("Control+y")
    assert max(column(page, 320, 0, size)) == 0
    page.keyboard.press("Control+z")
    # invert, clear, undo
    total = mask_sum(page)
    page.keyboard.press("i")
    assert mask_sum(page) == 255 * size * size - total
    page.click(".me-clear")
    assert mask_sum(page) == 0
    page.click(".me-undo")
    page.click(".me-undo")
    assert mask_sum(page) == total
    # the eraser tool with a soft edge: the painted stroke gets a soft hole
    page.keyboard.press("e")
    set_range(page, ".me-hardness", 0)
    pen(page, "mouse", [(320, y, 0.5) for y in range(80, 170, 5)])
    assert all(120 <= v <= 135 for v in column(page, 300, 105, 136))  # half-erased, 20 px from its middle
    assert max(column(page, 320, 105, 136)) <= 8  # its middle is gone (soft: all but a trace)
    page.keyboard.press("b")

    # zoom on the wheel keeps the image point under the pointer; the middle button and space+drag pan
    s0 = page.evaluate(STATE)
    px, py = screen(page, 200, 300)
    page.mouse.move(px, py)
    page.mouse.wheel(0, -400)
    page.wait_for_function(f"{STATE}.scale > {s0['scale']} * 1.5")
    assert max(abs(a - b) for a, b in zip(screen(page, 200, 300), (px, py), strict=True)) < 1.5
    page.shot("zoomed in at the pointer")
    s1 = page.evaluate(STATE)
    page.mouse.down(button="middle")
    page.mouse.move(px + 120, py + 60, steps=4)
    page.mouse.up(button="middle")
    s2 = page.evaluate(STATE)
    assert abs(s2["tx"] - s1["tx"] - 120) < 1 and abs(s2["ty"] - s1["ty"] - 60) < 1
    painted = mask_sum(page)
    page.keyboard.down(" ")
    page.mouse.down()
    page.mouse.move(px - 50, py + 60, steps=4)
    page.mouse.up()
    page.keyboard.up(" ")
    s3 = page.evaluate(STATE)
    assert abs(s3["tx"] - s2["tx"] + 170) < 1 and mask_sum(page) == painted  # panned, nothing painted
    page.keyboard.press("0")
    assert abs(page.evaluate(STATE)["scale"] - s0["scale"]) < 1e-6

    # the canvas's shortcuts do not run under the editor: select all + Delete leave the workflow alone
    page.keyboard.press("Control+a")
    page.keyboard.press("Delete")
    page.keyboard.press("Control+z")  # the editor's undo, not the canvas's
    # Esc with an unsaved mask asks for a second Esc; the editor then closes without saving
    page.keyboard.press("Escape")
    assert page.locator(".mask-editor").count() == 1
    page.keyboard.press("Escape")
    page.wait_for_selector(".mask-editor", state="detached")
    assert page.evaluate("window.__maskSaved") is None
    assert page.evaluate("JSON.stringify(window.atelier.toWorkflow().nodes)") == canvas_before


def test_a_mask_that_does_not_fit_is_refused_with_the_reason(page: Any) -> None:
    """The image changed under the editor (another size now): the save says why it failed and keeps the
    editor open with the mask."""
    upload(page, "shifty.png", picture(64, seed=3))
    open_editor(page, {"filename": "shifty.png", "type": "input"})
    page.mouse.move(*screen(page, 32, 32))
    page.mouse.down()
    page.mouse.up()
    r = httpx.post(
        page.base_url + "/atelier/v1/upload",
        files={"image": ("shifty.png", png(picture(48, seed=3)), "image/png")},
        data={"overwrite": "true"},
    )
    assert r.status_code == 200
    page.click(".me-save")
    page.wait_for_selector(".toast-error")
    msg = page.inner_text(".toast-error")
    assert "the mask is 64x64 but the image 'shifty.png' is 48x48" in msg, msg
    assert page.locator(".mask-editor").count() == 1 and mask_sum(page) > 0
    page.shot("a save refused with the reason")
    page.click(".me-cancel")


@pytest.mark.slow  # a measurement (its figures also come from bench/): --runslow
def test_painting_speed_on_a_1024_image(page: Any, browser: Any, artifacts: Path) -> None:
    """Prints how long the editor takes per pointer event while painting on a 1024² image (no timed
    assert): handler time per event, overlay redraw per frame, and the trace's longest pointermove."""
    upload(page, "big.png", picture(1024, seed=4))
    open_editor(page, {"filename": "big.png", "type": "input"})
    set_range(page, ".me-size", 96)
    set_range(page, ".me-hardness", 50)
    page.evaluate("new Promise(requestAnimationFrame)")
    # the first full draw of the overlay is not painting: count from here
    page.evaluate(f"Object.assign({STATE}.draws, {{count: 0, ms: 0, maxMs: 0}})")
    # 600 synthetic moves, 4 a frame (a 240 Hz pen), timed in the page
    timings = page.evaluate(
        """async () => {
            const st = document.querySelector('.me-stage')
            const r = st.getBoundingClientRect()
            const cx = r.left + r.width / 2, cy = r.top + r.height / 2, rad = Math.min(r.width, r.height) / 3
            const ev = (type, i) => new PointerEvent(type, {pointerId: 9, pointerType: 'pen', pressure: 0.8,
                clientX: cx + rad * Math.cos(i / 40) * Math.sin(i / 97), clientY: cy + rad * Math.sin(i / 40),
                button: type === 'pointermove' ? -1 : 0, buttons: 1, bubbles: true, cancelable: true})
            st.dispatchEvent(ev('pointerdown', 0))
            const per = []
            for (let i = 1; i <= 600; i++) {
                const t0 = performance.now()
                st.dispatchEvent(ev('pointermove', i))
                per.push(performance.now() - t0)
                if (i % 4 === 0) await new Promise(requestAnimationFrame)
            }
            st.dispatchEvent(ev('pointerup', 600))
            await new Promise(requestAnimationFrame)
            const slowest = per.map((ms, i) => [i, ms]).sort((a, b) => b[1] - a[1]).slice(0, 3)
            per.sort((a, b) => a - b)
            const s = window.atelierMaskEditor.state()
            return {events: per.length, mean: per.reduce((a, b) => a + b, 0) / per.length,
                    p95: per[Math.floor(per.length * 0.95)], max: per[per.length - 1], slowest,
                    draws: s.draws.count, drawMean: s.draws.ms / s.draws.count, drawMax: s.draws.maxMs}
        }"""
    )
    # real mouse input, recorded in a Chromium performance trace
    trace = artifacts / "maskeditor-trace.json"
    browser.start_tracing(page=page, path=str(trace), categories=["devtools.timeline"])
    cx, cy = screen(page, 512, 512)
    page.mouse.move(cx - 300, cy)
    page.mouse.down()
    n = 0
    for i in range(200):
        page.mouse.move(cx - 300 + 3 * i, cy + 150 * math.sin(i / 15))
        n += 1
    page.mouse.up()
    page.evaluate("new Promise(requestAnimationFrame)")
    browser.stop_tracing()
    events = json.loads(trace.read_text())
    events = events["traceEvents"] if isinstance(events, dict) else events
    moves = [
        e["dur"] / 1000
        for e in events
        if e.get("name") == "EventDispatch" and e.get("args", {}).get("data", {}).get("type") == "pointermove"
    ]
    moves.sort()
    print(
        f"\nmask editor on 1024x1024, brush 96 px: {timings['events']} synthetic pen moves: "
        f"{timings['mean']:.3f} ms mean, {timings['p95']:.3f} ms p95, {timings['max']:.3f} ms max per event "
        f"(slowest [event, ms]: {timings['slowest']}); "
        f"{timings['draws']} overlay redraws: {timings['drawMean']:.3f} ms mean, {timings['drawMax']:.3f} ms max"
    )
    if moves:
        print(
            f"trace of {n} real mouse moves: {len(moves)} pointermove dispatches, "
            f"{sum(moves) / len(moves):.3f} ms mean, {moves[int(len(moves) * 0.95)]:.3f} ms p95, {moves[-1]:.3f} ms max"
        )
    assert timings["events"] == 600 and timings["draws"] > 0 and moves
    page.shot("a long stroke on a 1024 image")
