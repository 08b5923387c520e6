"""The gallery in the browser: one tile per file (a cached re-run adds none), queue rows with prompt and
seed, the viewer (parameters, "Use this seed", zoom, side-by-side and slider comparison, "Send to
inpaint"), and a 5,000-image gallery that scrolls and filters with no overlapping tiles, measured in a
Chromium performance trace (printed, not asserted).

These tests run on their own server (a clean output folder), not the session's."""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from atelier.engine.pnginfo import png_info
from tests.browser.conftest import atelier_serve
from tests.browser.test_browser_run import set_param

WORDS = ("amber", "birch", "cobalt", "dune", "ember", "fern", "granite", "harbor", "indigo", "juniper")
TILES = "#gallery .gal-tile"


@pytest.fixture(scope="module")
def gallery_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gallery-serve")


@pytest.fixture(scope="module")
def server(gallery_base: Path) -> Iterator[str]:
    """This module's own server: the gallery starts empty."""
    with atelier_serve(gallery_base, ["--preview-method", "latent2rgb"], "/atelier/v1/system") as url:
        yield url


def finished(page: Any) -> int:
    return page.evaluate("window.atelier.eventLog.filter(e => e.type === 'job_finished').length")


def tile_count(page: Any) -> int:
    return page.evaluate(f"document.querySelectorAll('{TILES} img').length")


def gallery_total(page: Any) -> str:
    return page.inner_text("#gallery .gal-count")


def run_and_wait(page: Any, n: int) -> None:
    """Queue the canvas and wait for its job (the n-th) and the gallery listing that follows it."""
    with page.expect_response(lambda r: "/atelier/v1/gallery/images?" in r.url, timeout=240000):
        page.keyboard.press("Control+Enter")
        page.wait_for_function(
            f"window.atelier.eventLog.filter(e => e.type === 'job_finished').length === {n}", timeout=240000
        )


def test_one_tile_per_file_a_cached_rerun_adds_none_and_queue_rows_show_prompt_and_seed(page: Any) -> None:
    seed = random.randrange(1, 2**31)
    set_param(page, "steps", 3)
    set_param(page, "width", 64)
    set_param(page, "height", 64)
    set_param(page, "seed", seed)
    page.fill('.param[data-param="prompt"] textarea', "gallery test, amber light")
    page.keyboard.press("Tab")
    page.wait_for_function(
        "window.atelier.toWorkflow().parameters.prompt.default === 'gallery test, amber light'"
    )
    assert page.inner_text("#gallery .gal-empty") == "Finished images appear here."
    page.keyboard.press("Control+Enter")
    # while it runs, its queue row shows the prompt and seed
    page.wait_for_selector("#queue-list .queue-item .queue-seed")
    row = page.inner_text("#queue-list .queue-item")
    assert f"seed {seed}" in row and "gallery test, amber light" in row
    page.shot("queue row with prompt and seed")
    page.wait_for_function("window.atelier.eventLog.some(e => e.type === 'job_finished')", timeout=240000)
    page.wait_for_function(f"document.querySelectorAll('{TILES} img').length === 1")
    page.wait_for_function(f"document.querySelector('{TILES} img').naturalWidth === 64")
    assert gallery_total(page) == "1 image"
    page.shot("one image one tile")
    # the same again: served from the cache, the same file: still one tile
    run_and_wait(page, 2)
    assert page.evaluate("window.atelier.runtimeOf('save').status") == "cached"
    time.sleep(0.3)
    assert tile_count(page) == 1 and gallery_total(page) == "1 image"
    # a new seed makes a new file: a second tile, first in the grid
    set_param(page, "seed", seed + 1)
    run_and_wait(page, 3)
    page.wait_for_function(f"document.querySelectorAll('{TILES} img').length === 2")
    assert gallery_total(page) == "2 images"
    assert f"seed {seed + 1}" in page.get_attribute(f"{TILES}[data-index='0']", "title")
    page.shot("cached rerun added no tile new seed did")


