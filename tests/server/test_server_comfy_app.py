"""ComfyUI's app routes (users, settings, userdata, i18n, extensions, features) over HTTP on a real server,
plain and under ``/api/`` as ComfyUI registers them; user files never leave the user's folder."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from tests.server.harness import REPO, Server, comfy_prompt, follow_comfy, serve_command, server_env

TWINS = ["/extensions", "/i18n", "/features", "/users", "/settings"]


def user_folder(server: Server) -> Path:
    return server.root / "user" / "default"


@pytest.mark.parametrize("route", TWINS)
def test_every_route_has_an_api_twin(http: httpx.Client, route: str) -> None:
    plain, api = http.get(route), http.get("/api" + route)
    assert plain.status_code == api.status_code == 200, (plain.text, api.text)
    assert plain.json() == api.json()


def test_startup_routes(http: httpx.Client) -> None:
    assert http.get("/api/extensions").json() == []
    assert http.get("/api/i18n").json() == {}
    # the shared server runs with --max-upload-mb 1
    assert http.get("/api/features").json() == {
        "supports_preview_metadata": False,
        "max_upload_size": 1024 * 1024,
    }


def test_settings_round_trip_stored_as_json(server: Server, http: httpx.Client) -> None:
    assert http.post("/api/settings", json={"Comfy.Theme": "dark", "Comfy.Count": 3}).status_code == 200
    assert http.post("/settings/Comfy.Locale", json="fr").status_code == 200
    assert http.post("/api/settings/Comfy.Nested", json={"a": [1, 2]}).status_code == 200
    # a second POST /settings merges: other keys stay
    assert http.post("/settings", json={"Comfy.Count": 4}).status_code == 200
    got = http.get("/api/settings").json()
    assert {k: got[k] for k in ("Comfy.Theme", "Comfy.Count", "Comfy.Locale", "Comfy.Nested")} == {
        "Comfy.Theme": "dark",
        "Comfy.Count": 4,
        "Comfy.Locale": "fr",
        "Comfy.Nested": {"a": [1, 2]},
    }
    assert http.get("/settings/Comfy.Locale").json() == "fr"
    assert http.get("/api/settings/Comfy.Nested").json() == {"a": [1, 2]}
    assert http.get("/api/settings/No.Such.Setting").json() is None
    on_disk = json.loads((user_folder(server) / "comfy.settings.json").read_text())
    assert on_disk == got
    # the settings file is the user's: /userdata sees the same object
    assert http.get("/api/userdata/comfy.settings.json").json() == got

    bad = http.post("/api/settings", content=b"[1, 2]", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and "object" in bad.json()["error"]
    bad = http.post("/api/settings/X", content=b"{nope", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and "'X'" in bad.json()["error"]
    assert http.get("/api/settings").json() == got


def test_users_single_user(server: Server, http: httpx.Client) -> None:
    http.post("/api/settings", json={"Comfy.Seen": True})  # the user's folder exists from here on
    assert http.get("/api/users").json() == {"storage": "server", "migrated": True}
    r = http.post("/api/users", json={"username": "ann"})
    assert r.status_code == 400 and "--multi-user" in r.json()["error"]
    # a Comfy-User header means nothing without --multi-user: the default user's settings
    assert http.get("/api/settings/Comfy.Seen", headers={"Comfy-User": "ann"}).json() is True


def test_userdata_files(server: Server, http: httpx.Client) -> None:
    doc = json.dumps({"nodes": [], "links": [], "version": 0.4}).encode()
    r = http.post("/api/userdata/workflows%2Fportrait.json", content=doc)
    assert r.status_code == 200 and r.json() == "workflows/portrait.json"
    assert (user_folder(server) / "workflows" / "portrait.json").read_bytes() == doc
    r = http.post("/userdata/workflows%2Fdeep%2Fsecond.json?full_info=true", content=b"{}")
    info = r.json()
    assert info["path"] == "workflows/deep/second.json" and info["size"] == 2
    assert info["modified"] == int((user_folder(server) / info["path"]).stat().st_mtime * 1000)

    got = http.get("/api/userdata/workflows%2Fportrait.json")
    assert got.status_code == 200 and got.content == doc
    assert got.headers["content-disposition"] == "attachment"
    assert got.headers["x-content-type-options"] == "nosniff"

    assert http.get("/api/userdata?dir=workflows").json() == ["portrait.json"]
    assert sorted(http.get("/api/userdata?dir=workflows&recurse=true").json()) == [
        "deep/second.json",
        "portrait.json",
    ]
    split = http.get("/userdata?dir=workflows&recurse=true&split=true").json()
    assert sorted(split) == [["deep/second.json", "deep", "second.json"], ["portrait.json", "portrait.json"]]
    full = http.get("/api/userdata?dir=workflows&full_info=true").json()
    assert [(f["path"], f["size"]) for f in full] == [("portrait.json", len(doc))]
    assert http.get("/api/userdata?dir=nowhere").status_code == 404
    assert http.get("/api/userdata").status_code == 400

    tree = http.get("/api/v2/userdata?path=workflows").json()
    assert [(e["type"], e["path"]) for e in tree] == [
        ("directory", "workflows/deep"),
        ("file", "workflows/portrait.json"),  # folders first, then files by name
        ("file", "workflows/deep/second.json"),
    ]

    # overwrite=false refuses an existing name; the file is unchanged
    r = http.post("/api/userdata/workflows%2Fportrait.json?overwrite=false", content=b"other")
    assert r.status_code == 409
    assert http.get("/api/userdata/workflows%2Fportrait.json").content == doc

    # move (rename), refusing to overwrite when asked
    r = http.post("/api/userdata/workflows%2Fportrait.json/move/workflows%2Frenamed.json")
    assert r.status_code == 200 and r.json() == "workflows/renamed.json"
    assert http.get("/api/userdata/workflows%2Fportrait.json").status_code == 404
    assert http.get("/userdata/workflows%2Frenamed.json").content == doc
    r = http.post(
        "/api/userdata/workflows%2Fdeep%2Fsecond.json/move/workflows%2Frenamed.json?overwrite=false"
    )
    assert r.status_code == 409
    assert http.post("/api/userdata/workflows%2Fnope.json/move/workflows%2Fx.json").status_code == 404

    assert http.delete("/api/userdata/workflows%2Frenamed.json").status_code == 204
    assert not (user_folder(server) / "workflows" / "renamed.json").exists()
    assert http.delete("/userdata/workflows%2Frenamed.json").status_code == 404


def test_userdata_content_types(server: Server, http: httpx.Client) -> None:
    http.post("/api/userdata/user.css", content=b"body { color: red }")
    css = http.get("/api/userdata/user.css")
    assert (
        css.headers["content-type"].startswith("text/css") and css.headers["content-disposition"] == "inline"
    )
    http.post("/api/userdata/page.html", content=b"<script>alert(1)</script>")
    page = http.get("/api/userdata/page.html")
    assert page.headers["content-type"] == "application/octet-stream"
    assert page.headers["content-disposition"] == "attachment"


TRAVERSALS = [
    "..%2F..%2Fatelier.db",  # up to the server's own files
    "..%2Fother-user%2Fx.json",  # into another user's folder
    "%2Fetc%2Fpasswd",  # absolute
    "workflows%2F..%2F..%2F..%2Fescape.txt",
    "C:%5Cwindows%5Cwin.ini",  # a drive
]


@pytest.mark.parametrize("name", TRAVERSALS)
def test_userdata_names_never_leave_the_users_folder(server: Server, http: httpx.Client, name: str) -> None:
    before = sorted(p for p in server.root.rglob("*") if p.is_file())
    assert http.post(f"/api/userdata/{name}", content=b"pwned").status_code == 403
    assert http.post(f"/userdata/{name}", content=b"pwned").status_code == 403
    assert http.get(f"/api/userdata/{name}").status_code == 403
    assert http.delete(f"/api/userdata/{name}").status_code == 403
    http.post("/api/userdata/victim.txt", content=b"stay")
    assert http.post(f"/api/userdata/victim.txt/move/{name}").status_code == 403
    assert http.post(f"/api/userdata/{name}/move/victim2.txt").status_code == 403
    assert (user_folder(server) / "victim.txt").read_bytes() == b"stay"
    assert http.get(f"/api/userdata?dir={name}").status_code == 403
    assert http.get(f"/api/v2/userdata?path={name}").status_code == 400
    after = sorted(p for p in server.root.rglob("*") if p.is_file())
    new = [
        p for p in after if p not in before and not p.name.startswith(("victim", "atelier.db", "server.log"))
    ]
    assert new == []
    assert server.database.exists() and b"pwned" not in server.database.read_bytes()[:100]


def test_userdata_symlink_out_of_the_folder_is_refused(server: Server, http: httpx.Client) -> None:
    secret = server.root / "secret.txt"
    secret.write_text("secret")
    user_folder(server).mkdir(parents=True, exist_ok=True)
    link = user_folder(server) / "link.txt"
    if not link.exists():
        os.symlink(secret, link)
    assert http.get("/api/userdata/link.txt").status_code == 403
    assert http.post("/api/userdata/link.txt", content=b"x").status_code == 403
    assert secret.read_text() == "secret"


def _serve_until_exit(args: list[str], env_extra: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    env = server_env()
    env.update(env_extra)
    return subprocess.run(serve_command(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_frontend_comfyui_without_the_package_is_a_clear_error(tmp_path: Path) -> None:
    # a comfyui_frontend_package without a built frontend shadows any installed one
    fake = tmp_path / "shadow" / "comfyui_frontend_package"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    out = _serve_until_exit(
        ["--frontend", "comfyui", "--port", "0", "--database", str(tmp_path / "a.db")],
        {"PYTHONPATH": f"{tmp_path / 'shadow'}{os.pathsep}{REPO}"},
        tmp_path,
    )
    assert out.returncode == 2, out.stderr
    assert "--frontend comfyui" in out.stderr and "atelier[comfyui]" in out.stderr
    assert "no built frontend" in out.stderr
    assert not (tmp_path / "a.db").exists()  # refused before anything was opened


def test_cached_rerun_still_reports_the_output_nodes_images(server: Server, http: httpx.Client) -> None:
    """ComfyUI's frontend shows a re-run's images from ``executed``: a prompt served wholly from the cache
    reports its output nodes' images after ``execution_cached``, as ComfyUI does."""
    client_id = uuid.uuid4().hex
    prompt = comfy_prompt(seed=int(uuid.uuid4().int % 100000), steps=2, prefix="cached_rerun")
    runs = []
    with server.ws(f"clientId={client_id}") as ws:
        json.loads(ws.recv(timeout=10))  # the greeting
        for _ in range(2):
            r = http.post("/api/prompt", json={"prompt": prompt, "client_id": client_id})
            assert r.status_code == 200, r.text
            prompt_id = r.json()["prompt_id"]
            runs.append(
                [m for m in follow_comfy(ws, prompt_id) if isinstance(m, dict) and m["type"] != "status"]
            )
    first, second = runs
    executed = [m["data"] for m in first if m["type"] == "executed"]
    assert [e["node"] for e in executed] == ["9"]
    images = executed[0]["output"]["images"]
    assert images[0]["filename"].startswith("cached_rerun")
    kinds = [m["type"] for m in second]
    assert kinds == ["execution_start", "execution_cached", "executed", "execution_success", "executing"]
    assert set(second[1]["data"]["nodes"]) == {"3", "4", "5", "6", "7", "8", "9"}
    assert second[2]["data"] == {
        "node": "9",
        "display_node": "9",
        "output": {"images": images},
        "prompt_id": second[0]["data"]["prompt_id"],
    }


