"""Reusable pipelines on the canvas, in a real browser: make one of the portrait's nodes, run it (the same
picture), open it and edit inside (breadcrumb back out, only what depends on the edit runs again), save it to
the library, add another from the node search, update pinned nodes to a newer library version."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import atelier_serve

RENDER = ["sampler", "decode", "save"]


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pipeline-library")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, library: Path) -> Iterator[str]:
    """The page's server, with its own pipeline library folder (saves go there, not to ./pipelines)."""
    with atelier_serve(
        tmp_path_factory.mktemp("atelier-serve-pipelines"),
        ["--pipelines-dir", str(library)],
        "/atelier/v1/system",
    ) as url:
        yield url


def workflow(page: Any) -> dict:
    return page.evaluate("window.atelier.toWorkflow()")


def set_param(page: Any, name: str, value: object) -> None:
    page.fill(f'.param[data-param="{name}"] input', str(value))
    page.keyboard.press("Tab")
    page.wait_for_function(
        "([n, v]) => String(window.atelier.toWorkflow().parameters[n].default) === v", arg=[name, str(value)]
    )


def node_events(page: Any, job: int) -> dict[str, str]:
    """node id -> started / cached, of the `job`-th job this page ran (1-based)."""
    return page.evaluate(
        """(k) => {
          const log = window.atelier.eventLog
          const jobs = [...new Set(log.filter(e => e.type === 'job_started').map(e => e.job))]
          const out = {}
          for (const e of log) if (e.job === jobs[k - 1] && (e.type === 'node_started' || e.type === 'node_cached'))
            out[e.node] = e.type === 'node_started' ? 'started' : 'cached'
          return out
        }""",
        job,
    )


def run(page: Any, n: int) -> dict:
    """Queue (Ctrl+Enter) and wait for the page's n-th job to finish; the job as the server's history has it."""
    page.locator("#graph-canvas").focus()
    page.keyboard.press("Control+Enter")
    page.wait_for_function(
        f"window.atelier.eventLog.filter(e => e.type === 'job_finished').length === {n}", timeout=90000
    )
    job = page.evaluate(f"window.atelier.eventLog.filter(e => e.type === 'job_finished')[{n - 1}].job")
    return page.request.get(f"{page.base_url}/atelier/v1/jobs/{job}").json()


def pixels(page: Any, job: dict, node: str) -> bytes:
    from PIL import Image

    img = job["outputs"][node]["images"][0]
    q = f"filename={img['filename']}&subfolder={img.get('subfolder', '')}&type={img.get('type', 'output')}"
    body = page.request.get(f"{page.base_url}/view?{q}").body()
    with Image.open(io.BytesIO(body)) as im:
        return im.convert("RGB").tobytes()


def title_point(page: Any, node: str) -> tuple[float, float]:
    r = page.evaluate(f"window.atelier.nodeRect({json.dumps(node)})")
    return r["x"] + r["width"] / 2, r["y"] + r["titleHeight"] / 2


def body_point(page: Any, node: str) -> tuple[float, float]:
    r = page.evaluate(f"window.atelier.nodeRect({json.dumps(node)})")
    return r["x"] + r["width"] / 2, r["y"] + r["titleHeight"] + 8


def menu(page: Any, node: str, entry: str) -> None:
    """Select a node by its title, right-click it, pick `entry` of its menu."""
    item = page.locator(f".litecontextmenu .litemenu-entry:text-is({json.dumps(entry, ensure_ascii=False)})")
    at = title_point(page, node)
    page.wait_for_timeout(
        400
    )  # apart from the click before (a menu entry's): the canvas would see a double-click
    page.mouse.move(*at)
    page.mouse.click(*at)
    page.wait_for_function(
        "(id) => Object.values(window.atelier.app.canvas.selected_nodes).some(n => n.properties.aid === id)",
        arg=node,
    )
    for attempt in range(3):
        page.wait_for_timeout(400)  # apart from the selecting click: not a double-click
        page.mouse.click(*at, button="right")
        try:
            item.wait_for(timeout=8000)
            break
        except Exception:
            shown = page.evaluate(
                "[...document.querySelectorAll('.litecontextmenu .litemenu-entry')].map(e => e.textContent)"
            )
            print(f"menu of {node} without {entry!r} (attempt {attempt + 1}): {shown}")
            if attempt == 2:
                raise
            page.keyboard.press("Escape")
    item.click()