def test_viewer_shows_parameters_uses_the_seed_compares_and_zooms(page: Any) -> None:
    page.wait_for_function(f"document.querySelectorAll('{TILES} img').length >= 2")
    newest_seed = int(page.get_attribute(f"{TILES}[data-index='0']", "title").split("seed ")[1].split()[0])
    set_param(page, "seed", 5)
    page.click(f"{TILES}[data-index='0'] img")
    page.wait_for_selector("#viewer .gv-params")
    page.wait_for_function("document.querySelector('#viewer .viewer-img').naturalWidth === 64")
    assert page.inner_text("#viewer dd[data-param='seed']") == str(newest_seed)
    assert page.inner_text("#viewer dd[data-param='prompt']") == "gallery test, amber light"
    assert page.inner_text("#viewer dd[data-param='steps']") == "3"
    assert page.inner_text("#viewer dd[data-param='model']") == "tiny15.safetensors"
    page.shot("viewer with parameters")
    # zoom: the wheel zooms about the cursor, Fit goes back
    fitted = float(page.get_attribute("#viewer", "data-zoom"))
    box = page.locator("#viewer .gv-pane-a").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -600)
    page.wait_for_function(f"Number(document.getElementById('viewer').dataset.zoom) > {fitted * 1.5}")
    page.shot("zoomed in")
    page.click("#viewer button:text-is('Fit')")
    assert abs(float(page.get_attribute("#viewer", "data-zoom")) - fitted) < 1e-6
    # side by side: the other image beside it
    page.click("#viewer button:text-is('Side by side')")
    page.wait_for_function(
        "document.querySelector('#viewer .gv-img-b').naturalWidth === 64 && document.getElementById('viewer').dataset.compareWith"
    )
    a = page.locator("#viewer .gv-pane-a").bounding_box()
    b = page.locator("#viewer .gv-pane-b").bounding_box()
    assert a["x"] + a["width"] <= b["x"] and abs(a["width"] - b["width"]) < 2
    assert page.evaluate(
        "document.querySelector('#viewer .viewer-img').src !== document.querySelector('#viewer .gv-img-b').src"
    )
    page.shot("side by side")
    # the slider: B over A, cut where the handle is dragged
    page.click("#viewer button:text-is('Slider')")
    page.wait_for_selector("#viewer .gv-handle", state="visible")
    stage = page.locator("#viewer .gv-stage").bounding_box()
    handle = page.locator("#viewer .gv-handle").bounding_box()
    page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
    page.mouse.down()
    for f in (0.45, 0.4, 0.35, 0.3, 0.25):
        page.mouse.move(stage["x"] + stage["width"] * f, stage["y"] + stage["height"] / 2)
        page.wait_for_timeout(20)
    page.mouse.up()
    # a busy renderer may handle the moves a little after they were sent
    page.wait_for_function("Number(document.getElementById('viewer').dataset.split) < 30")
    split = float(page.get_attribute("#viewer", "data-split"))
    assert 22 <= split <= 28, split
    clip = page.evaluate("document.querySelector('#viewer .gv-img-b').style.clipPath")
    assert clip.startswith("inset(0px 0px 0px ") and float(clip.split()[-1].rstrip("px)")) > 0
    page.shot("slider at a quarter")
    # "Use this seed" sets it on the sampler of the open workflow (and its parameter)
    page.click("#viewer button:text-is('Use this seed')")
    page.wait_for_function(
        "(s) => window.atelier.toWorkflow().nodes.sampler.inputs.seed === s", arg=newest_seed
    )
    assert page.evaluate("window.atelier.toWorkflow().parameters.seed.default") == newest_seed
    page.keyboard.press("Escape")
    page.wait_for_selector("#viewer", state="detached")
    assert page.input_value('.param[data-param="seed"] input') == str(newest_seed)
    page.shot("seed used")


