"""What the server refuses: paths outside its folders, bad or oversize uploads, other origins, requests
without the token, and binding beyond loopback without one."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.server.harness import Server, free_port, raw_get, serve_command, server_env

SECRET = b"top secret, outside every folder"


def png(size: tuple[int, int] = (8, 8), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def secret(server: Server) -> Path:
    """A file beside the output/input/temp folders (and one in the output folder, to show the same
    routes do serve what is inside)."""
    (server.root / "secret.txt").write_bytes(SECRET)
    (server.folder("output") / "sub").mkdir(parents=True, exist_ok=True)
    (server.folder("output") / "sub" / "inside.txt").write_bytes(b"inside")
    link = server.folder("output") / "link.txt"
    if not link.exists():
        link.symlink_to(server.root / "secret.txt")
    return server.root / "secret.txt"


TRAVERSALS = [
    "/atelier/v1/files/output/../secret.txt",
    "/atelier/v1/files/output/../../secret.txt",
    "/atelier/v1/files/input/%2e%2e/secret.txt",
    "/atelier/v1/files/temp/%2e%2e%2fsecret.txt",
    "/atelier/v1/files/output/..%2fsecret.txt",
    "/atelier/v1/files/output/..%5csecret.txt",
    "/atelier/v1/files/output/sub/../../secret.txt",
    "/atelier/v1/files/output//{root}/secret.txt",
    "/atelier/v1/files/output/%2f{root}%2fsecret.txt",
    "/atelier/v1/files/output/link.txt",
    "/atelier/v1/files/..%2f..%2fsecret.txt",
    "/atelier/v1/files/output/%00secret.txt",
    "/view?filename=../secret.txt",
    "/view?filename=..%2fsecret.txt",
    "/view?filename=%2e%2e%2fsecret.txt",
    "/view?filename=secret.txt&subfolder=..",
    "/view?filename=secret.txt&subfolder=%2e%2e",
    "/view?filename=secret.txt&subfolder=sub/../..",
    "/view?filename=secret.txt&subfolder={root}",
    "/view?filename={root}/secret.txt",
    "/view?filename=secret.txt&type=..",
    "/view?filename=secret.txt&subfolder=../output/..&type=input",
    "/view?filename=link.txt",
    "/view?filename=secret.txt%00.png",
    "/static/../secret.txt",
    "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e{root}/secret.txt",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_files_never_leave_their_folders(server: Server, secret: Path, target: str) -> None:
    status, body = raw_get(server.port, target.replace("{root}", str(server.root).lstrip("/")))
    assert status in (400, 404, 422), (status, body[:200])
    assert SECRET not in body


def test_files_inside_are_served(server: Server, secret: Path) -> None:
    assert raw_get(server.port, "/atelier/v1/files/output/sub/inside.txt") == (200, b"inside")
    assert raw_get(server.port, "/view?filename=inside.txt&subfolder=sub") == (200, b"inside")
    assert raw_get(server.port, "/view?filename=inside.txt&subfolder=sub&type=input")[0] == 404


def test_uploads_must_be_images_and_stay_inside(server: Server, http: httpx.Client) -> None:
    ok = http.post("/atelier/v1/upload", files={"image": ("face.png", png(), "image/png")})
    assert ok.status_code == 200 and ok.json() == {
        "name": "face.png",
        "subfolder": "",
        "type": "input",
        "width": 8,
        "height": 8,
    }
    cases = [
        ({"image": ("notes.png", b"not an image at all", "image/png")}, {}, 400),
        ({"image": ("cut.png", png()[:40], "image/png")}, {}, 400),
        ({"image": ("page.html", png(), "text/html")}, {}, 400),
        ({"image": ("vector.svg", png(), "image/svg+xml")}, {}, 400),
        ({"image": (".png", png(), "image/png")}, {}, 400),
        ({"image": ("x.png", png(), "image/png")}, {"subfolder": "../escape"}, 400),
        ({"image": ("x.png", png(), "image/png")}, {"subfolder": str(server.root)}, 400),
        ({"image": ("x.png", png(), "image/png")}, {"subfolder": "a/../../escape"}, 400),
        ({"image": ("bomb.png", png((8200, 8200), "1"), "image/png")}, {}, 400),  # 67 Mpx in 8 kB
        ({}, {"subfolder": "x"}, 422),
    ]
    for files, data, status in cases:
        for route in ("/atelier/v1/upload", "/upload/image"):
            r = http.post(route, files=files or None, data=data)
            assert r.status_code == status, (route, files and files["image"][0], data, r.text)
            assert r.json()["error"]
    # a name that tries to climb out is cut to its last part
    r = http.post("/atelier/v1/upload", files={"image": ("../../climb.png", png(), "image/png")})
    assert r.status_code == 200 and r.json()["name"] == "climb.png" and r.json()["subfolder"] == ""
    assert (server.folder("input") / "climb.png").is_file() and not (server.root / "climb.png").exists()
    assert sorted(p.name for p in server.root.glob("*.png")) == []
    assert not (server.root / "escape").exists()


def test_oversize_uploads_are_refused(server: Server, http: httpx.Client) -> None:
    """The shared server runs with --max-upload-mb 1."""
    big = png() + b"\0" * (1024 * 1024 + 10)
    for route in ("/atelier/v1/upload", "/upload/image"):
        r = http.post(route, files={"image": ("big.png", big, "image/png")})
        assert r.status_code == 413 and "larger" in r.json()["error"]
    # no Content-Length (chunked): refused rather than read without a limit
    r = http.post(
        "/atelier/v1/upload",
        content=iter([b"--x\r\n", b"y" * 100]),
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert r.status_code == 411
    assert not (server.folder("input") / "big.png").exists()


def test_cross_origin_requests_are_refused(server: Server, http: httpx.Client) -> None:
    evil = {"Origin": "http://evil.example"}
    assert http.get("/atelier/v1/system", headers=evil).status_code == 403
    r = http.post("/atelier/v1/jobs", headers=evil, json={"workflow": {}})
    assert r.status_code == 403 and r.json()["error"] == "cross-origin request refused"
    assert http.post("/prompt", headers=evil, json={"prompt": {}}).status_code == 403
    assert (
        http.post(
            "/atelier/v1/upload", headers=evil, files={"image": ("o.png", png(), "image/png")}
        ).status_code
        == 403
    )
    assert http.get("/view", headers={"Origin": "null"}, params={"filename": "x.png"}).status_code == 403
    same = {"Origin": f"http://127.0.0.1:{server.port}"}
    assert http.get("/atelier/v1/system", headers=same).status_code == 200
    # the same host is not enough: scheme and port must match too
    for other in (
        f"https://127.0.0.1:{server.port}",
        f"http://127.0.0.1:{server.port + 1}",
        "http://127.0.0.1",
    ):
        assert http.get("/atelier/v1/system", headers={"Origin": other}).status_code == 403, other
    assert http.get("/atelier/v1/system").status_code == 200  # not a browser: no Origin
    assert not (server.folder("input") / "o.png").exists()

    with pytest.raises(InvalidStatus) as refused:
        connect(f"{server.ws_base}/atelier/v1/ws", origin="http://evil.example", open_timeout=10)
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus):
        connect(f"{server.ws_base}/ws?clientId=abc", origin="http://evil.example", open_timeout=10)
    with connect(
        f"{server.ws_base}/atelier/v1/ws", origin=f"http://127.0.0.1:{server.port}", open_timeout=10
    ) as ws:
        assert '"hello"' in ws.recv(timeout=10)


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Server]:
    srv = Server(
        tmp_path_factory.mktemp("token-server"),
        models_dir,
        token="s3cret-token-for-tests",
        extra=["--allow-origin", "http://allowed.example"],
    )
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


ROUTES = [
    ("GET", "/atelier/v1/system"),
    ("GET", "/atelier/v1/jobs"),
    ("POST", "/atelier/v1/jobs"),
    ("GET", "/atelier/v1/queue"),
    ("POST", "/atelier/v1/interrupt"),
    ("GET", "/atelier/v1/nodes"),
    ("GET", "/atelier/v1/files/output/x.png"),
    ("POST", "/atelier/v1/upload"),
    ("GET", "/atelier/v1/workflows"),
    ("POST", "/atelier/v1/cache/clear"),
    ("POST", "/prompt"),
    ("GET", "/history"),
    ("GET", "/queue"),
    ("POST", "/interrupt"),
    ("GET", "/object_info"),
    ("GET", "/view?filename=x.png"),
    ("POST", "/upload/image"),
    ("GET", "/system_stats"),
    ("GET", "/docs"),
    ("GET", "/openapi.json"),
    ("GET", "/"),
    ("GET", "/no-such-route"),
]


def test_token_is_needed_on_every_request(token_server: Server) -> None:
    with httpx.Client(base_url=token_server.base, timeout=30) as anon:
        for method, path in ROUTES:
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": "s3cret-token-for-tests"},
            ):
                r = anon.request(method, path, headers=headers)
                assert r.status_code == 401, (method, path, headers, r.status_code)
                assert "token" in r.json()["error"]
            r = anon.request(method, path + ("&" if "?" in path else "?") + "token=wrong")
            assert r.status_code == 401
        good = {"Authorization": "Bearer s3cret-token-for-tests"}
        assert anon.get("/atelier/v1/system", headers=good).status_code == 200
        assert anon.get("/atelier/v1/system", params={"token": "s3cret-token-for-tests"}).status_code == 200
        assert anon.get("/object_info", headers=good).status_code == 200
        # the token does not excuse another origin; an allowed origin passes
        assert (
            anon.get("/atelier/v1/system", headers={**good, "Origin": "http://evil.example"}).status_code
            == 403
        )
        allowed = {**good, "Origin": "http://allowed.example"}
        r = anon.get("/atelier/v1/system", headers=allowed)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://allowed.example"
        # a browser's preflight carries no token: the allowed origin gets its answer, another does not
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        }
        r = anon.options("/atelier/v1/jobs", headers={**preflight, "Origin": "http://allowed.example"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://allowed.example"
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        r = anon.options("/atelier/v1/jobs", headers={**preflight, "Origin": "http://evil.example"})
        assert r.status_code >= 400 and "access-control-allow-origin" not in r.headers
        r = anon.post("/atelier/v1/jobs", headers={"Origin": "http://allowed.example"}, json={"workflow": {}})
        assert r.status_code == 401  # an allowed origin still needs the token
    # the canvas opened with ?token= gets a strict same-site cookie that carries the token from then on
    with httpx.Client(base_url=token_server.base, timeout=30) as browser:
        assert browser.get("/static/js/api.js").status_code == 401
        page = browser.get("/", params={"token": "s3cret-token-for-tests"})
        assert page.status_code == 200
        cookie = page.headers["set-cookie"].lower()
        assert "atelier_token=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        assert browser.get("/static/js/api.js").status_code == 200
        assert browser.get("/atelier/v1/system").status_code == 200
        with connect(
            f"ws://127.0.0.1:{token_server.port}/atelier/v1/ws",
            additional_headers={"Cookie": "atelier_token=s3cret-token-for-tests"},
        ) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "hello"

    base = f"{token_server.ws_base}/atelier/v1/ws"
    comfy = f"{token_server.ws_base}/ws"
    for url, headers in [
        (base, None),
        (comfy + "?clientId=a", None),
        (comfy, None),
        (base + "?token=wrong", None),
        (base, {"Authorization": "Bearer wrong"}),
    ]:
        with pytest.raises(InvalidStatus) as refused:
            connect(url, additional_headers=headers, open_timeout=10)
        assert refused.value.response.status_code == 403
    with connect(base + "?token=s3cret-token-for-tests", open_timeout=10) as ws:
        assert '"hello"' in ws.recv(timeout=10)
    with connect(
        comfy + "?clientId=a", additional_headers={"Authorization": "Bearer s3cret-token-for-tests"}
    ) as ws:
        assert '"status"' in ws.recv(timeout=10)


def test_binding_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    port = free_port()
    for host in ("0.0.0.0", "::"):
        proc = subprocess.run(
            serve_command(["--host", host, "--port", str(port), "--database", str(tmp_path / "x.db")]),
            cwd=tmp_path,
            env=server_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
        assert "--token" in proc.stderr
    assert not (tmp_path / "x.db").exists()


def test_dns_rebinding_host_names_are_refused_without_a_token(server: Server, http: httpx.Client) -> None:
    # a page on evil.example rebinds its name to 127.0.0.1: the browser sends Host: evil.example
    r = http.get("/atelier/v1/system", headers={"Host": f"evil.example:{server.port}"})
    assert r.status_code == 403 and "loopback" in r.json()["error"]
    assert http.get("/atelier/v1/system", headers={"Host": f"localhost:{server.port}"}).status_code == 200
    assert http.get("/atelier/v1/system", headers={"Host": f"127.0.0.1:{server.port}"}).status_code == 200
    assert http.get("/atelier/v1/system", headers={"Host": f"[::1]:{server.port}"}).status_code == 200
    with pytest.raises(InvalidStatus):  # the handshake is refused
        with connect(f"ws://127.0.0.1:{server.port}/ws", additional_headers={"Host": "evil.example"}) as ws:
            ws.recv(timeout=5)


@pytest.mark.parametrize("token", ["short", "has a space in it, long", "x" * 15])
def test_a_weak_token_is_refused_at_start(tmp_path: Path, token: str) -> None:
    import sys

    from tests.server.harness import SERVE

    proc = subprocess.run(
        [sys.executable, "-c", SERVE, "serve", "--host", "0.0.0.0", "--port", "1", "--token", token],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "a token must be at least 16 characters with no whitespace" in proc.stderr
