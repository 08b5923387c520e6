"""The gallery: output images newest first, one entry per file, with the parameters the PNG carries;
paging that images arriving meanwhile do not disturb; filters; boards; favourites; thumbnails; copying into
the input folder. Jobs run on an in-process server over the tiny checkpoint."""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from atelier.engine.pnginfo import png_info, read_metadata
from atelier.engine.server.app import Settings, create_app
from atelier.engine.server.gallery_params import generation_params
from tests.server.harness import comfy_prompt, engine_in, load_workflow, portrait, wait_job

G = "/atelier/v1/gallery"


@pytest.fixture(scope="module")
def gallery_server(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> Iterator[tuple[TestClient, Path]]:
    root = tmp_path_factory.mktemp("gallery-server")
    engine = engine_in(root, models_dir)
    settings = Settings(database=root / "atelier.db")
    with TestClient(create_app(engine, settings), base_url="http://127.0.0.1:8188") as client:
        yield client, root


def run(client: TestClient, request: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/atelier/v1/jobs", json=request)
    assert r.status_code == 201, r.text
    job = wait_job(client, r.json()["id"])  # type: ignore[arg-type]
    assert job["status"] == "success", job
    return job


def saved(job: dict[str, Any]) -> list[str]:
    return [
        (f"{i['subfolder']}/" if i["subfolder"] else "") + i["filename"]
        for o in job["outputs"].values()
        for i in o.get("images", [])
        if i["type"] == "output"
    ]


def listing(client: TestClient, **params: Any) -> dict[str, Any]:
    r = client.get(f"{G}/images", params={"limit": 500, **params})
    assert r.status_code == 200, r.text
    return r.json()


def small_png(path: Path, colour: tuple[int, int, int], meta: dict[str, Any] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 16), colour).save(path, pnginfo=png_info(meta) if meta else None)


def meta_for(
    prompt: str, seed: int, model: str = "m.safetensors", workflow: str = "seeded"
) -> dict[str, Any]:
    """Metadata in Atelier's shape (as SaveImage writes it) for a tiny txt2img graph."""
    return {
        "workflow": {
            "format": "atelier/workflow",
            "version": 1,
            "metadata": {"name": workflow},
            "nodes": {
                "loader": {"type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": model}},
                "pos": {
                    "type": "CLIPTextEncode",
                    "inputs": {"text": prompt, "clip": {"node": "loader", "output": 1}},
                },
                "neg": {
                    "type": "CLIPTextEncode",
                    "inputs": {"text": "ugly", "clip": {"node": "loader", "output": 1}},
                },
                "ks": {
                    "type": "KSampler",
                    "inputs": {
                        "seed": seed,
                        "steps": 3,
                        "cfg": 5.0,
                        "sampler_name": "euler",
                        "scheduler": "normal",
                        "model": {"node": "loader", "output": 0},
                        "positive": {"node": "pos", "output": 0},
                        "negative": {"node": "neg", "output": 0},
                    },
                },
            },
        }
    }


def test_a_job_image_is_listed_once_with_the_parameters_its_png_carries(
    gallery_server: tuple[TestClient, Path],
) -> None:
    client, root = gallery_server
    seed = 918273645
    prompt = "gallery portrait, one freckle"
    job = run(client, portrait(seed=seed, prompt=prompt, steps=2, cfg=4.5))
    [path] = saved(job)
    # what the engine wrote, read another way: the PNG's own chunk, through pnginfo
    written = read_metadata(root / "output" / path)
    assert written["parameters"]["seed"] == seed

    images = [i for i in listing(client)["images"] if i["job_id"] == job["id"]]
    assert len(images) == 1
    [img] = images
    assert (img["subfolder"] + "/" if img["subfolder"] else "") + img["filename"] == path
    assert (img["width"], img["height"]) == (64, 64)
    p = img["params"]
    assert p["seed"] == seed and p["prompt"] == prompt and p["cfg"] == 4.5 and p["steps"] == 2
    assert p["negative"] == written["workflow"]["parameters"]["negative"]["default"]
    assert (p["sampler"], p["scheduler"]) == ("dpmpp_2m", "karras")
    assert p["model"] == "tiny15.safetensors"
    assert p["workflow"] == written["workflow"]["metadata"]["name"] != ""
    assert client.get(f"{G}/images/{img['id']}").json() == img

    # the same job again comes from the cache: the same file, so the same single entry
    again = run(client, portrait(seed=seed, prompt=prompt, steps=2, cfg=4.5))
    assert saved(again) == [path] and "save" in again["cached"]
    entries = [i for i in listing(client)["images"] if i["filename"] == img["filename"]]
    assert [e["id"] for e in entries] == [img["id"]]
    # a new seed is a new file: a new entry, listed first
    newer = run(client, portrait(seed=seed + 1, prompt=prompt, steps=2, cfg=4.5))
    first = listing(client)["images"][0]
    assert saved(newer) != [path] and first["params"]["seed"] == seed + 1 and first["id"] > img["id"]