def test_send_to_inpaint_opens_the_inpaint_workflow_on_a_copy(page: Any, gallery_base: Path) -> None:
    page.wait_for_function(f"document.querySelectorAll('{TILES} img').length >= 1")
    name = page.evaluate(f"document.querySelector('{TILES}[data-index=\"0\"]').title.split('\\n').pop()")
    page.click(f"{TILES}[data-index='0'] img")
    page.click("#viewer button:text-is('Send to inpaint')")
    page.wait_for_selector("#viewer", state="detached")
    page.wait_for_function("!!window.atelier.findNode('load') && !!window.atelier.findNode('inpaint')")
    wf = page.evaluate("window.atelier.toWorkflow()")
    assert wf["nodes"]["load"]["inputs"]["image"] == name
    assert (gallery_base / "input" / name).read_bytes() == (gallery_base / "output" / name).read_bytes()
    page.shot("sent to inpaint")


def seed_images(output: Path, n: int) -> None:
    """``n`` small PNGs with Atelier metadata, as if made by n runs (file times in order)."""
    folder = output / "bulk"
    folder.mkdir(parents=True, exist_ok=True)
    base = time.time() - 100_000
    for i in range(n):
        word = WORDS[i % len(WORDS)]
        meta = {
            "workflow": {
                "format": "atelier/workflow",
                "version": 1,
                "metadata": {"name": "bulk"},
                "nodes": {
                    "p": {"type": "CLIPTextEncode", "inputs": {"text": f"bulk portrait {word} {i}"}},
                    "s": {
                        "type": "KSampler",
                        "inputs": {
                            "seed": i,
                            "sampler_name": "euler",
                            "positive": {"node": "p", "output": 0},
                        },
                    },
                },
            }
        }
        path = folder / f"bulk_{i:05d}_.png"
        Image.new("RGB", (32, 32), ((i * 7) % 256, (i * 13) % 256, (i * 29) % 256)).save(
            path, pnginfo=png_info(meta), compress_level=1
        )
        os.utime(path, (base + i, base + i))


CHECK_TILES = """() => {
  const sc = document.querySelector('#gallery .gal-scroller').getBoundingClientRect()
  const tiles = [...document.querySelectorAll('#gallery .gal-tile')]
  const boxes = tiles.map(t => ({i: Number(t.dataset.index), id: t.dataset.id, r: t.getBoundingClientRect()}))
  let overlaps = 0
  for (let a = 0; a < boxes.length; a++) for (let b = a + 1; b < boxes.length; b++) {
    const p = boxes[a].r, q = boxes[b].r
    if (p.left < q.right - 0.5 && q.left < p.right - 0.5 && p.top < q.bottom - 0.5 && q.top < p.bottom - 0.5) overlaps++
  }
  const visible = boxes.filter(b => b.r.bottom > sc.top && b.r.top < sc.bottom)
  const ids = boxes.filter(b => b.id).map(b => b.id)
  return {tiles: boxes.length, visible: visible.length, overlaps, duplicateIds: ids.length - new Set(ids).size,
          loaded: visible.filter(b => b.id).length, first: Math.min(...boxes.map(b => b.i)), last: Math.max(...boxes.map(b => b.i))}
}"""


def main_thread_tasks(trace_path: Path) -> list[float]:
    """Durations (ms) of the renderer main thread's tasks in a Chromium trace."""
    events = json.loads(trace_path.read_text())
    events = events.get("traceEvents", events) if isinstance(events, dict) else events
    main = {
        (e["pid"], e["tid"])
        for e in events
        if e.get("ph") == "M" and e.get("name") == "thread_name" and e["args"].get("name") == "CrRendererMain"
    }
    return [
        e["dur"] / 1000
        for e in events
        if e.get("ph") == "X"
        and e.get("name") in ("RunTask", "ThreadControllerImpl::RunTask")
        and (e.get("pid"), e.get("tid")) in main
    ]


