"""Browser tests: Debian's Chromium, driven by Playwright, against a real ``atelier serve`` on loopback.

The server runs once per session with a tiny random-weight checkpoint in temporary folders. Each test gets
a fresh browser context (empty local storage, so the page starts from the default portrait workflow).
Screenshots of each step go to ``test-artifacts/browser/``.

Locally the tests skip with a reason when Chromium, Playwright or the frontend's npm packages are missing;
under CI (``CI`` set) they fail instead: ``./dev setup`` installs all three.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
VIEWPORT = {"width": 1600, "height": 1000}


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"browser tests cannot run: {reason} (./dev setup installs it)", pytrace=False)
    pytest.skip(f"browser tests need {reason}; run ./dev setup")


def _chromium() -> str:
    explicit = os.environ.get("ATELIER_CHROMIUM")
    for path in ([explicit] if explicit else []) + list(CHROMIUM_CANDIDATES):
        if path and Path(path).is_file() and os.access(path, os.X_OK):
            return path
    _missing("Debian's Chromium (apt-get install chromium)")
    raise AssertionError("unreachable")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def atelier_serve(
    base: Path, args: list[str], ready: str, env: dict[str, str] | None = None
) -> Iterator[str]:
    """A real ``atelier serve`` under ``base`` (database, output/input/temp folders, log) on a free loopback
    port, over a models root holding a tiny SD1.5 checkpoint; ``args``: more serve flags; ``ready``: the
    path that answers 200 once it serves. Yields its URL and stops it at the end."""
    models = base / "models"
    (models / "checkpoints").mkdir(parents=True)
    exe = Path(sys.executable).with_name("atelier")
    atelier = [str(exe)] if exe.is_file() else [sys.executable, "-m", "atelier.engine"]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    subprocess.run(
        [
            *atelier,
            "tiny-checkpoint",
            "--arch",
            "sd15",
            "--out",
            str(models / "checkpoints" / "tiny15.safetensors"),
        ],
        check=True,
        cwd=ROOT,
        env=env,
        capture_output=True,
    )
    port = _free_port()
    folders = [a for kind in ("output", "input", "temp") for a in (f"--{kind}-dir", str(base / kind))]
    command = [*atelier, "serve", "--port", str(port), "--database", str(base / "atelier.db")]
    command += ["--models-dir", str(models), *folders, *args]
    log_path = base / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(url + ready, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"atelier serve did not start:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.2)
        try:
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `atelier serve` on a free loopback port, with a tiny SD1.5 checkpoint."""
    if not (
        ROOT / "frontend" / "node_modules" / "@comfyorg" / "litegraph" / "dist" / "litegraph.es.js"
    ).is_file():
        _missing("the frontend's npm packages (npm ci in frontend/)")
    # the run test watches the sampler's previews
    with atelier_serve(
        tmp_path_factory.mktemp("atelier-serve"), ["--preview-method", "latent2rgb"], "/atelier/v1/system"
    ) as url:
        yield url


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the Python playwright package (pip install playwright)")
    pw = sync_playwright().start()
    # launch() gives the browser a fresh, temporary user-data directory
    b = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
    try:
        yield b
    finally:
        b.close()
        pw.stop()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)  # emptied when the session starts (tests/conftest.py)
    return ARTIFACTS


class Shots:
    """Numbered screenshots of one test: test-artifacts/browser/<test>-NN-<step>.png"""

    def __init__(self, page: object, folder: Path, test: str) -> None:
        self.page = page
        self.folder = folder
        self.test = test
        self.n = 0

    def __call__(self, step: str) -> Path:
        self.n += 1
        path = (
            self.folder
            / f"{self.test}-{self.n:02d}-{re.sub(r'[^a-z0-9]+', '-', step.lower()).strip('-')}.png"
        )
        self.page.screenshot(path=str(path))
        return path


@pytest.fixture()
def page(browser: object, server: str, artifacts: Path, request: pytest.FixtureRequest) -> Iterator[object]:
    """A fresh page on the editor, the default workflow loaded; fails the test on page errors."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(15000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    # a refused request (400 for an invalid workflow) is part of the story, not an error of the page
    pg.on(
        "console",
        lambda m: (
            errors.append(m.text) if m.type == "error" and "Failed to load resource" not in m.text else None
        ),
    )
    pg.goto(server + "/")
    pg.wait_for_selector("body.ready")
    pg.base_url = server
    name = request.node.name.removeprefix("test_")
    pg.shot = Shots(pg, artifacts, name)
    try:
        yield pg
    finally:
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            pg.shot("failure")
        context.close()
    assert not errors, f"errors in the page: {errors}"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    rep = yield
    if rep.when == "call":
        item.rep_call = rep
    return rep
