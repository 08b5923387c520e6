"""SaveImageWebsocket over a real server: the PNG reaches the ComfyUI client that queued the prompt as
ComfyUI's binary image message (and Atelier clients as an ``image_output`` frame), and nothing is saved."""

from __future__ import annotations

import io
import json
import uuid

import httpx
import numpy as np
from PIL import Image

from tests.server.harness import (
    Server,
    comfy_prompt,
    follow,
    follow_comfy,
    parse_atelier_preview,
    parse_comfy_preview,
)
from tests.server.test_server_comfy import queue_prompt


def test_save_image_websocket_sends_the_png_to_its_client(server: Server, http: httpx.Client) -> None:
    prompt = comfy_prompt(seed=4321, steps=2, prefix="ws_reference")
    prompt["10"] = {"class_type": "SaveImageWebsocket", "inputs": {"images": ["8", 0]}}
    client_id = uuid.uuid4().hex
    output = server.folder("output")
    before = {p.name for p in output.rglob("*")} if output.exists() else set()
    with server.ws(f"clientId={client_id}") as ws, server.ws() as atelier:
        json.loads(ws.recv(timeout=10))
        json.loads(atelier.recv(timeout=10))
        prompt_id = queue_prompt(http, prompt, client_id)
        msgs = follow_comfy(ws, prompt_id)
        native = follow(atelier, prompt_id)

    # ComfyUI clients collect the binary frames that come while the node runs (after its "executing")
    pngs: list[bytes] = []
    running = None
    for m in msgs:
        if isinstance(m, dict):
            if m["type"] == "executing":
                running = m["data"]["node"]
            continue
        kind, fmt, image = parse_comfy_preview(m)
        if fmt == 2:
            assert kind == 1 and running == "10"
            pngs.append(image)
        else:  # the sampler's previews: JPEG
            assert (kind, fmt) == (1, 1) and running == "3"
    assert len(pngs) == 1 and pngs[0][:8] == b"\x89PNG\r\n\x1a\n"

    # the same pixels SaveImage wrote from the same decode
    history = http.get(f"/history/{prompt_id}").json()[prompt_id]
    saved = history["outputs"]["9"]["images"][0]
    assert "10" not in history["outputs"]
    with Image.open(server.folder("output") / saved["filename"]) as im:
        reference = np.asarray(im.convert("RGB"))
    with Image.open(io.BytesIO(pngs[0])) as im:
        assert im.format == "PNG" and im.size == (64, 64)
        sent = np.asarray(im.convert("RGB"))
    assert np.array_equal(sent, reference)
    assert {p.name for p in output.rglob("*")} - before == {saved["filename"]}  # node 10 wrote nothing

    # an Atelier client hears it as an image_output frame with the same bytes
    native_frames = [parse_atelier_preview(m) for m in native if isinstance(m, bytes)]
    outputs = [(h, b) for h, b in native_frames if h["type"] == "image_output"]
    assert len(outputs) == 1 and outputs[0][0]["node"] == "10" and outputs[0][0]["format"] == "PNG"
    assert outputs[0][1] == pngs[0]
