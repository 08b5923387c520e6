"""ComfyUI's own web frontend (the ``comfyui-frontend-package`` wheel) against ``atelier serve --frontend
comfyui``, in headless Chromium: it starts, loads the node list from /object_info, queues a tiny SD1.5
prompt, shows progress, previews and the saved image, and re-runs it from the cache.

Skipped with a reason when the package is absent locally (``pip install 'atelier[comfyui]'``); under CI
(``CI`` set) that is a failure: ``./dev setup`` installs it.
"""

from __future__ import annotations

import json
import random
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import VIEWPORT, Shots, _missing, atelier_serve

ROOT = Path(__file__).resolve().parents[2]
PROMPT_NODES = {"3", "4", "5", "6", "7", "8", "9"}

# Console errors of the frontend that are not this server's doing, or are known gaps, each with its
# reason. Anything else the page logs as an error fails the test.
KNOWN_CONSOLE_ERRORS = {
    # the machine is offline: the frontend's release notes and telemetry hosts do not resolve
    "net::ERR_NAME_NOT_RESOLVED": "offline",
    # a 404 it handles: no saved workflows or subgraphs yet, no user.css, no template logos
    "Failed to load resource: the server responded with a status of 404": "expected 404s",
}

# Requests the frontend makes that fail as they do against ComfyUI itself (nothing saved yet, no optional
# packages), by path pattern. Any other 4xx/5xx answer fails the test: every 404 is a missing route.
EXPECTED_FAILURES = {
    r"^/user\.css$": "no user styles",
    r"^/api/userdata/user\.css$": "no user styles",
    r"^/api/userdata/comfy\.templates\.json$": "no saved templates",
    r"^/api/userdata\?dir=(workflows|subgraphs)&": "no saved workflows or subgraphs yet",
    r"^/templates/index_logo\.json$": "the workflow templates package is not installed",
}


def _package_static() -> Path:
    try:
        from atelier.engine.server.comfy.frontend import FrontendMissing, comfyui_frontend_dir
    except ImportError as exc:  # pragma: no cover - the server's dependencies are part of the project
        pytest.skip(f"the server cannot be imported: {exc}")
    try:
        return comfyui_frontend_dir()
    except FrontendMissing as exc:
        _missing(f"ComfyUI's frontend ({exc})")
        raise AssertionError("unreachable") from exc