def test_five_thousand_images_scroll_and_filter_without_overlap(
    page: Any, gallery_base: Path, browser: Any, artifacts: Path
) -> None:
    n = 5000
    t0 = time.perf_counter()
    seed_images(gallery_base / "output", n)
    print(f"\nwrote {n} PNGs in {time.perf_counter() - t0:.1f} s")
    page.reload()
    page.wait_for_selector("body.ready")
    page.wait_for_function(
        f"parseInt(document.querySelector('#gallery .gal-count').textContent) >= {n}", timeout=120000
    )
    total = int(gallery_total(page).split()[0])
    assert total >= n
    page.click("#gallery .gal-wide")
    page.wait_for_function("document.body.classList.contains('gallery-wide')")
    page.wait_for_function(
        f"[...document.querySelectorAll('{TILES} img')].some(i => i.complete && i.naturalWidth)"
    )
    first = page.evaluate(CHECK_TILES)
    assert first["overlaps"] == 0 and first["duplicateIds"] == 0, first
    assert first["tiles"] < 400, first  # only the rows in view (and a few around them) are in the page
    page.shot("five thousand images wide")

    trace = artifacts / "gallery-5000-trace.json"
    browser.start_tracing(page=page, path=str(trace), categories=["devtools.timeline", "toplevel"])
    # scroll with the wheel through the whole list, checking the tiles as it goes
    scroller = page.locator("#gallery .gal-scroller").bounding_box()
    page.mouse.move(scroller["x"] + scroller["width"] / 2, scroller["y"] + scroller["height"] / 2)
    page.evaluate("""() => { window.__frames = []; let last = performance.now();
      const tick = (t) => { window.__frames.push(t - last); last = t; if (!window.__stop) requestAnimationFrame(tick) };
      requestAnimationFrame(tick) }""")
    checks = []
    for step in range(40):
        page.mouse.wheel(0, 900)
        page.wait_for_timeout(30)
        if step % 8 == 7:
            checks.append(page.evaluate(CHECK_TILES))
    # jump to the end and back (a dragged scrollbar)
    page.evaluate("document.querySelector('#gallery .gal-scroller').scrollTop = 1e9")
    page.wait_for_function(
        f"[...document.querySelectorAll('{TILES}')].some(t => Number(t.dataset.index) === {total - 1} && t.dataset.id)"
    )
    checks.append(page.evaluate(CHECK_TILES))
    page.shot("scrolled to the end")
    page.evaluate("document.querySelector('#gallery .gal-scroller').scrollTop = 120000")
    page.wait_for_timeout(400)
    checks.append(page.evaluate(CHECK_TILES))
    page.shot("middle of five thousand")
    frames = page.evaluate("window.__stop = true; window.__frames.slice(2)")
    # filter by a prompt word: a tenth of them
    t1 = time.perf_counter()
    page.fill("#gallery .gal-search", "juniper")
    page.wait_for_function("document.querySelector('#gallery .gal-count').textContent === '500 images'")
    filter_ms = (time.perf_counter() - t1) * 1000
    page.wait_for_function(
        f"[...document.querySelectorAll('{TILES}')].every(t => !t.dataset.id || t.title.includes('juniper'))"
    )
    checks.append(page.evaluate(CHECK_TILES))
    page.shot("filtered to juniper")
    page.fill("#gallery .gal-search", "")
    page.wait_for_function(f"document.querySelector('#gallery .gal-count').textContent.startsWith('{total}')")
    browser.stop_tracing()

    for c in checks:
        assert c["overlaps"] == 0 and c["duplicateIds"] == 0, c
        assert c["tiles"] < 400 and c["visible"] > 0, c
    assert checks[-1]["first"] == 0  # the filter started again from the top
    tasks = sorted(main_thread_tasks(trace), reverse=True)
    frames.sort(reverse=True)
    print(
        f"5000-image gallery: {len(checks)} tile checks, 0 overlaps; tiles in the page at most"
        f" {max(c['tiles'] for c in checks)}\n"
        f"  main-thread tasks in the trace: {len(tasks)}, longest {tasks[:5]} ms,"
        f" over 50 ms: {sum(t > 50 for t in tasks)}\n"
        f"  animation frames while scrolling: {len(frames)}, longest {[round(f, 1) for f in frames[:5]]} ms\n"
        f"  filter 'juniper' typed to 500 tiles listed: {filter_ms:.0f} ms (server round trip included)"
    )
