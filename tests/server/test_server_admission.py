"""Admission control at the server: a job over the limits is refused when it is submitted (Atelier's 413,
ComfyUI's 400 with node_errors by node id) naming node, input and limit, and nothing is queued; uploads
and LoadImage hold every frame against the limits; the limits are server options."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from atelier.engine.limits import Limits
from atelier.engine.server.app import Settings, create_app
from tests.admission.images import canvas_gif, coloured_gif
from tests.server.harness import Server, comfy_prompt, engine_in, portrait, wait_job

GiB = 1 << 30


def jobs_known(http: httpx.Client) -> int:
    """Every job the server knows: finished, running and queued (a refusal must add none)."""
    queue = http.get("/atelier/v1/queue").json()
    total = http.get("/atelier/v1/jobs", params={"limit": 1}).json()["total"]
    return int(total) + len(queue["running"]) + len(queue["queued"])


def big_latent() -> dict[str, Any]:
    return comfy_prompt(size=16384)


def big_batch() -> dict[str, Any]:
    prompt = comfy_prompt()
    prompt["5"]["inputs"]["batch_size"] = 4096
    return prompt


def long_prompt() -> dict[str, Any]:
    prompt = comfy_prompt()
    prompt["6"]["inputs"]["text"] = "x" * 1_000_000
    return prompt


EXAMPLES = [
    (big_latent, "5", "EmptyLatentImage", "width", "max_image_pixels"),
    (big_batch, "5", "EmptyLatentImage", "batch_size", "max_batch"),
    (long_prompt, "6", "CLIPTextEncode", "text", "max_prompt_chars"),
]


@pytest.mark.parametrize(("make", "node", "node_type", "input", "limit"), EXAMPLES)
def test_atelier_refuses_with_413_naming_node_input_and_limit(
    http: httpx.Client, make: Any, node: str, node_type: str, input: str, limit: str
) -> None:
    before = jobs_known(http)
    r = http.post("/atelier/v1/jobs", json={"workflow": make()})
    assert r.status_code == 413, r.text
    body = r.json()
    assert body["error"].startswith(f"the job exceeds this server's limits: node {node} ({node_type}), input")
    assert limit in body["error"]
    first = body["node_errors"][0]
    assert (first["code"], first["node"], first["node_type"], first["input"]) == (
        "over_limit",
        node,
        node_type,
        input,
    )
    assert f"over the limit {limit}=" in first["message"]
    assert jobs_known(http) == before  # nothing queued


@pytest.mark.parametrize(("make", "node", "node_type", "input", "limit"), EXAMPLES)
def test_comfy_refuses_with_its_400_shape_keyed_by_node(
    http: httpx.Client, make: Any, node: str, node_type: str, input: str, limit: str
) -> None:
    before = jobs_known(http)
    r = http.post("/prompt", json={"prompt": make(), "client_id": "c1"})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"]["type"] == "over_limit" and limit in body["error"]["message"]
    entry = body["node_errors"][node]
    assert entry["class_type"] == node_type
    assert entry["errors"][0]["type"] == "over_limit"
    assert entry["errors"][0]["extra_info"]["input_name"] == input
    assert limit in entry["errors"][0]["message"]
    assert jobs_known(http) == before


def test_validate_reports_what_submission_would_refuse(http: httpx.Client) -> None:
    out = http.post("/atelier/v1/validate", json={"workflow": big_batch()}).json()
    assert out["ok"] is False
    codes = [e["code"] for e in out["errors"] if e["severity"] == "error"]
    assert codes[0] == "over_limit" and set(codes) <= {"over_limit", "over_memory"}  # memory: this machine's
    assert http.post("/atelier/v1/validate", json={"workflow": comfy_prompt()}).json()["ok"] is True


def test_a_portrait_is_admitted_and_runs(http: httpx.Client) -> None:
    r = http.post("/atelier/v1/jobs", json=portrait(width=64, height=96))
    assert r.status_code == 201, r.text
    assert wait_job(http, r.json()["id"])["status"] == "success"


def test_the_413_is_documented(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    responses = next(
        op for path, ops in spec["paths"].items() if path.endswith("/jobs") for op in [ops["post"]]
    )["responses"]
    assert "413" in responses and "over_limit" in responses["413"]["description"]


# -- multi-frame images --------------------------------------------------------------------------------


def upload(http: httpx.Client, name: str, data: bytes, route: str = "/atelier/v1/upload") -> httpx.Response:
    return http.post(route, files={"image": (name, data, "image/gif")}, data={"overwrite": "true"})


@pytest.mark.parametrize("route", ["/atelier/v1/upload", "/upload/image"])
def test_a_150_frame_gif_that_would_need_10_gb_is_refused_on_upload(
    server: Server, http: httpx.Client, route: str
) -> None:
    data = canvas_gif(2048, 2048, 150)  # 3.5 KB on the wire
    r = upload(http, "bomb.gif", data, route)
    assert r.status_code == 413, r.text
    message = r.json()["error"]
    assert message.startswith("'bomb.gif' has 150 frames of 2048x2048 that would need 10.1 GB decoded")
    assert f"max_decoded_bytes={4 * GiB}" in message
    assert not (server.folder("input") / "bomb.gif").exists()


def test_an_animated_upload_within_the_limits_is_taken(server: Server, http: httpx.Client) -> None:
    r = upload(http, "anim.gif", coloured_gif(16, 12, [(255, 0, 0), (0, 255, 0), (0, 0, 255)]))
    assert r.status_code == 200, r.text
    assert (r.json()["width"], r.json()["height"]) == (16, 12)
    assert (server.folder("input") / "anim.gif").is_file()


def test_load_image_of_a_gif_too_large_to_decode_is_refused_and_nothing_queued(
    server: Server, http: httpx.Client
) -> None:
    (server.folder("input") / "placed.gif").write_bytes(canvas_gif(2048, 2048, 150))  # not via upload
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "placed.gif"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "g"}},
    }
    before = jobs_known(http)
    r = http.post("/atelier/v1/jobs", json={"workflow": prompt})
    assert r.status_code == 413, r.text
    [e] = r.json()["node_errors"]
    assert (e["node"], e["node_type"], e["input"]) == ("1", "LoadImage", "image")
    assert "150 frames of 2048x2048 (10.1 GB decoded)" in e["message"] and "max_decoded_bytes" in e["message"]
    r = http.post("/prompt", json={"prompt": prompt})
    assert r.status_code == 400 and r.json()["node_errors"]["1"]["class_type"] == "LoadImage"
    assert jobs_known(http) == before


# -- limits are server options -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[TestClient]:
    """An in-process server whose settings give small limits and a small memory figure."""
    root = tmp_path_factory.mktemp("admission-server")
    engine = engine_in(root, models_dir)
    limits = Limits(max_steps=10, max_frames=2, memory_bytes=300 * (1 << 20))
    settings = Settings(database=root / "atelier.db", limits=limits)
    with TestClient(create_app(engine, settings), base_url="http://127.0.0.1:8188") as client:
        yield client


def test_settings_limits_apply_to_jobs(small_server: TestClient) -> None:
    r = small_server.post("/atelier/v1/jobs", json={"workflow": comfy_prompt(steps=20)})
    assert r.status_code == 413
    assert r.json()["node_errors"][0]["input"] == "steps" and "max_steps=10" in r.json()["error"]


def test_a_small_memory_figure_refuses_a_job_that_fits_every_other_limit(small_server: TestClient) -> None:
    assert (
        small_server.post("/atelier/v1/jobs", json={"workflow": comfy_prompt(steps=2, size=64)}).status_code
        == 201
    )
    r = small_server.post("/atelier/v1/jobs", json={"workflow": comfy_prompt(steps=2, size=1024)})
    assert r.status_code == 413, r.text
    [e] = r.json()["node_errors"]
    assert (e["code"], e["node"], e["node_type"]) == ("over_memory", "8", "VAEDecode")
    assert "memory_fraction=0.9 of 300.0 MiB" in e["message"]


def test_settings_limits_apply_to_uploads(small_server: TestClient) -> None:
    gif = coloured_gif(8, 8, [(255, 0, 0), (0, 255, 0), (0, 0, 255)])
    r = small_server.post("/atelier/v1/upload", files={"image": ("three.gif", gif, "image/gif")})
    assert r.status_code == 413 and "has 3 frames: over the limit max_frames=2" in r.json()["error"]
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    assert (
        small_server.post("/atelier/v1/upload", files={"image": ("one.png", buf.getvalue())}).status_code
        == 200
    )


def test_serve_flags_set_the_limits(tmp_path: Path, models_dir: Path) -> None:
    srv = Server(tmp_path, models_dir, extra=["--max-steps", "3", "--max-prompt-chars", "10"])
    try:
        srv.start()
        with srv.client() as http:
            r = http.post("/atelier/v1/jobs", json={"workflow": comfy_prompt(steps=4)})
            assert r.status_code == 413
            inputs = sorted(e["input"] for e in r.json()["node_errors"])
            assert inputs == ["steps", "text"]  # "a portrait, soft light" is over 10 characters; "blurry" not
    finally:
        srv.stop()


# -- a bounded queue ---------------------------------------------------------------------------------


def test_a_full_queue_refuses_with_503_and_loses_nothing(tmp_path: Path, models_dir: Path) -> None:
    """Without its worker started (no lifespan) the app queues and never runs: the queue fills up."""
    engine = engine_in(tmp_path, models_dir)
    client = TestClient(
        create_app(engine, Settings(database=tmp_path / "atelier.db", max_queued=2)),
        base_url="http://127.0.0.1:8188",
    )
    ids = [
        client.post("/atelier/v1/jobs", json={"workflow": comfy_prompt(seed=n)}).json()["id"]
        for n in range(2)
    ]
    r = client.post("/atelier/v1/jobs", json={"workflow": comfy_prompt(seed=3)})
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    assert r.json()["error"] == "the queue is full (2 jobs, the limit max_queued): try again later"
    r = client.post("/prompt", json={"prompt": comfy_prompt(seed=4)})
    assert r.status_code == 400 and r.json()["error"]["type"] == "queue_full"
    assert [
        j["id"] for j in client.get("/atelier/v1/queue").json()["queued"]
    ] == ids  # the queued jobs are kept
    assert client.post(f"/atelier/v1/jobs/{ids[0]}/cancel").json()["status"] == "cancelled"
    assert (
        client.post("/atelier/v1/jobs", json={"workflow": comfy_prompt(seed=5)}).status_code == 201
    )  # room again
    services = client.app.state.services  # type: ignore[attr-defined]
    services.store.close()