def test_make_run_edit_inside_save_and_update_a_pipeline(page: Any, library: Path) -> None:
    for name, value in (("steps", 2), ("width", 64), ("height", 64), ("seed", 7)):
        set_param(page, name, value)
    before = run(page, 1)
    assert before["status"] == "success", before
    picture = pixels(page, before, "save")

    # select the sampler, the decoder and the saver; Make pipeline
    page.mouse.click(*title_point(page, "sampler"))
    for node in ("decode", "save"):
        page.keyboard.down("Shift")
        page.mouse.click(*title_point(page, node))
        page.keyboard.up("Shift")
    assert sorted(
        page.evaluate("Object.values(window.atelier.app.canvas.selected_nodes).map(n => n.properties.aid)")
    ) == sorted(RENDER)
    page.click("#btn-make-pipeline")
    page.wait_for_selector(".modal .pl-dialog")
    # the values workflow parameters set are offered checked, under the parameters' names
    checked = page.evaluate(
        "[...document.querySelectorAll('.pl-value')].filter(r => r.querySelector('input[type=checkbox]').checked)"
        ".map(r => r.querySelector('.pl-name').value)"
    )
    assert sorted(checked) == ["cfg", "sampler", "scheduler", "seed", "steps"]
    page.fill('.modal input[name="pipeline-name"]', "render pass")
    page.fill('.modal textarea[name="pipeline-description"]', "sample, decode and save")
    page.shot("make pipeline dialog")
    page.click(".modal .btn-primary")
    page.wait_for_selector(".modal", state="detached")
    wf = workflow(page)
    assert set(wf["nodes"]) == {"loader", "positive", "negative", "latent", "render_pass"}
    node = wf["nodes"]["render_pass"]
    assert node["type"] == "pipeline:render_pass"
    assert node["inputs"]["model"] == {"node": "loader", "output": "MODEL"}
    assert node["inputs"]["vae"] == {"node": "loader", "output": "VAE"}
    assert node["inputs"]["latent_image"] == {"node": "latent", "output": "LATENT"}
    assert node["inputs"]["seed"] == 7 and node["inputs"]["steps"] == 2
    assert wf["parameters"]["seed"]["targets"] == ["render_pass.seed"]
    definition = wf["definitions"]["render_pass"]
    assert set(definition["nodes"]) == set(RENDER)
    assert definition["parameters"]["model"] == {"type": "MODEL", "targets": ["sampler.model"]}
    # the workflow's own declared outputs now come out of the pipeline node
    assert definition["outputs"]["IMAGE"] == {"type": "IMAGE", "node": "decode", "output": "IMAGE"}
    assert definition["outputs"]["LATENT"] == {"type": "LATENT", "node": "sampler", "output": "LATENT"}
    assert wf["outputs"]["image"]["node"] == "render_pass" and wf["outputs"]["image"]["output"] == "IMAGE"
    assert definition["metadata"] == {
        "name": "render pass",
        "version": "1.0.0",
        "description": "sample, decode and save",
    }
    page.shot("pipeline node replaces the selection")

    # the same picture, computed again (the cache cleared)
    assert page.request.post(f"{page.base_url}/atelier/v1/cache/clear").ok
    after = run(page, 2)
    assert after["status"] == "success", after
    assert set(after["outputs"]) == {"render_pass:save"}
    assert pixels(page, after, "render_pass:save") == picture
    ev = node_events(page, 2)
    assert {ev[f"render_pass:{n}"] for n in RENDER} == {"started"}, ev

    # open it (double-click): the inner graph, a breadcrumb back out
    x, y = body_point(page, "render_pass")
    page.mouse.dblclick(x, y)
    page.wait_for_selector(".breadcrumb.shown")
    assert page.inner_text(".breadcrumb").replace("\n", " ").split("›") == ["Portrait ", " render pass"]
    ids = page.evaluate("window.atelier.app.graph._nodes.map(n => n.properties.aid).sort()")
    assert ids == [f"render_pass:{n}" for n in ("decode", "sampler", "save")]
    wf = workflow(page)
    assert wf["ui"]["editing"] == ["render_pass"]
    # the title bar (and Save) still name the workflow; the definition keeps its own metadata
    assert page.input_value("#wf-name") == "Portrait" and wf["metadata"]["name"] == "Portrait"
    assert wf["definitions"]["render_pass"]["metadata"]["name"] == "render pass"
    # edit a value inside: the saved file's name
    page.evaluate(
        """() => { const n = window.atelier.findNode('render_pass:save')
          const w = n.widgets.find(w => w.name === 'filename_prefix'); w.value = 'inside'
          window.atelier.app.onWidgetChanged(n, w) }"""
    )
    page.wait_for_function(
        "window.atelier.toWorkflow().definitions.render_pass.nodes.save.inputs.filename_prefix === 'inside'"
    )
    # run from inside: only the saver runs again, the events land on the inner nodes
    third = run(page, 3)
    ev = node_events(page, 3)
    assert ev["render_pass:sampler"] == "cached" and ev["render_pass:decode"] == "cached", ev
    assert ev["render_pass:save"] == "started", ev
    assert third["outputs"]["render_pass:save"]["images"][0]["filename"].startswith("inside")
    page.wait_for_function("window.atelier.runtimeOf('render_pass:save').images.length > 0")
    page.shot("inside the pipeline after a run")

    # back out by the breadcrumb: the edit is in the definition
    page.click(".breadcrumb button.crumb")
    page.wait_for_selector(".breadcrumb.shown", state="detached")
    wf = workflow(page)
    assert "editing" not in wf["ui"] and "render_pass" in wf["nodes"]
    assert wf["definitions"]["render_pass"]["nodes"]["save"]["inputs"]["filename_prefix"] == "inside"
    assert wf["definitions"]["render_pass"]["metadata"]["version"] == "1.0.0"
    assert wf["metadata"]["name"] == "Portrait" and page.input_value("#wf-name") == "Portrait"
    # undo goes back inside, redo out again
    page.wait_for_function(
        "window.atelier.app.history.current && !JSON.parse(window.atelier.app.history.current).ui.editing"
    )
    page.evaluate("window.atelier.undo()")
    assert workflow(page)["ui"]["editing"] == ["render_pass"]
    assert page.is_visible(".breadcrumb.shown")
    page.evaluate("window.atelier.redo()")
    assert "editing" not in workflow(page)["ui"]
    page.shot("back out")

    # save it to the library: the definition goes, the node uses the library's, pinned
    menu(page, "render_pass", "Save pipeline to library…")
    page.wait_for_selector('.modal input[name="library-version"]')
    assert page.input_value('.modal input[name="library-name"]') == "render_pass"
    assert page.input_value('.modal input[name="library-version"]') == "1.0.0"
    page.click(".modal .btn-primary")
    page.wait_for_selector(".modal", state="detached")
    saved = json.loads((library / "render_pass@1.0.0.json").read_text())
    assert saved["nodes"]["save"]["inputs"]["filename_prefix"] == "inside"
    wf = workflow(page)
    assert "definitions" not in wf
    assert wf["nodes"]["render_pass"]["type"] == "pipeline:render_pass"
    assert wf["nodes"]["render_pass"]["version"] == "1.0.0"
    assert wf["nodes"]["render_pass"]["inputs"]["model"] == {"node": "loader", "output": "MODEL"}
    # it runs from the library: every node as it was, so all from the cache
    fourth = run(page, 4)
    assert fourth["status"] == "success", fourth
    assert set(node_events(page, 4).values()) == {"cached"}

    # a second instance from the node search
    box = page.locator("#graph-canvas").bounding_box()
    at = (box["x"] + 120, box["y"] + box["height"] - 120)
    page.mouse.click(*at)
    page.wait_for_timeout(60)
    page.mouse.click(*at)
    page.wait_for_selector("#node-search .search-input")
    page.keyboard.type("render pass", delay=15)
    page.wait_for_selector('#node-search .search-item.active[data-type="pipeline:render_pass"]')
    page.keyboard.press("Enter")
    page.wait_for_selector("#node-search", state="detached")
    wf = workflow(page)
    second = next(
        k for k, n in wf["nodes"].items() if n["type"] == "pipeline:render_pass" and k != "render_pass"
    )
    assert wf["nodes"][second]["version"] == "1.0.0"

    # a newer compatible version in the library: both nodes offer the update, which keeps the links
    newer = json.loads(json.dumps(saved))
    newer["metadata"]["version"] = "1.1.0"
    newer["nodes"]["save"]["inputs"]["filename_prefix"] = "newer"
    r = page.request.post(
        f"{page.base_url}/atelier/v1/pipelines", data={"name": "render_pass", "workflow": newer}
    )
    assert r.status == 201, r.text()
    page.evaluate("window.atelier.pipelines.refreshLibrary()")
    ups = page.evaluate(
        "(ids) => ids.map(id => window.atelier.pipelines.updateFor(window.atelier.findNode(id)))",
        ["render_pass", second],
    )
    assert ups == [{"version": "1.1.0", "major": False}] * 2
    page.shot("update badges on both instances")
    menu(page, "render_pass", "Update to v1.1.0")
    page.wait_for_function(
        "Object.values(window.atelier.toWorkflow().nodes).filter(n => n.version === '1.1.0').length === 2"
    )
    wf = workflow(page)
    assert wf["nodes"]["render_pass"]["inputs"]["model"] == {"node": "loader", "output": "MODEL"}
    assert wf["nodes"]["render_pass"]["inputs"]["seed"] == 7

    # a major version: the dialog says what changes; updating keeps the links whose names remain
    major = json.loads(json.dumps(newer))
    major["metadata"]["version"] = "2.0.0"
    del major["outputs"]["LATENT"]
    major["parameters"]["denoise"] = {"type": "FLOAT", "default": 1.0, "targets": ["sampler.denoise"]}
    r = page.request.post(
        f"{page.base_url}/atelier/v1/pipelines", data={"name": "render_pass", "workflow": major}
    )
    assert r.status == 201, r.text()
    page.evaluate("window.atelier.pipelines.refreshLibrary()")
    menu(page, "render_pass", "Update to v2.0.0 (major)")
    page.wait_for_selector(".modal .pl-changes")
    assert page.inner_text(".modal .pl-changes").splitlines() == [
        "input 'denoise' added",
        "output 'LATENT' removed",
    ]
    page.shot("major update dialog")
    page.click(".modal .btn-primary")
    page.wait_for_function("window.atelier.toWorkflow().nodes.render_pass.version === '2.0.0'")
    wf = workflow(page)
    assert wf["nodes"]["render_pass"]["inputs"]["model"] == {"node": "loader", "output": "MODEL"}
    assert wf["nodes"]["render_pass"]["inputs"]["vae"] == {"node": "loader", "output": "VAE"}
    assert wf["nodes"][second]["version"] == "2.0.0"

    # editing a library pipeline makes an inline copy; saving it again over its version is refused (409)
    menu(page, "render_pass", "Edit inside")
    page.wait_for_selector(".breadcrumb.shown")
    page.click(".breadcrumb button.crumb")
    page.wait_for_selector(".breadcrumb.shown", state="detached")
    assert workflow(page)["definitions"]["render_pass"]["metadata"]["version"] == "2.0.0"
    menu(page, "render_pass", "Save pipeline to library…")
    assert page.input_value('.modal input[name="library-version"]') == "2.1.0"
    page.fill('.modal input[name="library-version"]', "2.0.0")
    page.click(".modal .btn-primary")
    page.wait_for_function(
        "document.querySelector('.modal .pl-error').textContent.includes('already installed')"
    )
    page.shot("saving over an installed version is refused")
    page.fill('.modal input[name="library-version"]', "2.1.0")
    page.click(".modal .btn-primary")
    page.wait_for_selector(".modal", state="detached")
    assert (library / "render_pass@2.1.0.json").is_file()
    wf = workflow(page)
    assert "definitions" not in wf
    assert {wf["nodes"][k]["version"] for k in ("render_pass", second)} == {"2.1.0"}
    page.shot("saved as a new version")