def test_a_comfyui_prompt_image_reads_its_parameters(gallery_server: tuple[TestClient, Path]) -> None:
    client, _ = gallery_server
    r = client.post("/prompt", json={"prompt": comfy_prompt(seed=31337, prefix="gallery_comfy")})
    job = wait_job(client, r.json()["prompt_id"])  # type: ignore[arg-type]
    [path] = saved(job)
    [img] = [i for i in listing(client)["images"] if i["filename"] == path]
    p = img["params"]
    assert (p["seed"], p["prompt"], p["negative"], p["sampler"], p["model"]) == (
        31337,
        "a portrait, soft light",
        "blurry",
        "euler",
        "tiny15.safetensors",
    )


def test_queue_rows_carry_the_prompt_and_seed_each_job_uses(gallery_server: tuple[TestClient, Path]) -> None:
    client, _ = gallery_server
    long = client.post("/atelier/v1/jobs", json=portrait(seed=5, steps=150, width=128, height=128)).json()[
        "id"
    ]
    waiting = client.post("/atelier/v1/jobs", json=portrait(seed=777, prompt="queued fox")).json()["id"]
    by_node = portrait()
    by_node["overrides"].update({"sampler.seed": 4242, "positive.text": "set on the node"})
    by_node["workflow"]["parameters"].pop("seed")
    by_node["workflow"]["parameters"].pop("prompt")
    r = client.post("/atelier/v1/jobs", json=by_node)
    assert r.status_code == 201, r.text
    other = r.json()["id"]
    try:
        q = client.get(f"{G}/queue").json()
        rows = {r["id"]: r for r in q["running"] + q["queued"]}
        assert (rows[waiting]["prompt"], rows[waiting]["seed"]) == ("queued fox", 777)
        assert (rows[other]["prompt"], rows[other]["seed"]) == ("set on the node", 4242)
        assert [r["id"] for r in q["queued"]][-2:] == [waiting, other]  # in the order they will run
        portrait_default = load_workflow("portrait.json")["parameters"]["prompt"]["default"]
        assert rows[long]["seed"] == 5 and rows[long]["prompt"] == portrait_default
    finally:
        for job in (other, waiting, long):
            client.post(f"/atelier/v1/jobs/{job}/cancel")
        for job in (other, waiting, long):
            wait_job(client, job)  # type: ignore[arg-type]


def test_parameters_follow_links_through_conditioning_nodes() -> None:
    wf = json.loads((Path(__file__).resolve().parents[2] / "workflows" / "inpaint_face.json").read_text())
    meta = {"workflow": wf, "parameters": {"prompt": "a new face", "negative": "no", "seed": 2**64 - 1}}
    p = generation_params(meta)
    # the sampler's positive comes from InpaintModelConditioning, which takes it from the prompt encoder
    assert (p.prompt, p.negative, p.seed, p.steps) == ("a new face", "no", 2**64 - 1, 25)
    assert p.model == wf["nodes"]["loader"]["inputs"]["ckpt_name"]


@pytest.fixture()
def seeded(tmp_path: Path, models_dir: Path) -> Iterator[tuple[TestClient, Path]]:
    """A fresh server whose output folder holds small PNGs written here (not by jobs)."""
    engine = engine_in(tmp_path, models_dir)
    settings = Settings(database=tmp_path / "atelier.db")
    with TestClient(create_app(engine, settings), base_url="http://127.0.0.1:8188") as client:
        yield client, tmp_path / "output"


def write_many(out: Path, start: int, n: int) -> None:
    base = time.time() - 10_000
    for i in range(start, start + n):
        path = out / f"img_{i:05d}_.png"
        small_png(path, (i % 256, 0, 0))
        os.utime(path, (base + i, base + i))  # file times in index order: older files, lower ids


