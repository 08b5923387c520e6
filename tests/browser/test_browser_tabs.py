"""Workflow tabs in the browser: each tab its own document and undo history, closing a modified one asks,
and the whole session (every tab, its undo steps, the active one) comes back after a reload or a crash."""

from __future__ import annotations

from typing import Any

TABS = "[...document.querySelectorAll('.wf-tab')].map(t => t.querySelector('.wf-tab-name').textContent)"
ACTIVE = "document.querySelector('.wf-tab.active .wf-tab-name').textContent"
MODIFIED = "[...document.querySelectorAll('.wf-tab')].map(t => t.classList.contains('modified'))"


def workflow(page: Any) -> dict:
    return page.evaluate("window.atelier.toWorkflow()")


def set_param(page: Any, name: str, value: object) -> None:
    page.fill(f'.param[data-param="{name}"] input', str(value))
    page.keyboard.press("Tab")
    page.wait_for_function(
        "([n, v]) => String(window.atelier.toWorkflow().parameters[n].default) === v", arg=[name, str(value)]
    )


def open_shipped(page: Any, name: str) -> None:
    page.click("#btn-open")
    page.click(f'.library-item[data-name="{name}"] .library-open')
    page.wait_for_selector(".modal", state="detached")
    page.wait_for_function(
        "(n) => document.querySelector('.wf-tab.active .wf-tab-name').textContent === n", arg=name
    )


def session_has(page: Any, expr: str) -> None:
    """Wait until the session in local storage satisfies `expr` (over `s`, the parsed session)."""
    page.wait_for_function(
        f"(() => {{ const s = JSON.parse(localStorage.getItem('atelier.session') || 'null'); return !!s && ({expr}) }})()"
    )


def test_open_makes_a_tab_and_each_tab_keeps_its_undo(page: Any) -> None:
    assert page.evaluate(TABS) == ["Portrait"]
    set_param(page, "seed", 111)
    set_param(page, "seed", 222)
    assert page.evaluate(MODIFIED) == [True]
    # opening another workflow keeps the first in its tab (the edit is not lost)
    open_shipped(page, "Restyle photo")
    assert page.evaluate(TABS) == ["Portrait", "Restyle photo"]
    assert "scale" in workflow(page)["nodes"]
    assert page.evaluate(MODIFIED) == [True, False]
    page.shot("two tabs")
    # an edit of the second tab stays there
    set_param(page, "denoise", 0.4)
    page.click(".wf-tab >> nth=0")
    page.wait_for_function(ACTIVE + " === 'Portrait'")
    assert workflow(page)["nodes"]["sampler"]["inputs"]["seed"] == 222
    assert page.input_value('.param[data-param="seed"] input') == "222"
    # undo survives loading another workflow: it walks back this tab's own edits
    page.click("#btn-undo")
    page.wait_for_function("window.atelier.toWorkflow().nodes.sampler.inputs.seed === 111")
    page.shot("undo in the first tab")
    page.click(".wf-tab >> nth=1")
    page.wait_for_function(ACTIVE + " === 'Restyle photo'")
    assert workflow(page)["parameters"]["denoise"]["default"] == 0.4
    page.click("#btn-undo")
    page.wait_for_function("window.atelier.toWorkflow().parameters.denoise.default !== 0.4")
    page.click("#btn-redo")
    page.wait_for_function("window.atelier.toWorkflow().parameters.denoise.default === 0.4")
    # New opens an empty tab; the others stay
    page.click("#btn-new")
    page.wait_for_function("window.atelier.app.graph._nodes.length === 0")
    assert page.evaluate(TABS) == ["Portrait", "Restyle photo", "Untitled"]
    # a workflow opened from an untouched empty tab takes its place
    open_shipped(page, "Upscale an image")
    assert page.evaluate(TABS) == ["Portrait", "Restyle photo", "Upscale an image"]
    page.shot("three tabs")