def test_nodes_added_inside_a_pipeline_join_its_definition(page: Any) -> None:
    """A pipeline of one node (its values exposed as the workflow's parameters were); a node added inside
    gets a path id on the canvas and its own id in the definition; every instance uses the edited one."""
    page.mouse.click(*title_point(page, "latent"))
    page.click("#btn-make-pipeline")
    page.wait_for_selector(".modal .pl-dialog")
    page.fill('.modal input[name="pipeline-name"]', "canvas size")
    page.click(".modal .btn-primary")
    page.wait_for_selector(".modal", state="detached")
    wf = workflow(page)
    size = {k: wf["parameters"][k]["default"] for k in ("width", "height")}
    assert wf["nodes"]["canvas_size"]["inputs"] == size  # batch_size, not exposed, stays inside
    assert wf["parameters"]["width"]["targets"] == ["canvas_size.width"]
    assert wf["nodes"]["sampler"]["inputs"]["latent_image"] == {"node": "canvas_size", "output": "LATENT"}
    menu(page, "canvas_size", "Edit inside")  # (the round trip above opens one by double-click)
    page.wait_for_selector(".breadcrumb.shown")
    assert page.inner_text(".breadcrumb .crumb.current") == "canvas size"
    box = page.locator("#graph-canvas").bounding_box()
    at = (box["x"] + 160, box["y"] + box["height"] - 140)
    page.mouse.click(*at)
    page.wait_for_timeout(60)
    page.mouse.click(*at)
    page.wait_for_selector("#node-search .search-input")
    page.keyboard.type("latent upscale by", delay=15)
    page.wait_for_selector('#node-search .search-item.active[data-type="LatentUpscaleBy"]')
    page.keyboard.press("Enter")
    page.wait_for_selector("#node-search", state="detached")
    ids = page.evaluate("window.atelier.app.graph._nodes.map(n => n.properties.aid)")
    added = next(i for i in ids if i != "canvas_size:latent")
    assert added.startswith("canvas_size:"), ids
    page.shot("a node added inside")
    # and a value inside the server refuses
    page.evaluate(
        """() => { const n = window.atelier.findNode('canvas_size:latent')
          const w = n.widgets.find(w => w.name === 'batch_size'); w.value = 0
          window.atelier.app.onWidgetChanged(n, w) }"""
    )
    page.keyboard.press("Alt+ArrowUp")
    page.wait_for_selector(".breadcrumb.shown", state="detached")
    inner = workflow(page)["definitions"]["canvas_size"]["nodes"]
    assert set(inner) == {"latent", added.removeprefix("canvas_size:")}
    assert inner[added.removeprefix("canvas_size:")]["type"] == "LatentUpscaleBy"
    # the workflow still checks out with the server (the new inner node is not wired: its samples input is
    # reported by its path)
    errors = page.evaluate(
        "fetch('/atelier/v1/validate', {method: 'POST', headers: {'Content-Type': 'application/json'},"
        " body: JSON.stringify({workflow: window.atelier.toWorkflow()})}).then(r => r.json())"
    )["errors"]
    assert any(e["node"] == added and e["input"] == "samples" for e in errors), errors
    # queued from outside, the refusal shows on the pipeline node (its inner node's problem, by path; the
    # unwired node computes nothing a run needs, so only validation names it)
    page.locator("#graph-canvas").focus()
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("#error-panel.open")
    page.wait_for_function(
        "window.atelier.runtimeOf('canvas_size').errors.some(e => e.node === 'canvas_size:latent'"
        " && e.input === 'batch_size')"
    )
    page.shot("an inner problem shown on the pipeline node")
