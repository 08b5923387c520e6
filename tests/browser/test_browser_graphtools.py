"""Graph tools in a real browser: bypass and mute, link styles, the minimap, node colours, Reroute and Note."""

from __future__ import annotations

from typing import Any

from tests.browser.test_browser_canvas import PIXELS_AROUND, workflow


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