def test_closing_a_modified_tab_asks_first(page: Any) -> None:
    open_shipped(page, "Upscale an image")
    # an unmodified tab closes without a question
    page.click(".wf-tab.active .wf-tab-close")
    page.wait_for_function(TABS + ".length === 1")
    assert page.query_selector(".modal") is None
    assert page.evaluate(ACTIVE) == "Portrait"
    set_param(page, "seed", 5151)
    page.click(".wf-tab.active .wf-tab-close")
    page.wait_for_selector(".modal:has-text('Unsaved changes')")
    page.shot("close asks")
    # cancel: the tab and its edit stay
    page.click(".modal button:text-is('Cancel')")
    page.wait_for_selector(".modal", state="detached")
    assert page.evaluate(TABS) == ["Portrait"]
    assert workflow(page)["nodes"]["sampler"]["inputs"]["seed"] == 5151
    # save: saves it in the library under its name, then closes
    page.fill("#wf-name", "Tabs close-save test")
    page.keyboard.press("Enter")
    page.wait_for_function(ACTIVE + " === 'Tabs close-save test'")
    page.click(".wf-tab.active .wf-tab-close")
    page.click(".modal button:text-is('Save…')")
    page.wait_for_function(TABS + ".length === 1 && " + ACTIVE + " === 'Untitled'")
    assert page.evaluate("window.atelier.app.graph._nodes.length") == 0
    # discard: closes without saving
    open_shipped(page, "Portrait")
    set_param(page, "seed", 6262)
    page.click(".wf-tab.active .wf-tab-close")
    page.click(".modal button:text-is('Discard changes')")
    page.wait_for_function(TABS + ".length === 1")
    # the saved one is in the library with the edit
    page.click("#btn-open")
    page.wait_for_selector('.library-item[data-name="Tabs close-save test"]')
    page.click('.library-item[data-name="Tabs close-save test"] .library-open')
    page.wait_for_function("window.atelier.toWorkflow().nodes.sampler?.inputs.seed === 5151")
    assert page.evaluate(TABS) == ["Tabs close-save test"]


def test_session_of_all_tabs_comes_back_after_reload_and_crash(page: Any) -> None:
    set_param(page, "seed", 7001)
    set_param(page, "seed", 7002)
    open_shipped(page, "Upscale an image")
    page.click(".wf-tab >> nth=0")
    page.wait_for_function(ACTIVE + " === 'Portrait'")
    session_has(page, "s.tabs.length === 2 && s.active === 0 && s.tabs[0].history.current.includes('7002')")
    page.reload()
    page.wait_for_selector("body.ready")
    assert page.evaluate(TABS) == ["Portrait", "Upscale an image"]
    assert page.evaluate(ACTIVE) == "Portrait"
    assert page.evaluate(MODIFIED) == [True, False]
    assert workflow(page)["nodes"]["sampler"]["inputs"]["seed"] == 7002
    page.shot("after reload")
    # the undo steps came back too
    page.click("#btn-undo")
    page.wait_for_function("window.atelier.toWorkflow().nodes.sampler.inputs.seed === 7001")
    page.click(".wf-tab >> nth=1")
    page.wait_for_function(ACTIVE + " === 'Upscale an image'")
    assert set(workflow(page)["nodes"]) == {"load", "upscaler", "upscale", "save"}
    # a crash: a second page of the same browser reads the storage the first one wrote while still open
    # (it never unloaded), right after an edit
    set_param(page, "prefix", "after-crash")
    session_has(page, "s.active === 1 && s.tabs[1].history.current.includes('after-crash')")
    other = page.context.new_page()
    other.goto(page.base_url + "/")
    other.wait_for_selector("body.ready")
    assert other.evaluate(TABS) == ["Portrait", "Upscale an image"]
    assert other.evaluate(ACTIVE) == "Upscale an image"
    assert other.evaluate("window.atelier.toWorkflow().parameters.prefix.default") == "after-crash"
    other.screenshot(path=str(page.shot.folder / "tabs-crash-restore.png"))
    other.close()
