"""Queue the portrait workflow from the browser and watch it run; errors on the right nodes; interrupt."""

from __future__ import annotations

import json
import random
from typing import Any

PORTRAIT_NODES = ["loader", "positive", "negative", "latent", "sampler", "decode", "save"]


def set_param(page: Any, name: str, value: object) -> None:
    page.fill(f'.param[data-param="{name}"] input', str(value))
    page.keyboard.press("Tab")
    page.wait_for_function(
        "([n, v]) => String(window.atelier.toWorkflow().parameters[n].default) === v", arg=[name, str(value)]
    )


def statuses(page: Any) -> dict:
    return page.evaluate(
        "Object.fromEntries([...window.atelier.app.runtime.entries()].map(([k, r]) => [k, r.status]))"
    )


def events(page: Any, kind: str) -> list:
    return page.evaluate("(t) => window.atelier.eventLog.filter(e => e.type === t)", kind)


def finished_jobs(page: Any) -> int:
    return len(events(page, "job_finished"))


def test_queue_portrait_progress_image_and_cached_rerun(page: Any) -> None:
    seed = random.randrange(1, 2**31)
    set_param(page, "steps", 8)
    set_param(page, "width", 128)
    set_param(page, "height", 192)
    set_param(page, "seed", seed)
    page.keyboard.press("Control+Enter")
    # the sampler runs: highlighted, its step progress moves, previews appear
    page.wait_for_function("/· [1-9][0-9]?\\/8/.test(document.getElementById('run-status').textContent)")
    page.wait_for_function("window.atelier.runtimeOf('sampler').preview !== null")
    assert statuses(page)["sampler"] == "running"
    page.shot("sampling with progress and preview")
    # the finished image lands on the Save Image node and in the gallery
    page.wait_for_function("window.atelier.runtimeOf('save').images.length > 0", timeout=60000)
    page.wait_for_selector("#gallery .tile img")
    page.wait_for_function("document.getElementById('run-status').textContent.startsWith('Done in')")
    st = statuses(page)
    assert all(st[n] == "done" for n in ("sampler", "decode", "save")), st
    progress = [e for e in events(page, "progress") if e["node"] == "sampler"]
    assert progress and progress[-1]["max"] == 8
    assert any(e["node"] == "sampler" for e in events(page, "preview"))
    image = page.evaluate("window.atelier.runtimeOf('save').images[0]")
    assert image["filename"].startswith("portrait") and image["type"] == "output"
    page.wait_for_function(
        "document.querySelector('#gallery .tile img').complete && document.querySelector('#gallery .tile img').naturalWidth === 128"
    )
    page.shot("finished image on the node and in the gallery")
    # nothing changed: a second run is served from the cache, every node marked so
    page.click("#btn-queue")
    page.wait_for_function("window.atelier.eventLog.filter(e => e.type === 'job_finished').length === 2")
    st = statuses(page)
    assert all(st[n] == "cached" for n in PORTRAIT_NODES), st
    assert "7 cached" in page.inner_text("#run-status")
    page.shot("re-run all cached")
    # change the seed: only the sampler and what follows it run again
    set_param(page, "seed", seed + 1)
    page.keyboard.press("Control+Enter")
    page.wait_for_function(
        "window.atelier.eventLog.filter(e => e.type === 'job_finished').length === 3", timeout=60000
    )
    st = statuses(page)
    assert [n for n in PORTRAIT_NODES if st[n] == "cached"] == ["loader", "positive", "negative", "latent"], (
        st
    )
    assert all(st[n] == "done" for n in ("sampler", "decode", "save")), st
    page.wait_for_function(
        "document.querySelectorAll('#gallery .tile img').length >= 2"
    )  # one tile per file: the cached run wrote none
    page.shot("new seed re-runs the sampler only")
    # the gallery opens an image
    page.click("#gallery .tile img")
    page.wait_for_selector("#viewer .viewer-img")
    page.wait_for_function("document.querySelector('#viewer .viewer-img').naturalWidth === 128")
    page.shot("viewer")
    page.keyboard.press("Escape")


