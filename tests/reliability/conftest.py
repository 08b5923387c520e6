"""The reliability suite: an Atelier server in this process (uvicorn in a thread, the real app over the
tiny checkpoint) for the fuzzers, and the budget of cases (``--runslow`` for thousands)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from atelier.engine.server.app import Settings, create_app
from tests.reliability import budget
from tests.server.harness import engine_in, free_port, served_in_thread, write_models


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
    engine = engine_in(root, models_dir)
    port = free_port()
    app = create_app(engine, Settings(port=port, database=root / "atelier.db", max_image_pixels=1_000_000))
    with served_in_thread(app, port, "uvicorn-reliability", log_level="critical"):
        yield LiveServer(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", app, root)