def test_paging_by_snapshot_or_cursor_is_stable_while_images_arrive(seeded: tuple[TestClient, Path]) -> None:
    client, out = seeded
    write_many(out, 0, 50)
    first = listing(client, limit=20)
    assert first["total"] == 50
    names = [i["filename"] for i in first["images"]]
    assert names == [f"img_{i:05d}_.png" for i in range(49, 29, -1)]  # newest first
    # ten new files arrive, and a newer listing picks them up
    write_many(out, 50, 10)
    assert listing(client, limit=1)["images"][0]["filename"] == "img_00059_.png"
    # ...but the pages of the first listing go on where they left off, by offset in the snapshot or by cursor
    by_offset, by_cursor, cursor = [], [], first["next"]
    for offset in (20, 40):
        by_offset += listing(client, limit=20, offset=offset, until=first["until"])["images"]
    while cursor is not None:
        page = listing(client, limit=20, before=cursor, until=first["until"])
        by_cursor += page["images"]
        cursor = page["next"]
    expected = [f"img_{i:05d}_.png" for i in range(29, -1, -1)]
    assert [i["filename"] for i in by_offset] == expected == [i["filename"] for i in by_cursor]
    assert len({i["id"] for i in first["images"] + by_offset}) == 50
    # a file deleted from the folder leaves the gallery
    (out / "img_00003_.png").unlink()
    again = listing(client)
    assert again["total"] == 59 and "img_00003_.png" not in {i["filename"] for i in again["images"]}


def test_filters_by_prompt_workflow_model_board_and_favourite(seeded: tuple[TestClient, Path]) -> None:
    client, out = seeded
    small_png(
        out / "a.png", (1, 2, 3), meta_for("red fox in snow", 1, model="alpha.safetensors", workflow="wf-a")
    )
    small_png(out / "b.png", (1, 2, 3), meta_for("blue fox", 2, model="beta.safetensors", workflow="wf-b"))
    small_png(
        out / "sub" / "c.png", (1, 2, 3), meta_for("red barn", 3, model="alpha.safetensors", workflow="wf-b")
    )
    small_png(out / "plain.png", (9, 9, 9))  # no metadata: listed, with empty parameters
    all_ = listing(client)
    ids = {i["filename"]: i["id"] for i in all_["images"]}
    assert set(ids) == {"a.png", "b.png", "c.png", "plain.png"}
    c = next(i for i in all_["images"] if i["filename"] == "c.png")
    assert c["subfolder"] == "sub" and c["params"]["seed"] == 3

    def names(**params: Any) -> set[str]:
        return {i["filename"] for i in listing(client, **params)["images"]}

    assert names(q="fox") == {"a.png", "b.png"}
    assert names(q="RED fox") == {"a.png"}  # every word, any case
    assert names(q="%") == set()  # LIKE wildcards are taken literally
    assert names(workflow="wf-b") == {"b.png", "c.png"}
    assert names(model="alpha.safetensors") == {"a.png", "c.png"}
    assert names(model="alpha.safetensors", workflow="wf-b") == {"c.png"}
    facets = client.get(f"{G}/facets").json()
    assert facets["models"] == [
        {"name": "alpha.safetensors", "count": 2},
        {"name": "beta.safetensors", "count": 1},
    ]
    assert [w["name"] for w in facets["workflows"]] == ["wf-a", "wf-b"] and facets["total"] == 4

    # favourites
    r = client.patch(f"{G}/images/{ids['b.png']}", json={"favourite": True})
    assert r.status_code == 200 and r.json()["favourite"] is True
    assert names(favourite="true") == {"b.png"} and names(favourite="false") == {
        "a.png",
        "c.png",
        "plain.png",
    }
    assert client.patch(f"{G}/images/{ids['b.png']}", json={"favourite": "yes"}).status_code == 422

    # boards: create, move into, filter, rename, delete (the images stay, in no board)
    foxes = client.post(f"{G}/boards", json={"name": "Foxes"}).json()
    assert (
        client.post(f"{G}/boards", json={"name": "Foxes"}).json()["error"]
        == "there is a board named 'Foxes' already"
    )
    moved = client.post(f"{G}/images/move", json={"ids": [ids["a.png"], ids["b.png"]], "board": foxes["id"]})
    assert moved.json() == {"moved": 2}
    assert names(board=foxes["id"]) == {"a.png", "b.png"} and names(board=0) == {"c.png", "plain.png"}
    assert names(board=foxes["id"], favourite="true") == {"b.png"}
    # all or nothing: an unknown image (or board) moves none
    bad = client.post(f"{G}/images/move", json={"ids": [ids["c.png"], 999999], "board": foxes["id"]})
    assert bad.status_code == 404 and bad.json() == {"error": "no gallery image 999999"}
    assert names(board=foxes["id"]) == {"a.png", "b.png"}
    assert client.patch(f"{G}/images/{ids['c.png']}", json={"board": 424242}).json() == {
        "error": "no board 424242"
    }
    renamed = client.patch(f"{G}/boards/{foxes['id']}", json={"name": "Vixens"}).json()
    assert renamed == {**foxes, "name": "Vixens", "count": 2}
    assert client.get(f"{G}/boards").json()["boards"] == [renamed]
    # out of a board again
    assert client.patch(f"{G}/images/{ids['a.png']}", json={"board": None}).json()["board"] is None
    assert client.delete(f"{G}/boards/{foxes['id']}").json() == {"deleted": foxes["id"]}
    assert names(board=0) == {"a.png", "b.png", "c.png", "plain.png"}
    assert client.get(f"{G}/boards").json() == {"boards": []}
    # favourites and boards survive re-indexing the file (it changed on disk)
    client.patch(f"{G}/images/{ids['c.png']}", json={"favourite": True})
    small_png(out / "sub" / "c.png", (200, 2, 3), meta_for("red barn at dusk", 4))
    c2 = next(i for i in listing(client)["images"] if i["filename"] == "c.png")
    assert (c2["id"], c2["favourite"], c2["params"]["seed"]) == (ids["c.png"], True, 4)


