"""Workflows in the browser: the server library, the session across reloads, files, PNGs, ComfyUI imports."""

from __future__ import annotations

import base64
import json
import random
import urllib.request
from pathlib import Path
from typing import Any


def workflow(page: Any) -> dict:
    return page.evaluate("window.atelier.toWorkflow()")


def set_param(page: Any, name: str, value: object) -> None:
    page.fill(f'.param[data-param="{name}"] input', str(value))
    page.keyboard.press("Tab")
    page.wait_for_function(
        "([n, v]) => String(window.atelier.toWorkflow().parameters[n].default) === v", arg=[name, str(value)]
    )


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def drop_file(page: Any, data: bytes, name: str, mime: str) -> None:
    """Drop a file on the canvas, as a user dragging it from the desktop would."""
    dt = page.evaluate_handle(
        """([b64, name, mime]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0))
            const dt = new DataTransfer()
            dt.items.add(new File([bytes], name, { type: mime }))
            return dt
        }""",
        [base64.b64encode(data).decode(), name, mime],
    )
    box = page.locator("#graph-canvas").bounding_box()
    at = {"clientX": box["x"] + 300, "clientY": box["y"] + 300}
    page.dispatch_event("#canvas-wrap", "dragenter", {"dataTransfer": dt, **at})
    page.dispatch_event("#canvas-wrap", "dragover", {"dataTransfer": dt, **at})
    page.dispatch_event("#canvas-wrap", "drop", {"dataTransfer": dt, **at})


def run_small_job(page: Any, seed: int) -> dict:
    for name, value in (("steps", 2), ("width", 64), ("height", 64), ("seed", seed)):
        set_param(page, name, value)
    page.keyboard.press("Control+Enter")
    page.wait_for_function("window.atelier.runtimeOf('save').images.length > 0", timeout=60000)
    return page.evaluate("window.atelier.runtimeOf('save').images[0]")


def test_save_reload_and_open_from_the_library(page: Any) -> None:
    name = f"Portrait test {random.randrange(10**6)}"
    page.fill("#wf-name", name)
    page.keyboard.press("Enter")
    set_param(page, "seed", 4242)
    page.keyboard.press("Control+s")
    page.wait_for_selector(".toast-success")
    saved = {w["name"] for w in get_json(page.base_url + "/atelier/v1/workflows")["workflows"]}
    assert name in saved
    stored = get_json(page.base_url + "/atelier/v1/workflows/" + urllib.request.quote(name))
    assert stored["parameters"]["seed"]["default"] == 4242
    assert stored["nodes"]["sampler"]["inputs"]["seed"] == 4242
    assert set(stored["ui"]["positions"]) == set(stored["nodes"])
    assert not page.evaluate("document.getElementById('wf-modified').classList.contains('on')")
    page.shot("saved")
    # edits survive a reload of the page (the session is kept in the browser)
    set_param(page, "seed", 99)
    page.reload()
    page.wait_for_selector("body.ready")
    assert page.input_value("#wf-name") == name
    assert workflow(page)["nodes"]["sampler"]["inputs"]["seed"] == 99
    assert page.input_value('.param[data-param="seed"] input') == "99"
    page.shot("reloaded")
    # open the saved version from the library
    page.keyboard.press("Control+o")
    page.wait_for_selector(f'.library-item[data-name="{name}"]')
    page.shot("library")
    page.click(f'.library-item[data-name="{name}"] .library-open')
    page.wait_for_selector(".modal", state="detached")
    assert workflow(page)["nodes"]["sampler"]["inputs"]["seed"] == 4242
    # the shipped workflows are there too
    page.keyboard.press("Control+o")
    page.wait_for_selector('.library-item[data-name="Portrait"]')
    page.keyboard.press("Escape")


