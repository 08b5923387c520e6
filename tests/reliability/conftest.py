"""The reliability suite: an Atelier server in this process (uvicorn in a thread, the real app over the
tiny checkpoint) for the fuzzers, and the budget of cases (``--runslow`` for thousands)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from atelier.engine.runtime import EngineConfig, build_engine
from atelier.engine.server.app import Settings, create_app
from tests.reliability import budget
from tests.server.harness import free_port, write_models


def pytest_configure(config: pytest.Config) -> None:
    budget.SLOW = bool(config.getoption("--runslow", default=False))


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_models(tmp_path_factory.mktemp("reliability-models"))


@dataclass
class LiveServer:
    base: str
    ws_base: str
    app: FastAPI
    root: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=60)


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("reliability-server")
    engine = build_engine(
        EngineConfig(
            device="cpu",
            models_dir=models_dir,
            output_dir=root / "output",
            input_dir=root / "input",
            temp_dir=root / "temp",
        )
    )
    port = free_port()
    app = create_app(engine, Settings(port=port, database=root / "atelier.db", max_image_pixels=1_000_000))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, name="uvicorn-reliability", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the in-process server did not start"
        time.sleep(0.02)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", app, root)
    finally:
        server.should_exit = True
        thread.join(30)