def test_bad_requests_get_the_one_error_shape(seeded: tuple[TestClient, Path]) -> None:
    client, _ = seeded
    for r, status in (
        (client.get(f"{G}/images", params={"limit": 0}), 422),
        (client.get(f"{G}/images", params={"board": -1}), 422),
        (client.get(f"{G}/images/abc"), 422),
        (client.get(f"{G}/images/12345"), 404),
        (client.get(f"{G}/images/12345/thumb"), 404),
        (client.get(f"{G}/images/1/thumb", params={"size": 4000}), 422),
        (client.post(f"{G}/images/12345/to-input"), 404),
        (client.post(f"{G}/boards", json={"name": ""}), 400),
        (client.post(f"{G}/boards", content=b"{nope", headers={"content-type": "application/json"}), 400),
        (client.patch(f"{G}/boards/77", json={"name": "x"}), 404),
        (client.delete(f"{G}/boards/77"), 404),
        (client.post(f"{G}/images/move", json={"ids": []}), 422),
    ):
        assert r.status_code == status, (r.request.url, r.text)
        assert isinstance(r.json()["error"], str) and r.json()["error"]


def test_thumbnails_are_small_webp_made_once_and_an_image_copies_into_the_input_folder(
    seeded: tuple[TestClient, Path],
) -> None:
    client, out = seeded
    Image.new("RGB", (640, 320), (10, 200, 30)).save(out / "wide.png")
    [img] = listing(client)["images"]
    r = client.get(f"{G}/images/{img['id']}/thumb", params={"size": 128})
    assert r.status_code == 200 and r.headers["content-type"] == "image/webp"
    with Image.open(io.BytesIO(r.content)) as thumb:
        assert thumb.format == "WEBP" and thumb.size == (128, 64)
        pixel = thumb.convert("RGB").getpixel((64, 32))
        assert max(abs(a - b) for a, b in zip(pixel, (10, 200, 30), strict=True)) < 8
    cached = list((out.parent / "temp" / ".gallery-thumbs").glob("*.webp"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    assert client.get(f"{G}/images/{img['id']}/thumb", params={"size": 128}).content == r.content
    assert cached[0].stat().st_mtime_ns == mtime  # served from the cache, not made again
    assert not list(out.rglob("*.webp"))  # nothing written into the output folder

    copied = client.post(f"{G}/images/{img['id']}/to-input").json()
    assert copied["type"] == "input" and copied["name"] == "wide.png"
    assert (out.parent / "input" / "wide.png").read_bytes() == (out / "wide.png").read_bytes()
    again = client.post(f"{G}/images/{img['id']}/to-input").json()
    assert again["name"] == "wide (1).png"  # an existing input keeps its name
    (out / "wide.png").unlink()
    gone = client.get(f"{G}/images/{img['id']}/thumb", params={"size": 64})
    assert gone.status_code == 404 and "gone" in gone.json()["error"]
