"""Server tests run a real ``atelier serve`` process on loopback, on tiny checkpoints."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server.harness import Server, write_models


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_models(tmp_path_factory.mktemp("server-models"))


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Server]:
    """One server shared by the tests that do not restart it or change its settings."""
    srv = Server(
        tmp_path_factory.mktemp("server"),
        models_dir,
        extra=["--max-upload-mb", "1", "--preview-method", "latent2rgb"],
    )
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


@pytest.fixture()
def http(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c