def test_load_the_workflow_of_a_png(page: Any, tmp_path: Path) -> None:
    seed = random.randrange(1, 2**31)
    image = run_small_job(page, seed)
    url = page.evaluate(
        "(img) => '/view?' + new URLSearchParams({filename: img.filename, subfolder: img.subfolder || '', type: img.type})",
        image,
    )
    with urllib.request.urlopen(page.base_url + url, timeout=10) as r:
        png = r.read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # start from an empty canvas, then drop the PNG on it
    page.click("#btn-new")
    page.wait_for_function("window.atelier.app.graph._nodes.length === 0")
    page.shot("empty canvas")
    drop_file(page, png, image["filename"], "image/png")
    page.wait_for_function("window.atelier.app.graph._nodes.length === 7")
    wf = workflow(page)
    assert wf["nodes"]["sampler"]["inputs"]["seed"] == seed
    assert wf["nodes"]["sampler"]["inputs"]["steps"] == 2
    assert wf["nodes"]["latent"]["inputs"]["width"] == 64
    assert wf["parameters"]["seed"]["default"] == seed
    assert page.input_value('.param[data-param="seed"] input') == str(seed)
    page.shot("workflow loaded from the PNG")
    # the same through the file picker, from the gallery viewer too
    page.click("#btn-new")
    path = tmp_path / image["filename"]
    path.write_bytes(png)
    page.set_input_files("#file-input", str(path))
    page.wait_for_function("window.atelier.app.graph._nodes.length === 7")
    page.click("#btn-new")
    page.wait_for_selector("#gallery .tile img")
    page.click("#gallery .tile img")
    page.click("#viewer button:text-is('Load workflow')")
    page.wait_for_function("window.atelier.app.graph._nodes.length === 7")
    # re-running it is served from the cache: the same picture
    page.keyboard.press("Control+Enter")
    page.wait_for_function(
        "window.atelier.eventLog.filter(e => e.type === 'job_finished').length === 2"
        " && window.atelier.runtimeOf('save').status === 'cached'"
    )
    # the cached output node shows the picture it made
    assert page.evaluate("window.atelier.runtimeOf('save').images[0].filename") == image["filename"]
    page.shot("re-run from the PNG is cached")


COMFY_API = {
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 5,
            "steps": 2,
            "cfg": 8,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny15.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse at dusk", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
}


def test_import_comfyui_api_json_and_export(page: Any, tmp_path: Path) -> None:
    path = tmp_path / "comfy_api.json"
    path.write_text(json.dumps(COMFY_API))
    page.set_input_files("#file-input", str(path))
    page.wait_for_function("!!window.atelier.findNode('3') && window.atelier.app.graph._nodes.length === 7")
    wf = workflow(page)
    assert wf["nodes"]["3"]["inputs"]["model"] == {"node": "4", "output": "MODEL"}
    assert wf["nodes"]["6"]["inputs"]["clip"] == {"node": "4", "output": "CLIP"}
    assert wf["nodes"]["6"]["inputs"]["text"] == "a lighthouse at dusk"
    assert page.input_value("#wf-name") == "comfy_api"
    # laid out in columns, left to right along the links
    pos = wf["ui"]["positions"]
    assert pos["4"][0] < pos["6"][0] < pos["3"][0] < pos["8"][0] < pos["9"][0]
    page.shot("imported ComfyUI API workflow")
    page.keyboard.press("Control+Enter")
    page.wait_for_function("window.atelier.runtimeOf('9').images.length > 0", timeout=60000)
    page.shot("imported workflow ran")
    # export: the file is an Atelier workflow that loads back
    page.click("#btn-file")
    with page.expect_download() as dl:
        page.click("[data-action='export-json']")
    exported = json.loads(Path(dl.value.path()).read_text())
    assert exported["format"] == "atelier/workflow"
    assert exported["nodes"]["8"]["inputs"]["vae"] == {"node": "4", "output": "VAE"}
    page.click("#btn-file")
    with page.expect_download() as dl:
        page.click("[data-action='export-api']")
    api = json.loads(Path(dl.value.path()).read_text())
    assert api["3"]["inputs"]["model"] == ["4", 0]
    assert api["8"]["inputs"]["vae"] == ["4", 2]


def test_unknown_nodes_survive_a_round_trip(page: Any, tmp_path: Path) -> None:
    wf = {
        "format": "atelier/workflow",
        "version": 1,
        "metadata": {"name": "with unknown", "custom": {"kept": True}},
        "parameters": {},
        "nodes": {
            "loader": {"type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny15.safetensors"}},
            "magic": {
                "type": "SomePluginNode",
                "inputs": {"model": {"node": "loader", "output": "MODEL"}, "strength": 0.7},
                "extra_field": [1, 2],
            },
        },
        "ui": {"positions": {"loader": [0, 0], "magic": [400, 0]}, "notes": "kept too"},
        "x-vendor": {"anything": 1},
    }
    path = tmp_path / "unknown.json"
    path.write_text(json.dumps(wf))
    page.set_input_files("#file-input", str(path))
    page.wait_for_function("window.atelier.app.graph._nodes.length === 2")
    page.shot("unknown node")
    out = workflow(page)
    assert out["nodes"]["magic"] == wf["nodes"]["magic"]
    assert out["metadata"]["custom"] == {"kept": True}
    assert out["ui"]["notes"] == "kept too"
    assert out["x-vendor"] == {"anything": 1}


