"""Shared test set-up: offline, quiet, deterministic."""

import os
import shutil
from pathlib import Path

import pytest

from atelier.engine.model_loader import ModelLoader

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


#: screenshots of the browser tests (tests/browser/conftest.py)
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def pytest_sessionstart(session) -> None:
    if hasattr(session.config, "workerinput"):
        # a worker of `pytest -n N`: the workers share the cores, so each runs torch on one thread
        # (several threads per worker only spin against each other)
        import torch

        torch.set_num_threads(1)
    else:  # the main process (alone or controlling workers) starts the screenshots afresh
        shutil.rmtree(ARTIFACTS / "browser", ignore_errors=True)


def pytest_addoption(parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="also run full-size (slow) tests")


def pytest_collection_modifyitems(config, items) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow (a full-size run or a measurement): use --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_models() -> ModelLoader:
    """One model loader for the whole session: tests that do not mutate weights (LoRAs patch them only
    inside a use and restore them bit for bit) share loaded checkpoints instead of reloading them per test."""
    return ModelLoader("cpu", max_loaded=8)