def _run_prompt(server: Server, http: httpx.Client, prompt: dict) -> str:
    client_id = uuid.uuid4().hex
    with server.ws(f"clientId={client_id}") as ws:
        json.loads(ws.recv(timeout=10))
        r = http.post("/prompt", json={"prompt": prompt, "client_id": client_id})
        assert r.status_code == 200, r.text
        prompt_id = r.json()["prompt_id"]
        follow_comfy(ws, prompt_id)
    return prompt_id


def test_jobs_api_lists_finished_prompts_with_their_preview(server: Server, http: httpx.Client) -> None:
    ok = _run_prompt(server, http, comfy_prompt(seed=int(uuid.uuid4().int % 100000), prefix="jobs_api"))
    bad = _run_prompt(server, http, comfy_prompt(ckpt="broken.safetensors", prefix="jobs_api_bad"))
    listing = http.get("/jobs?status=completed,failed&limit=500").json()
    by_id = {j["id"]: j for j in listing["jobs"]}
    assert listing["pagination"]["total"] == len(listing["jobs"]) and not listing["pagination"]["has_more"]
    done, failed = by_id[ok], by_id[bad]
    history = http.get(f"/history/{ok}").json()[ok]
    image = history["outputs"]["9"]["images"][0]
    assert done["status"] == "completed" and done["outputs_count"] == done["previewable_outputs_count"] == 1
    assert done["preview_output"] == {**image, "nodeId": "9", "mediaType": "images"}
    assert done["create_time"] <= done["execution_start_time"] <= done["execution_end_time"]
    assert failed["status"] == "failed" and failed["outputs_count"] == 0
    err = failed["execution_error"]
    assert err["node_id"] == "4" and err["node_type"] == "CheckpointLoaderSimple" and err["exception_message"]
    # newest first: the failed prompt was queued last
    ids = [j["id"] for j in listing["jobs"]]
    assert ids.index(bad) < ids.index(ok)
    asc = [j["id"] for j in http.get("/jobs?status=completed,failed&sort_order=asc&limit=500").json()["jobs"]]
    assert asc == ids[::-1]
    # pages
    first = http.get("/jobs?status=completed,failed&limit=1").json()
    assert first["jobs"] == listing["jobs"][:1] and first["pagination"]["has_more"] is (len(ids) > 1)
    second = http.get("/jobs?status=completed,failed&limit=1&offset=1").json()
    assert second["jobs"] == listing["jobs"][1:2]
    # only failed ones
    only_failed = http.get("/jobs?status=failed&limit=500").json()["jobs"]
    assert bad in [j["id"] for j in only_failed] and all(j["status"] == "failed" for j in only_failed)
    # one job, with its outputs and the prompt it ran
    detail = http.get(f"/jobs/{ok}").json()
    assert detail["outputs"] == history["outputs"] and detail["execution_status"]["status_str"] == "success"
    assert detail["workflow"]["prompt"]["9"]["class_type"] == "SaveImage"
    assert http.get("/jobs/no-such-job").status_code == 404
    assert http.get("/jobs?status=done").status_code == 400