# ComfyUI's default graph as its UI saves it: widget values by position, the seed followed by its control
COMFY_UI = {
    "last_node_id": 9,
    "last_link_id": 9,
    "nodes": [
        {
            "id": 4,
            "type": "CheckpointLoaderSimple",
            "pos": [26, 474],
            "size": [315, 98],
            "mode": 0,
            "outputs": [
                {"name": "MODEL", "type": "MODEL", "links": [1], "slot_index": 0},
                {"name": "CLIP", "type": "CLIP", "links": [3, 5], "slot_index": 1},
                {"name": "VAE", "type": "VAE", "links": [8], "slot_index": 2},
            ],
            "widgets_values": ["tiny15.safetensors"],
        },
        {
            "id": 6,
            "type": "CLIPTextEncode",
            "pos": [415, 186],
            "size": [422, 164],
            "mode": 0,
            "inputs": [{"name": "clip", "type": "CLIP", "link": 3}],
            "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING", "links": [4]}],
            "widgets_values": ["beautiful scenery nature glass bottle landscape"],
        },
        {
            "id": 7,
            "type": "CLIPTextEncode",
            "pos": [413, 389],
            "size": [425, 180],
            "mode": 0,
            "inputs": [{"name": "clip", "type": "CLIP", "link": 5}],
            "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING", "links": [6]}],
            "widgets_values": ["text, watermark"],
        },
        {
            "id": 5,
            "type": "EmptyLatentImage",
            "pos": [473, 609],
            "size": [315, 106],
            "mode": 0,
            "outputs": [{"name": "LATENT", "type": "LATENT", "links": [2]}],
            "widgets_values": [64, 64, 1],
        },
        {
            "id": 3,
            "type": "KSampler",
            "pos": [863, 186],
            "size": [315, 262],
            "mode": 0,
            "inputs": [
                {"name": "model", "type": "MODEL", "link": 1},
                {"name": "positive", "type": "CONDITIONING", "link": 4},
                {"name": "negative", "type": "CONDITIONING", "link": 6},
                {"name": "latent_image", "type": "LATENT", "link": 2},
            ],
            "outputs": [{"name": "LATENT", "type": "LATENT", "links": [7]}],
            "widgets_values": [156680208700286, "randomize", 3, 8, "euler", "normal", 1],
        },
        {
            "id": 8,
            "type": "VAEDecode",
            "pos": [1209, 188],
            "size": [210, 46],
            "mode": 0,
            "inputs": [
                {"name": "samples", "type": "LATENT", "link": 7},
                {"name": "vae", "type": "VAE", "link": 8},
            ],
            "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [9]}],
        },
        {
            "id": 9,
            "type": "SaveImage",
            "pos": [1451, 189],
            "size": [210, 58],
            "mode": 0,
            "inputs": [{"name": "images", "type": "IMAGE", "link": 9}],
            "widgets_values": ["ComfyUI"],
        },
    ],
    "links": [
        [1, 4, 0, 3, 0, "MODEL"],
        [2, 5, 0, 3, 3, "LATENT"],
        [3, 4, 1, 6, 0, "CLIP"],
        [4, 6, 0, 3, 1, "CONDITIONING"],
        [5, 4, 1, 7, 0, "CLIP"],
        [6, 7, 0, 3, 2, "CONDITIONING"],
        [7, 3, 0, 8, 0, "LATENT"],
        [8, 4, 2, 8, 1, "VAE"],
        [9, 8, 0, 9, 0, "IMAGE"],
    ],
    "groups": [],
    "version": 0.4,
}


def converts(page: Any, route: str) -> Any:
    """Expect the canvas to ask the server's converter (POST .../convert or .../convert/image)."""
    return page.expect_response(lambda r: r.request.method == "POST" and r.url.split("?")[0].endswith(route))


