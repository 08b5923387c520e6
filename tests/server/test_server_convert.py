"""ComfyUI's UI format through the server: the conversion endpoints the canvas imports with, and jobs
submitted in UI format."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, PngImagePlugin

from tests.server.harness import Server, wait_job

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "comfy_examples"


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / f"{name}.json").read_text(encoding="utf-8"))


def tiny_ui_workflow() -> dict[str, Any]:
    """ComfyUI's own SD2 example (an old file: its seed carries a boolean toggle), made to run on the
    tiny test checkpoint."""
    wf = example("textual_inversion_embeddings__embedding_example")["workflow"]
    values = {
        "CheckpointLoaderSimple": ["tiny15.safetensors"],
        "EmptyLatentImage": [64, 64, 1],
        "KSampler": [5, True, 2, 8, "euler", "normal", 1],
        "SaveImage": ["ui_format"],
    }
    texts = iter([["a portrait"], ["bad hands"]])  # no embedding here
    for node in wf["nodes"]:
        if node["type"] in values:
            node["widgets_values"] = values[node["type"]]
        elif node["type"] == "CLIPTextEncode":
            node["widgets_values"] = next(texts)
    return wf


def png_with(chunks: dict[str, Any]) -> bytes:
    info = PngImagePlugin.PngInfo()
    for k, v in chunks.items():
        info.add_text(k, json.dumps(v))
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def test_convert_ui_format_to_atelier_and_to_comfy_api(http: httpx.Client) -> None:
    ex = example("sdxl__sdxl_simple_example")
    r = http.post("/atelier/v1/convert", json={"workflow": ex["workflow"]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["source"] == "comfyui-ui" and out["workflow"]["format"] == "atelier/workflow"
    assert set(out["workflow"]["nodes"]) == set(ex["prompt"])
    assert out["workflow"]["ui"]["positions"]  # the canvas keeps ComfyUI's layout
    r = http.post("/atelier/v1/convert", json={"workflow": ex["workflow"], "to": "comfyui-api"})
    assert {k: v["inputs"] for k, v in r.json()["workflow"].items()} == {
        k: v["inputs"] for k, v in ex["prompt"].items()
    }


def test_convert_reports_unknown_node_types_node_by_node(http: httpx.Client) -> None:
    wf = tiny_ui_workflow()
    for node in wf["nodes"]:
        if node["type"] in ("VAEDecode", "EmptyLatentImage"):
            node["type"] = "Fancy" + node["type"]
    r = http.post("/atelier/v1/convert", json={"workflow": wf})
    assert r.status_code == 400
    errors = r.json()["node_errors"]
    assert sorted((e["code"], e["node"], e["node_type"]) for e in errors) == [
        ("unknown_node_type", "5", "FancyEmptyLatentImage"),
        ("unknown_node_type", "8", "FancyVAEDecode"),
    ]
    r = http.post("/atelier/v1/jobs", json={"workflow": wf})
    assert r.status_code == 400 and len(r.json()["node_errors"]) == 2
    assert http.post("/atelier/v1/convert", json={"workflow": {"what": 1}}).status_code == 400


def test_convert_image_reads_png_and_webp_metadata(http: httpx.Client) -> None:
    wf = tiny_ui_workflow()
    r = http.post(
        "/atelier/v1/convert/image", files={"image": ("a.png", png_with({"workflow": wf}), "image/png")}
    )
    assert r.status_code == 200, r.text
    assert r.json()["source"] == "comfyui-ui" and r.json()["workflow"]["nodes"]["3"]["type"] == "KSampler"
    exif = Image.Exif()
    exif[0x010F] = "workflow:" + json.dumps(wf)
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="WEBP", exif=exif.tobytes())
    r = http.post("/atelier/v1/convert/image", files={"image": ("a.webp", buf.getvalue(), "image/webp")})
    assert r.status_code == 200 and r.json()["workflow"]["nodes"]["3"]["inputs"]["seed"] == 5
    r = http.post("/atelier/v1/convert/image", files={"image": ("plain.png", png_with({}), "image/png")})
    assert r.status_code == 404 and "carries no workflow" in r.json()["error"]


def test_a_ui_format_job_runs_and_keeps_atelier_format(server: Server, http: httpx.Client) -> None:
    r = http.post("/atelier/v1/jobs", json={"workflow": tiny_ui_workflow()})
    assert r.status_code == 201, r.text
    view = wait_job(http, r.json()["id"], timeout=120)
    assert view["status"] == "success", view
    assert view["outputs"]["9"]["images"][0]["filename"].startswith("ui_format")
    full = http.get(f"/atelier/v1/jobs/{view['id']}", params={"workflow": "true"}).json()
    assert full["workflow"]["format"] == "atelier/workflow"
    assert full["workflow"]["nodes"]["3"]["inputs"]["steps"] == 2