@pytest.fixture(scope="module")
def comfy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``atelier serve --frontend comfyui`` on a free loopback port, with a tiny SD1.5 checkpoint."""
    _package_static()
    args = ["--frontend", "comfyui", "--preview-method", "auto"]
    with atelier_serve(
        tmp_path_factory.mktemp("comfyui-serve"), args, "/features", {"OMP_NUM_THREADS": "1"}
    ) as url:
        # a returning user: no first-run template browser over the canvas (stored through /settings)
        _post_json(f"{url}/api/settings", {"Comfy.TutorialCompleted": True})
        yield url


def _post_json(url: str, body: Any) -> None:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200


@pytest.fixture()
def comfy_page(
    browser: Any, comfy_server: str, artifacts: Path, request: pytest.FixtureRequest
) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(30000)
    # a fresh tab: it connects to /ws without a clientId and takes the sid the server gives it
    errors: list[str] = []
    failed: list[str] = []
    page.on(
        "response",
        lambda r: (
            failed.append(f"{r.status} {r.url.removeprefix(comfy_server)}") if r.status >= 400 else None
        ),
    )
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(comfy_server + "/")
    page.wait_for_function(
        "window.app && window.app.graph && window.app.graph.nodes.length > 0", timeout=90000
    )
    page.shot = Shots(page, artifacts, request.node.name.removeprefix("test_"))
    page.base_url = comfy_server
    try:
        yield page
    finally:
        context.close()
    unknown = [e for e in errors if not any(k in e for k in KNOWN_CONSOLE_ERRORS)]
    assert not unknown, f"errors in the page: {unknown}"
    unexpected = [f for f in failed if not any(re.search(p, f.split(" ", 1)[1]) for p in EXPECTED_FAILURES)]
    assert not unexpected, f"requests the server refused: {unexpected}"


WATCH = """() => {
  window.__events = [];
  for (const t of ['execution_start', 'execution_cached', 'executing', 'progress', 'executed',
                   'execution_success', 'execution_error', 'b_preview'])
    app.api.addEventListener(t, (e) => window.__events.push(
      {type: t, detail: t === 'b_preview' ? {size: e.detail.size, type: e.detail.type} : e.detail}));
}"""


def events(page: Any, kind: str | None = None) -> list[dict[str, Any]]:
    return page.evaluate("(k) => window.__events.filter(e => k === null || e.type === k)", kind)


def queue_with_shortcut(page: Any, runs_before: int) -> None:
    """Ctrl+Enter on the canvas (ComfyUI's "Queue prompt" key), then wait for the run to end."""
    page.mouse.click(300, 900)
    page.keyboard.press("Control+Enter")
    page.wait_for_function(
        f"window.__events.filter(e => e.type === 'execution_success' || e.type === 'execution_error').length > {runs_before}",
        timeout=120000,
    )


def test_comfyui_frontend_queues_shows_progress_result_and_reruns_cached(comfy_page: Any) -> None:
    page = comfy_page
    # the node list came from /object_info: every Atelier node is a LiteGraph node type
    with urllib.request.urlopen(page.base_url + "/api/object_info", timeout=30) as r:
        object_info = json.load(r)
    registered = page.evaluate("Object.keys(LiteGraph.registered_node_types)")
    assert set(object_info) <= set(registered), set(object_info) - set(registered)
    ksampler_inputs = page.evaluate("LiteGraph.registered_node_types.KSampler.nodeData.input.required")
    assert set(ksampler_inputs) == set(object_info["KSampler"]["input"]["required"])
    page.shot("started with the node list")

    # the classic txt2img graph on the tiny checkpoint, loaded through the frontend's own API-format loader
    from tests.server.harness import comfy_prompt

    seed = random.randrange(1, 2**31)
    page.evaluate("(p) => app.loadApiJson(p, 'atelier-tiny.json')", comfy_prompt(seed=seed, steps=4, size=64))
    page.wait_for_function("app.graph.nodes.length === 7 && !!app.graph.getNodeById(9)")
    page.evaluate(
        """() => {
          const ks = app.graph.getNodeById(3);
          ks.widgets.find(w => w.name === 'control_after_generate').value = 'fixed';
        }"""
    )
    page.mouse.click(300, 900)  # focus the canvas (an empty spot)
    page.keyboard.press(".")  # fit the graph into view: Save Image is drawn, so its image will load
    page.wait_for_function("app.canvas.ds.scale < 0.85")
    page.evaluate(WATCH)
    page.shot("tiny txt2img graph loaded")

    queue_with_shortcut(page, 0)
    assert not events(page, "execution_error"), events(page, "execution_error")
    prompt_id = events(page, "execution_start")[0]["detail"]["prompt_id"]
    progress = [e["detail"] for e in events(page, "progress")]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [(i, 4, "3") for i in range(1, 5)]
    assert all(p["prompt_id"] == prompt_id for p in progress)
    previews = events(page, "b_preview")
    assert previews and all(p["detail"]["type"] == "image/jpeg" and p["detail"]["size"] > 0 for p in previews)
    executing = [e["detail"] for e in events(page, "executing")]
    assert set(executing[:-1]) == PROMPT_NODES and executing[-1] is None
    executed = [e["detail"] for e in events(page, "executed")]
    assert [e["node"] for e in executed] == ["9"]
    image = executed[0]["output"]["images"][0]
    assert image["type"] == "output" and re.fullmatch(r"ComfyUI_\d{5}_\.png", image["filename"])

    # the saved image is shown on the Save Image node, loaded from /api/view
    page.wait_for_function(
        """(name) => { const o = app.nodeOutputs['9']; return o && o.images && o.images[0].filename === name; }""",
        arg=image["filename"],
    )
    shown = page.wait_for_function(
        """() => { const n = app.graph.getNodeById(9);
                   const img = (n.imgs || [])[0];
                   return img && img.complete && img.naturalWidth > 0 ? [img.src, img.naturalWidth, img.naturalHeight] : null; }""",
        timeout=30000,
    ).json_value()
    assert "/view?" in shown[0] and image["filename"] in shown[0]
    assert shown[1:] == [64, 64]
    page.shot("finished image on the Save Image node")

    # queue it again unchanged: every node is served from the cache and the image is shown again
    page.evaluate("window.__events = []")
    queue_with_shortcut(page, 0)
    cached = events(page, "execution_cached")
    assert len(cached) == 1 and set(cached[0]["detail"]["nodes"]) == PROMPT_NODES
    assert events(page, "progress") == [] and events(page, "b_preview") == []
    again = [e["detail"] for e in events(page, "executed")]
    assert [e["node"] for e in again] == ["9"] and again[0]["output"]["images"][0] == image
    page.wait_for_function("(() => { const o = app.nodeOutputs['9']; return !!(o && o.images); })()")
    page.shot("re-run served from the cache")


def test_comfyui_frontend_run_button(comfy_page: Any) -> None:
    page = comfy_page
    page.get_by_role("button", name="Run").first.wait_for(timeout=20000)
    page.shot("run button")


def test_comfyui_frontend_lists_the_result_in_its_assets_panel(comfy_page: Any) -> None:
    from tests.server.harness import comfy_prompt

    page = comfy_page
    page.evaluate(
        "(p) => app.loadApiJson(p, 'atelier-assets.json')",
        comfy_prompt(seed=random.randrange(1, 2**31), steps=2, size=64, prefix="assets_panel"),
    )
    page.wait_for_function("app.graph.nodes.length === 7")
    page.evaluate(WATCH)
    queue_with_shortcut(page, 0)
    name = events(page, "executed")[0]["detail"]["output"]["images"][0]["filename"]
    page.get_by_role("button", name="Assets").first.click()
    page.get_by_text(name.removesuffix(".png")).first.wait_for(timeout=20000)
    page.shot("the result in the assets panel")