def test_import_comfyui_ui_workflow_and_comfyui_png(page: Any, tmp_path: Path) -> None:
    path = tmp_path / "comfy_ui.json"
    path.write_text(json.dumps(COMFY_UI))
    # the canvas has no converter of its own: the server's does the work
    assert page.evaluate("import('/static/js/graphio.js').then(m => typeof m.fromComfyUi)") == "undefined"
    with converts(page, "/convert") as answer:
        page.set_input_files("#file-input", str(path))
    assert answer.value.json()["source"] == "comfyui-ui"
    page.wait_for_function("!!window.atelier.findNode('3') && window.atelier.app.graph._nodes.length === 7")
    wf = workflow(page)
    ks = wf["nodes"]["3"]["inputs"]
    assert (
        ks["seed"] == 156680208700286
        and ks["steps"] == 3
        and ks["sampler_name"] == "euler"
        and ks["denoise"] == 1
    )
    assert ks["latent_image"] == {"node": "5", "output": "LATENT"}
    assert wf["nodes"]["8"]["inputs"]["vae"] == {"node": "4", "output": "VAE"}
    assert wf["ui"]["positions"]["9"] == [1451, 189]
    assert wf["ui"]["controls"] == {"3": {"seed": "randomize"}}  # the seed's control mode survives
    assert page.input_value("#wf-name") == "comfy_ui"
    page.shot("imported ComfyUI UI workflow")
    # a PNG written by ComfyUI carries the API-format prompt and the UI workflow in tEXt chunks
    from io import BytesIO

    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps(COMFY_API))
    info.add_text("workflow", json.dumps(COMFY_UI))
    buf = BytesIO()
    Image.new("RGB", (8, 8), (200, 80, 40)).save(buf, "PNG", pnginfo=info)
    page.click("#btn-new")
    with converts(page, "/convert/image"):
        drop_file(page, buf.getvalue(), "ComfyUI_00001_.png", "image/png")
    page.wait_for_function("!!window.atelier.findNode('6') && window.atelier.app.graph._nodes.length === 7")
    wf = workflow(page)
    assert wf["nodes"]["6"]["inputs"]["text"] == "a lighthouse at dusk"  # the prompt wins: it is what ran
    assert wf["ui"]["positions"]["6"] == [415, 186]  # the layout comes from the UI workflow
    page.shot("imported ComfyUI PNG")
    # a WEBP written by ComfyUI: the UI workflow in an EXIF string
    exif = Image.Exif()
    exif[0x010F] = "workflow:" + json.dumps(COMFY_UI)
    buf = BytesIO()
    Image.new("RGB", (8, 8), (40, 80, 200)).save(buf, "WEBP", exif=exif.tobytes())
    page.click("#btn-new")
    with converts(page, "/convert/image"):
        drop_file(page, buf.getvalue(), "ComfyUI_00002_.webp", "image/webp")
    page.wait_for_function("!!window.atelier.findNode('6') && window.atelier.app.graph._nodes.length === 7")
    assert workflow(page)["nodes"]["6"]["inputs"]["text"] == "beautiful scenery nature glass bottle landscape"


def test_import_of_a_comfyui_workflow_with_unknown_nodes_names_them(page: Any, tmp_path: Path) -> None:
    data = json.loads(json.dumps(COMFY_UI))
    for n in data["nodes"]:
        if n["id"] in (5, 8):
            n["type"] = "Mystery" + n["type"]
    path = tmp_path / "mystery.json"
    path.write_text(json.dumps(data))
    before = page.evaluate("window.atelier.app.graph._nodes.length")
    with converts(page, "/convert") as answer:
        page.set_input_files("#file-input", str(path))
    assert answer.value.status == 400
    toast = page.wait_for_selector(".toast-error")
    text = toast.inner_text()
    assert "node 5 (MysteryEmptyLatentImage)" in text and "node 8 (MysteryVAEDecode)" in text
    assert page.evaluate("window.atelier.app.graph._nodes.length") == before  # the canvas is unchanged
    page.shot("unknown ComfyUI nodes named")


def test_every_shipped_pipeline_opens_in_the_canvas(page: Any) -> None:
    """The portrait pipelines load from the library with every node known to the catalogue, their
    parameters in the panel, and come back out of the canvas as the same graph."""
    shipped = get_json(page.base_url + "/atelier/v1/workflows/_shipped")
    assert {"portrait_full", "portrait_face_detail", "fix_faces", "upscale_image", "inpaint_face"} <= set(
        shipped
    )
    for key, wf in shipped.items():
        name = wf["metadata"]["name"]
        page.keyboard.press("Control+o")
        page.wait_for_selector(f'.library-item[data-name="{name}"]')
        page.click(f'.library-item[data-name="{name}"] .library-open')
        page.wait_for_selector(".modal", state="detached")
        page.wait_for_function(
            "(n) => window.atelier.app.graph._nodes.length === n", arg=len(wf["nodes"]), timeout=10000
        )
        got = workflow(page)
        assert {k: n["type"] for k, n in got["nodes"].items()} == {
            k: n["type"] for k, n in wf["nodes"].items()
        }, key
        unknown = page.evaluate(
            "Object.values(window.atelier.toWorkflow().nodes).filter(n => !window.atelier.app.catalogue[n.type]).map(n => n.type)"
        )
        assert unknown == [], key
        for param, decl in wf.get("parameters", {}).items():
            shown = decl["type"] in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")  # not a pipeline's sockets
            assert page.locator(f'.param[data-param="{param}"]').count() == int(shown), (key, param)
        # the pipeline interface survives the canvas: declared outputs and socket inputs come back out
        assert got.get("outputs", {}) == wf.get("outputs", {}), key
        sockets = {k: p for k, p in wf.get("parameters", {}).items() if p["type"] in ("IMAGE", "MASK")}
        assert {k: got["parameters"][k] for k in sockets} == sockets, key
        if key == "portrait_full":
            page.shot("portrait-full-pipeline")