def test_validation_error_is_shown_on_the_offending_node(page: Any) -> None:
    rect = page.evaluate("window.atelier.nodeRect('latent')")
    page.mouse.click(rect["x"] + rect["width"] / 2, rect["y"] + rect["titleHeight"] / 2)
    page.keyboard.press("Delete")
    page.wait_for_function("!window.atelier.findNode('latent')")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("#error-panel.open")
    errors = page.evaluate("window.atelier.runtimeOf('sampler').errors")
    assert any(e["input"] == "latent_image" for e in errors), errors
    text = page.inner_text("#error-panel")
    assert "KSampler" in text and "latent_image" in text
    # no other node carries an error
    others = page.evaluate(
        "[...window.atelier.app.runtime.entries()].filter(([k, r]) => k !== 'sampler' && r.errors.length).map(([k]) => k)"
    )
    assert others == []
    page.shot("validation error on the sampler")
    # clicking the error centres the node; fixing it and queueing clears the marks
    page.click("#error-panel li.clickable")
    assert page.evaluate("Object.keys(window.atelier.app.canvas.selected_nodes).length") == 1
    page.keyboard.press("Control+z")
    page.wait_for_function("!!window.atelier.findNode('latent')")
    for name, value in (("steps", 1), ("width", 64), ("height", 64)):
        set_param(page, name, value)
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("#error-panel.open", state="hidden")
    assert page.evaluate("window.atelier.runtimeOf('sampler').errors.length") == 0
    page.wait_for_function("window.atelier.eventLog.some(e => e.type === 'job_finished')", timeout=60000)
    page.shot("fixed and run")


def test_bad_value_error_names_the_input(page: Any) -> None:
    # a value outside the list: the server's validation names node and input
    page.evaluate(
        "(() => { const w = window.atelier.findNode('sampler').widgets.find(w => w.name === 'scheduler');"
        " w.value = 'no-such-scheduler'; window.atelier.app.changed() })()"
    )
    page.click("#btn-queue")
    page.wait_for_selector("#error-panel.open")
    errors = page.evaluate("window.atelier.runtimeOf('sampler').errors")
    assert [e["input"] for e in errors] == ["scheduler"], errors
    page.shot("bad scheduler")


def test_interrupt_and_cancel(page: Any) -> None:
    set_param(page, "steps", 200)
    set_param(page, "width", 128)
    set_param(page, "height", 128)
    set_param(page, "seed", random.randrange(1, 2**31))
    page.click("#btn-queue")
    page.wait_for_function("/· [1-9][0-9]*\\/200/.test(document.getElementById('run-status').textContent)")
    # a second job waits in the queue: cancel it from the queue list
    set_param(page, "seed", random.randrange(1, 2**31))
    page.click("#btn-queue")
    page.wait_for_selector(".queue-item:not(.running)")
    page.shot("running and queued")
    page.click(".queue-item:not(.running) .icon-btn")
    page.wait_for_selector(".queue-item:not(.running)", state="detached")
    page.click("#btn-interrupt")
    page.wait_for_function("window.atelier.eventLog.some(e => e.type === 'job_interrupted')")
    assert statuses(page)["sampler"] == "interrupted"
    page.wait_for_function("document.getElementById('run-status').textContent === 'Interrupted'")
    page.shot("interrupted")


def test_runtime_failure_is_shown_on_the_failing_node(page: Any, tmp_path: Any) -> None:
    # a 1x1 picture cannot be VAE-encoded: the node fails while the job runs, after validation passed
    wf = {
        "format": "atelier/workflow",
        "version": 1,
        "metadata": {"name": "fails at run time"},
        "nodes": {
            "loader": {"type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny15.safetensors"}},
            "img": {"type": "EmptyImage", "inputs": {"width": 1, "height": 1, "batch_size": 1, "color": 0}},
            "enc": {
                "type": "VAEEncode",
                "inputs": {
                    "pixels": {"node": "img", "output": "IMAGE"},
                    "vae": {"node": "loader", "output": "VAE"},
                },
            },
            "dec": {
                "type": "VAEDecode",
                "inputs": {
                    "samples": {"node": "enc", "output": "LATENT"},
                    "vae": {"node": "loader", "output": "VAE"},
                },
            },
            "out": {"type": "PreviewImage", "inputs": {"images": {"node": "dec", "output": "IMAGE"}}},
        },
    }
    path = tmp_path / "fails.json"
    path.write_text(json.dumps(wf))
    page.set_input_files("#file-input", str(path))
    page.wait_for_function("!!window.atelier.findNode('enc')")
    page.keyboard.press("Control+Enter")
    page.wait_for_function("window.atelier.eventLog.some(e => e.type === 'job_failed')", timeout=60000)
    page.wait_for_selector("#error-panel.open")
    r = page.evaluate("window.atelier.runtimeOf('enc')")
    assert r["status"] == "error"
    assert "smaller" in r["errors"][0]["message"]
    assert "VAE Encode" in page.inner_text("#error-panel") or "VAEEncode" in page.inner_text("#error-panel")
    assert page.evaluate("window.atelier.runtimeOf('img').status") in ("done", "cached")
    page.shot("runtime failure on the VAE encoder")
